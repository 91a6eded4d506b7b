"""`rusd snapshot restore`: turn a snapshot saved with `etcdctl snapshot save` from a rusd
member into the data dir of a new cluster's member, as `etcdctl snapshot restore` does for
etcd: the keys, revisions, leases, auth and alarms are kept; the Raft log, the member list
and the identity are replaced by those of the new cluster given by the flags.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Sequence

import click

from rusd.core import codec
from rusd.core.membership import cluster_id, member_id
from rusd.core.node import META_APPLIED_INDEX, META_APPLIED_TERM, META_CONF_STATE, META_HARD_STATE
from rusd.server.app import Identity, store_path
from rusd.server.config import ConfigError, parse_initial_cluster
from rusd.server.runtime import META_IDENTITY
from rusd.storage.errors import StorageError
from rusd.storage.lmdb import LmdbStore

_SHA = hashlib.sha256().digest_size
# Meta records that belong to the old cluster's Raft state, not to the data.
_CLUSTER_META = (META_APPLIED_INDEX, META_APPLIED_TERM, META_CONF_STATE, META_HARD_STATE, META_IDENTITY)
_CLUSTER_PREFIXES = (b"member/", b"removed_member/")


class RestoreError(Exception):
    pass


def read_snapshot(path: str, skip_hash_check: bool) -> bytes:
    """The image without its checksum trailer (verified unless told not to)."""
    with open(path, "rb") as f:
        data = f.read()
    # A saved snapshot is whole pages (a multiple of 512 bytes) plus a 32-byte SHA-256.
    if len(data) % 512 == _SHA:
        image, trailer = data[:-_SHA], data[-_SHA:]
        if not skip_hash_check and hashlib.sha256(image).digest() != trailer:
            raise RestoreError(f"expected sha256 {trailer.hex()}, got {hashlib.sha256(image).hexdigest()}")
        return image
    if not skip_hash_check:
        raise RestoreError("snapshot missing hash but --skip-hash-check=false")
    return data


def restore(path: str, data_dir: str, name: str, initial_cluster: str, token: str, peer_urls: tuple[str, ...],
            skip_hash_check: bool) -> None:
    image = read_snapshot(path, skip_hash_check)
    if os.path.exists(data_dir):
        raise RestoreError(f"data-dir {data_dir!r} exists")
    members = {n: tuple(str(u) for u in us) for n, us in parse_initial_cluster(initial_cluster).items()}
    if name not in members:
        raise RestoreError(f"couldn't find local name {name!r} in the initial cluster configuration")
    if sorted(members[name]) != sorted(peer_urls):
        raise RestoreError(f"--initial-advertise-peer-urls {','.join(peer_urls)} do not match --initial-cluster")
    ids = {n: member_id(list(us), token) for n, us in members.items()}
    target = store_path(data_dir)
    os.makedirs(target, mode=0o700)
    try:
        with open(os.path.join(target, "data.mdb"), "wb") as f:
            f.write(image)
            f.flush()
            os.fsync(f.fileno())
        store = LmdbStore(target, map_size=8 << 30)
        try:
            batch = store.begin()
            for name_ in _CLUSTER_META:
                batch.delete_meta(name_)
            for prefix in _CLUSTER_PREFIXES:
                for key, _ in list(batch.meta_items(prefix)):
                    batch.delete_meta(key)
            batch.compact_log(batch.last_index())
            identity = Identity(ids[name], cluster_id(list(ids.values())), name, members[name])
            batch.put_meta(META_IDENTITY, codec.encode(identity))
            batch.commit()
        finally:
            store.close()
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise


@click.group()
def snapshot() -> None:
    """Manage rusd snapshots."""


@snapshot.command("restore")
@click.argument("filename", type=click.Path(exists=True, dir_okay=False))
@click.option("--data-dir", default=None, help="Path to the data directory (default: <name>.etcd).")
@click.option("--name", default="default", show_default=True, help="Human-readable name for this member.")
@click.option("--initial-cluster", default=None, help="Initial cluster configuration for restore bootstrap.")
@click.option("--initial-cluster-token", default="etcd-cluster", show_default=True)
@click.option("--initial-advertise-peer-urls", default="http://localhost:2380", show_default=True)
@click.option("--skip-hash-check", is_flag=True, help="Ignore the snapshot's integrity hash.")
def restore_command(filename: str, data_dir: str | None, name: str, initial_cluster: str | None,
                    initial_cluster_token: str, initial_advertise_peer_urls: str, skip_hash_check: bool) -> None:
    """Restore a snapshot into a new data directory."""
    peer_urls = tuple(u for u in initial_advertise_peer_urls.split(",") if u)
    cluster = initial_cluster or ",".join(f"{name}={u}" for u in peer_urls)
    target = data_dir or f"{name}.etcd"
    try:
        restore(filename, target, name, cluster, initial_cluster_token, peer_urls, skip_hash_check)
    except (RestoreError, StorageError, ConfigError, OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"restored snapshot {filename} into {target} (member {name} of a new cluster)")


def main(args: Sequence[str]) -> int:
    try:
        snapshot.main(list(args), prog_name="rusd snapshot", standalone_mode=False)
    except click.ClickException as e:
        print(f"Error: {e.format_message()}", file=sys.stderr)
        return 1
    except click.exceptions.Abort:
        return 1
    return 0
