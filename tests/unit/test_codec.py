"""The log entry codec: round trips, and refuses corrupt bytes with CodecError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rusd.core import codec
from rusd.core.mvcc.types import Compare, CompareTarget, DeleteRangeRequest, PutRequest, TxnRequest
from rusd.core.node import Proposal

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.binary(max_size=40), st.text(max_size=10))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=20)


@given(values)
def test_plain_values_round_trip(value: object) -> None:
    assert codec.decode(codec.encode(value)) == value


@given(st.binary(max_size=20), st.binary(max_size=20), st.integers(-(2**63), 2**63 - 1))
def test_proposals_round_trip(key: bytes, value: bytes, lease: int) -> None:
    txn = TxnRequest(
        compare=(Compare(key, CompareTarget.VALUE, operand_target=CompareTarget.VALUE, operand=value),),
        success=(PutRequest(key, value, lease, prev_kv=True), None),
        failure=(DeleteRangeRequest(key, b"\x00"), TxnRequest()),
    )
    proposal = Proposal(member_id=2**64 - 1, req_id=7, request=txn)
    assert codec.decode(codec.encode(proposal)) == proposal


def test_encoding_is_deterministic() -> None:
    a = codec.encode(Proposal(1, 2, PutRequest(b"k", b"v")))
    b = codec.encode(Proposal(1, 2, PutRequest(b"k", b"v")))
    assert a == b


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x09", b"\x03", b"\x04\x05ab", b"\x07\x7f", b"\x00\x00", b"\x05\x01\xff"],
    ids=["empty", "bad-tag", "truncated-int", "short-bytes", "unknown-record", "trailing", "bad-utf8"],
)
def test_corrupt_bytes_raise_codec_error(raw: bytes) -> None:
    with pytest.raises(codec.CodecError):
        codec.decode(raw)


def test_unregistered_type_is_refused() -> None:
    class Unknown:
        pass

    with pytest.raises(TypeError):
        codec.encode(Unknown())


@given(st.binary(max_size=30))
def test_random_bytes_never_crash_the_decoder(raw: bytes) -> None:
    with contextlib.suppress(codec.CodecError):
        codec.decode(raw)
