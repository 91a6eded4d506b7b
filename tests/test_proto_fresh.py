"""The generated modules in rusd/api/ are fresh and speak etcd's wire format."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message

ROOT = Path(__file__).resolve().parent.parent


def _load_gen_proto() -> ModuleType:
    path = ROOT / "scripts" / "gen_proto.py"
    spec = importlib.util.spec_from_file_location("rusd_gen_proto", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_generated_modules_are_fresh() -> None:
    gen_proto = _load_gen_proto()
    stale = gen_proto.stale_files()
    assert not stale, "rusd/api/ is stale; run `python scripts/gen_proto.py`:\n" + "\n".join(stale)


def _fields(msg: type[Message]) -> dict[str, int]:
    return {f.name: f.number for f in msg.DESCRIPTOR.fields}


def _methods(file: FileDescriptor) -> dict[str, tuple[bool, bool]]:
    """gRPC path -> (client_streaming, server_streaming)."""
    out = {}
    for service in file.services_by_name.values():
        for m in service.methods:
            out[f"/{service.full_name}/{m.name}"] = (m.client_streaming, m.server_streaming)
    return out


@pytest.fixture(scope="module")
def methods() -> dict[str, tuple[bool, bool]]:
    from rusd.api.etcdserverpb import rpc_pb2
    from rusd.api.health import health_pb2
    from rusd.api.v3electionpb import v3election_pb2
    from rusd.api.v3lockpb import v3lock_pb2

    out: dict[str, tuple[bool, bool]] = {}
    for mod in (rpc_pb2, health_pb2, v3lock_pb2, v3election_pb2):
        out.update(_methods(mod.DESCRIPTOR))
    return out


@pytest.mark.parametrize(
    ("path", "streaming"),
    [
        ("/etcdserverpb.KV/Range", (False, False)),
        ("/etcdserverpb.KV/Txn", (False, False)),
        ("/etcdserverpb.KV/Compact", (False, False)),
        ("/etcdserverpb.Watch/Watch", (True, True)),
        ("/etcdserverpb.Lease/LeaseKeepAlive", (True, True)),
        ("/etcdserverpb.Lease/LeaseLeases", (False, False)),
        ("/etcdserverpb.Cluster/MemberPromote", (False, False)),
        ("/etcdserverpb.Maintenance/Status", (False, False)),
        ("/etcdserverpb.Maintenance/Snapshot", (False, True)),
        ("/etcdserverpb.Maintenance/Downgrade", (False, False)),
        ("/etcdserverpb.Auth/AuthStatus", (False, False)),
        ("/etcdserverpb.Auth/RoleRevokePermission", (False, False)),
        ("/v3lockpb.Lock/Lock", (False, False)),
        ("/v3lockpb.Lock/Unlock", (False, False)),
        ("/v3electionpb.Election/Campaign", (False, False)),
        ("/v3electionpb.Election/Observe", (False, True)),
        ("/grpc.health.v1.Health/Check", (False, False)),
        ("/grpc.health.v1.Health/Watch", (False, True)),
    ],
)
def test_method_paths(
    methods: dict[str, tuple[bool, bool]], path: str, streaming: tuple[bool, bool]
) -> None:
    assert methods.get(path) == streaming


def test_grpc_modules_use_the_same_paths() -> None:
    from rusd.api.etcdserverpb import rpc_pb2_grpc
    from rusd.api.health import health_pb2_grpc

    rpc_src = Path(rpc_pb2_grpc.__file__).read_text(encoding="utf-8")
    health_src = Path(health_pb2_grpc.__file__).read_text(encoding="utf-8")
    assert "'/etcdserverpb.KV/Range'" in rpc_src
    assert "'/etcdserverpb.Maintenance/Status'" in rpc_src
    assert "'/grpc.health.v1.Health/Check'" in health_src
    assert hasattr(rpc_pb2_grpc, "add_KVServicer_to_server")
    assert hasattr(health_pb2_grpc, "HealthStub")


def test_service_method_sets() -> None:
    from rusd.api.etcdserverpb import rpc_pb2

    services = {
        s.name: [m.name for m in s.methods] for s in rpc_pb2.DESCRIPTOR.services_by_name.values()
    }
    assert services["KV"] == ["Range", "Put", "DeleteRange", "Txn", "Compact"]
    assert services["Watch"] == ["Watch"]
    assert services["Lease"] == [
        "LeaseGrant",
        "LeaseRevoke",
        "LeaseKeepAlive",
        "LeaseTimeToLive",
        "LeaseLeases",
    ]
    assert services["Cluster"] == [
        "MemberAdd",
        "MemberRemove",
        "MemberUpdate",
        "MemberList",
        "MemberPromote",
    ]
    assert services["Maintenance"] == [
        "Alarm",
        "Status",
        "Defragment",
        "Hash",
        "HashKV",
        "Snapshot",
        "MoveLeader",
        "Downgrade",
    ]
    assert len(services["Auth"]) == 17


def test_field_numbers() -> None:
    from rusd.api.etcdserverpb import rpc_pb2
    from rusd.api.mvccpb import kv_pb2

    assert _fields(rpc_pb2.RangeRequest) == {
        "key": 1,
        "range_end": 2,
        "limit": 3,
        "revision": 4,
        "sort_order": 5,
        "sort_target": 6,
        "serializable": 7,
        "keys_only": 8,
        "count_only": 9,
        "min_mod_revision": 10,
        "max_mod_revision": 11,
        "min_create_revision": 12,
        "max_create_revision": 13,
    }
    assert _fields(rpc_pb2.ResponseHeader) == {
        "cluster_id": 1,
        "member_id": 2,
        "revision": 3,
        "raft_term": 4,
    }
    assert _fields(kv_pb2.KeyValue) == {
        "key": 1,
        "create_revision": 2,
        "mod_revision": 3,
        "version": 4,
        "value": 5,
        "lease": 6,
    }
    assert _fields(kv_pb2.Event) == {"type": 1, "kv": 2, "prev_kv": 3}
    assert _fields(rpc_pb2.Compare) == {
        "result": 1,
        "target": 2,
        "key": 3,
        "version": 4,
        "create_revision": 5,
        "mod_revision": 6,
        "value": 7,
        "lease": 8,
        "range_end": 64,
    }
    assert [f.name for f in rpc_pb2.Compare.DESCRIPTOR.oneofs_by_name["target_union"].fields] == [
        "version",
        "create_revision",
        "mod_revision",
        "value",
        "lease",
    ]
    assert _fields(rpc_pb2.StatusResponse) == {
        "header": 1,
        "version": 2,
        "dbSize": 3,
        "leader": 4,
        "raftIndex": 5,
        "raftTerm": 6,
        "raftAppliedIndex": 7,
        "errors": 8,
        "dbSizeInUse": 9,
        "isLearner": 10,
    }
    assert _fields(rpc_pb2.HashKVResponse) == {
        "header": 1,
        "hash": 2,
        "compact_revision": 3,
        "hash_revision": 4,
    }
    assert _fields(rpc_pb2.WatchResponse) == {
        "header": 1,
        "watch_id": 2,
        "created": 3,
        "canceled": 4,
        "compact_revision": 5,
        "cancel_reason": 6,
        "fragment": 7,
        "events": 11,
    }
    assert _fields(rpc_pb2.WatchCreateRequest)["fragment"] == 8
    assert _fields(rpc_pb2.LeaseCheckpoint) == {"ID": 1, "remaining_TTL": 2}


def test_enum_values() -> None:
    from rusd.api.authpb import auth_pb2
    from rusd.api.etcdserverpb import rpc_pb2
    from rusd.api.mvccpb import kv_pb2

    assert dict(rpc_pb2.AlarmType.items()) == {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2}
    assert dict(kv_pb2.Event.EventType.items()) == {"PUT": 0, "DELETE": 1}
    assert dict(auth_pb2.Permission.Type.items()) == {"READ": 0, "WRITE": 1, "READWRITE": 2}
    assert dict(rpc_pb2.RangeRequest.SortOrder.items()) == {"NONE": 0, "ASCEND": 1, "DESCEND": 2}
    assert dict(rpc_pb2.RangeRequest.SortTarget.items()) == {
        "KEY": 0,
        "VERSION": 1,
        "CREATE": 2,
        "MOD": 3,
        "VALUE": 4,
    }
    assert dict(rpc_pb2.Compare.CompareResult.items()) == {
        "EQUAL": 0,
        "GREATER": 1,
        "LESS": 2,
        "NOT_EQUAL": 3,
    }
    assert dict(rpc_pb2.Compare.CompareTarget.items()) == {
        "VERSION": 0,
        "CREATE": 1,
        "MOD": 2,
        "VALUE": 3,
        "LEASE": 4,
    }


def test_wire_bytes() -> None:
    from rusd.api.etcdserverpb import rpc_pb2

    req = rpc_pb2.RangeRequest(key=b"foo", range_end=b"fop", limit=5)
    assert req.SerializeToString() == b"\x0a\x03foo\x12\x03fop\x18\x05"
    cmp = rpc_pb2.Compare(key=b"k", target=rpc_pb2.Compare.MOD, mod_revision=7, range_end=b"l")
    # field 64, wire type 2 -> varint tag 0x82 0x04
    assert cmp.SerializeToString() == b"\x10\x02\x1a\x01k\x30\x07\x82\x04\x01l"
