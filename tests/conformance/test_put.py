"""etcdctl put, against rusd and a real etcd side by side."""

from __future__ import annotations

from rusd.api.etcdserverpb import rpc_pb2 as pb
from tests.conformance.harness import Pair

LEASE_NOT_FOUND = "Error: etcdserver: requested lease not found\n"
KEY_NOT_FOUND = "Error: etcdserver: key not found\n"


def test_put_plain_and_prev_kv(pair: Pair) -> None:
    assert pair.ctl("put", "put1/k", "v1").out == "OK\n"
    # --prev-kv on a new key prints only OK
    assert pair.ctl("put", "put1/n", "x", "--prev-kv").out == "OK\n"
    assert pair.ctl("put", "put1/k", "v2", "--prev-kv").out == "OK\nput1/k\nv1\n"
    r = pair.ctl("put", "put1/k", "v3", "--prev-kv", "-w", "json").json()
    prev = r["prev_kv"]
    assert prev["value"] == "djI="  # base64("v2")
    assert prev["version"] == 2
    assert prev["mod_revision"] == r["header"]["revision"] - 1
    r = pair.ctl("put", "put1/k", "v4", "--prev-kv", "-w", "fields")
    assert '"PrevValue" : "v3"' in r.out
    assert '"PrevVersion" : 3' in r.out
    pair.ctl("put", "put1/k", "v5", "-w", "protobuf", protobuf=pb.PutResponse)
    pair.ctl("put", "put1/k", "v6", "--prev-kv", "-w", "protobuf", protobuf=pb.PutResponse)
    assert pair.ctl("get", "put1/k", "-w", "json").json()["kvs"][0]["version"] == 6


def test_put_ignore_value_and_lease(pair: Pair) -> None:
    pair.ctl("put", "put2/k", "keep")
    r = pair.ctl("put", "put2/k", "--ignore-value", "--prev-kv")
    assert r.out == "OK\nput2/k\nkeep\n"
    got = pair.ctl("get", "put2/k", "-w", "json").json()["kvs"][0]
    assert got["value"] == "a2VlcA=="  # still "keep"
    assert got["version"] == 2
    # --ignore-lease keeps the (absent) lease, takes the new value
    assert pair.ctl("put", "put2/k", "new", "--ignore-lease").out == "OK\n"
    assert pair.ctl("get", "put2/k", "--print-value-only").out == "new\n"


def test_put_ignore_flags_on_missing_key(pair: Pair) -> None:
    r = pair.ctl("put", "put3/missing", "--ignore-value")
    assert (r.rc, r.out) == (1, "")
    assert r.err.endswith(KEY_NOT_FOUND)
    assert "code = InvalidArgument desc = etcdserver: key not found" in r.err
    r = pair.ctl("put", "put3/missing", "v", "--ignore-lease")
    assert r.rc == 1
    assert r.err.endswith(KEY_NOT_FOUND)
    assert pair.ctl("get", "put3/", "--prefix").out == ""


def test_put_ignore_flag_argument_errors(pair: Pair) -> None:
    r = pair.ctl("put", "put4/k", "v", "--ignore-value")
    assert (r.rc, r.err) == (128, "Error: put command needs only 1 argument when 'ignore-value' is set\n")
    r = pair.ctl("put", "put4/k", "--ignore-lease")  # value still needed
    assert (r.rc, r.err) == (128, "Error: put command needs 1 argument and input from stdin or 2 arguments\n")


def test_put_unknown_lease(pair: Pair) -> None:
    r = pair.ctl("put", "put5/k", "v", "--lease=1234abcd")
    assert r.rc == 1
    assert "code = NotFound desc = etcdserver: requested lease not found" in r.err
    assert r.err.endswith(LEASE_NOT_FOUND)
    r = pair.ctl("put", "put5/k", "v", "--lease=zz")
    assert r.rc == 128
    assert r.err.startswith("Error: bad lease ID")
    assert pair.ctl("get", "put5/k").out == ""


