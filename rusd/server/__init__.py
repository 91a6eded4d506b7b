"""The production driver: asyncio + grpc.aio services, LMDB storage, CLI."""
