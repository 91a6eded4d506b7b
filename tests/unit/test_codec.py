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


def test_a_record_of_a_class_that_grew_a_field_decodes_from_its_old_number() -> None:
    """Records do not say how many fields they hold: AuthenticateRequest took a new
    number when it gained `simple_token`, and records under the old one (in the logs of
    existing data dirs) decode with the new field at its default, also when nested in
    the middle of another value."""
    from rusd.core.auth.types import AuthenticateRequest

    old = b"\x07\x1a\x05\x04root"  # record 26, then the name: all there was
    assert codec.decode(old) == AuthenticateRequest("root", "")
    assert codec.decode(b"\x06\x02" + old + b"\x03\x0a") == (AuthenticateRequest("root"), 5)
    new = codec.encode(AuthenticateRequest("root", "Prefix"))
    assert new.startswith(b"\x07\x28") and codec.decode(new) == AuthenticateRequest("root", "Prefix")


def test_a_legacy_number_needs_defaults_for_the_later_fields_and_stays_decode_only() -> None:
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Grown:
        a: int
        b: int

    with pytest.raises(ValueError, match="need defaults"):
        codec.register_legacy(9999, Grown, fields=1)
    with pytest.raises(ValueError, match="already used"):
        codec.register(26, Grown)  # numbers are forever