def test_put_value_from_stdin(pair: Pair) -> None:
    assert pair.ctl("put", "put6/k", stdin="from stdin\nline 2\n").out == "OK\n"
    # etcdctl sends stdin verbatim, trailing newline included
    assert pair.ctl("get", "put6/k").out == "put6/k\nfrom stdin\nline 2\n\n"
    assert pair.ctl("get", "put6/k", "-w", "json").json()["kvs"][0]["value"] == "ZnJvbSBzdGRpbgpsaW5lIDIK"
    # empty stdin is not a value
    r = pair.ctl("put", "put6/e", stdin="")
    assert (r.rc, r.err) == (128, "Error: put command needs 1 argument and input from stdin or 2 arguments\n")


def test_put_awkward_values(pair: Pair) -> None:
    pair.ctl("put", "put7/spaces", "a b  c ")
    assert pair.ctl("get", "put7/spaces", "--print-value-only").out == "a b  c \n"
    pair.ctl("put", "put7/nl", "line1\nline2")
    assert pair.ctl("get", "put7/nl").out == "put7/nl\nline1\nline2\n"
    pair.ctl("put", "put7/dash", "--", "-starts-with-dash")
    assert pair.ctl("get", "put7/dash", "--print-value-only").out == "-starts-with-dash\n"
    pair.ctl("put", "put7/empty", "")
    r = pair.ctl("get", "put7/empty", "-w", "json").json()
    assert "value" not in r["kvs"][0]  # empty value is omitted in JSON
    assert pair.ctl("get", "put7/empty").out == "put7/empty\n\n"
    pair.ctl("put", "put7/bin", stdin=b"\x00\x01\xff\xfe bin\t\r")
    assert pair.ctl("get", "put7/bin", "--hex").out == "\\x70\\x75\\x74\\x37\\x2f\\x62\\x69\\x6e\n" \
        "\\x00\\x01\\xff\\xfe\\x20\\x62\\x69\\x6e\\x09\\x0d\n"
    assert pair.ctl("get", "put7/bin", "-w", "json").json()["kvs"][0]["value"] == "AAH//iBiaW4JDQ=="
    r = pair.ctl("get", "put7/bin", "-w", "fields")
    assert '"Value" : "\\x00\\x01\\xff\\xfe bin\\t\\r"' in r.out
    pair.ctl("get", "put7/bin", "-w", "protobuf", protobuf=pb.RangeResponse)
    pair.ctl("put", "put7/unicode", "żółw 🐢")
    assert pair.ctl("get", "put7/unicode", "--print-value-only").out == "żółw 🐢\n"
    big = "x" * 100_000
    pair.ctl("put", "put7/big", stdin=big)
    assert pair.ctl("get", "put7/big", "--print-value-only").out == big + "\n"


def test_put_key_errors(pair: Pair) -> None:
    r = pair.ctl("put", "", "x")
    assert r.rc == 1
    assert "code = InvalidArgument desc = etcdserver: key is not provided" in r.err
    assert r.err.endswith("Error: etcdserver: key is not provided\n")
    r = pair.ctl("put")
    assert (r.rc, r.err) == (128, "Error: put command needs 1 argument and input from stdin or 2 arguments\n")
    # keys with spaces, slashes and odd bytes are fine
    assert pair.ctl("put", "put8/a key/with spaces", "v").out == "OK\n"
    assert pair.ctl("get", "put8/", "--prefix", "--keys-only").out == "put8/a key/with spaces\n\n"


def test_put_request_too_large(pair: Pair) -> None:
    # over the server's 1.5 MiB --max-request-bytes, under etcdctl's own 2 MiB limit
    r = pair.ctl("put", "put9/big", stdin="x" * (1024 * 1024 + 600 * 1024))
    assert r.rc == 1
    assert r.err.endswith("Error: etcdserver: request is too large\n")
