"""Protobuf <-> core value translation, and nothing more."""

from __future__ import annotations

from typing import cast

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.mvccpb import kv_pb2
from rusd.core.alarms import AlarmMember, AlarmRequest
from rusd.core.cluster import MemberInfo
from rusd.core.mvcc import types as t

_COMPARE_UNION = {
    "version": t.CompareTarget.VERSION,
    "create_revision": t.CompareTarget.CREATE,
    "mod_revision": t.CompareTarget.MOD,
    "value": t.CompareTarget.VALUE,
    "lease": t.CompareTarget.LEASE,
}


def range_request(r: pb.RangeRequest) -> t.RangeRequest:
    return t.RangeRequest(
        key=r.key,
        range_end=r.range_end,
        limit=r.limit,
        revision=r.revision,
        sort_order=r.sort_order,
        sort_target=r.sort_target,
        serializable=r.serializable,
        keys_only=r.keys_only,
        count_only=r.count_only,
        min_mod_revision=r.min_mod_revision,
        max_mod_revision=r.max_mod_revision,
        min_create_revision=r.min_create_revision,
        max_create_revision=r.max_create_revision,
    )


def put_request(r: pb.PutRequest) -> t.PutRequest:
    return t.PutRequest(r.key, r.value, r.lease, r.prev_kv, r.ignore_value, r.ignore_lease)


def delete_request(r: pb.DeleteRangeRequest) -> t.DeleteRangeRequest:
    return t.DeleteRangeRequest(r.key, r.range_end, r.prev_kv)


def _compare(c: pb.Compare) -> t.Compare:
    which = c.WhichOneof("target_union")
    operand: int | bytes = 0
    if which is not None:
        operand = getattr(c, which)
    return t.Compare(
        key=c.key,
        target=c.target,
        result=c.result,
        range_end=c.range_end,
        operand_target=_COMPARE_UNION[which] if which is not None else None,
        operand=operand,
    )


def _request_op(op: pb.RequestOp) -> t.RequestOp:
    which = op.WhichOneof("request")
    if which == "request_range":
        return range_request(op.request_range)
    if which == "request_put":
        return put_request(op.request_put)
    if which == "request_delete_range":
        return delete_request(op.request_delete_range)
    if which == "request_txn":
        return txn_request(op.request_txn)
    return None


def txn_request(r: pb.TxnRequest) -> t.TxnRequest:
    return t.TxnRequest(
        compare=tuple(_compare(c) for c in r.compare),
        success=tuple(_request_op(op) for op in r.success),
        failure=tuple(_request_op(op) for op in r.failure),
    )


def compaction_request(r: pb.CompactionRequest) -> t.CompactionRequest:
    return t.CompactionRequest(r.revision, r.physical)


def alarm_request(r: pb.AlarmRequest) -> AlarmRequest:
    return AlarmRequest(r.action, r.memberID, r.alarm)


# -- core -> protobuf --------------------------------------------------------


def key_value(kv: t.KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def _inner_header(revision: int) -> pb.ResponseHeader:
    """Responses nested in a txn carry only a revision, as etcd's."""
    return pb.ResponseHeader(revision=revision)


def range_response(r: t.RangeResponse, header: pb.ResponseHeader) -> pb.RangeResponse:
    return pb.RangeResponse(header=header, kvs=[key_value(kv) for kv in r.kvs], more=r.more, count=r.count)


def put_response(r: t.PutResponse, header: pb.ResponseHeader) -> pb.PutResponse:
    out = pb.PutResponse(header=header)
    if r.prev_kv is not None:
        out.prev_kv.CopyFrom(key_value(r.prev_kv))
    return out


def delete_response(r: t.DeleteRangeResponse, header: pb.ResponseHeader) -> pb.DeleteRangeResponse:
    return pb.DeleteRangeResponse(
        header=header, deleted=r.deleted, prev_kvs=[key_value(kv) for kv in r.prev_kvs]
    )


def _response_op(r: t.ResponseOp) -> pb.ResponseOp:
    if isinstance(r, t.RangeResponse):
        return pb.ResponseOp(response_range=range_response(r, _inner_header(r.revision)))
    if isinstance(r, t.PutResponse):
        return pb.ResponseOp(response_put=put_response(r, _inner_header(r.revision)))
    if isinstance(r, t.DeleteRangeResponse):
        return pb.ResponseOp(response_delete_range=delete_response(r, _inner_header(r.revision)))
    return pb.ResponseOp(response_txn=txn_response(r, _inner_header(r.revision)))


def txn_response(r: t.TxnResponse, header: pb.ResponseHeader) -> pb.TxnResponse:
    return pb.TxnResponse(
        header=header, succeeded=r.succeeded, responses=[_response_op(op) for op in r.responses]
    )


def alarm_members(alarms: tuple[AlarmMember, ...]) -> list[pb.AlarmMember]:
    return [pb.AlarmMember(memberID=a.member_id, alarm=cast("pb.AlarmType", a.alarm)) for a in alarms]



def member(m: MemberInfo) -> pb.Member:
    return pb.Member(
        ID=m.id, name=m.name, peerURLs=list(m.peer_urls), clientURLs=list(m.client_urls), isLearner=m.is_learner
    )
