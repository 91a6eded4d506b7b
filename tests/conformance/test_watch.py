"""etcdctl watch against rusd and a real etcd: the same watch, the same writes, the
same output. `etcdctl watch` runs until killed: it is started on both servers, the
writes go to both, and once both outputs have the expected number of lines (or a
few seconds passed) the watchers are stopped and their outputs compared."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

from tests.conformance.harness import Out, Pair, _start, decode, encode

SETTLE = 0.5  # etcdctl prints nothing once its watch is created: give it time


class Watching:
    """`etcdctl <args>` running against both servers."""

    def __init__(self, pair: Pair, *args: str) -> None:
        self.pair = pair
        self.args = args
        self.procs = [_start(pair.rusd.endpoint, args), _start(pair.etcd.endpoint, args)]
        time.sleep(SETTLE)

    def send(self, line: str) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(encode(line + "\n"))
            p.stdin.flush()
        time.sleep(SETTLE)

    def stop(self) -> tuple[Out, Out]:
        time.sleep(SETTLE)
        outs = []
        for p in self.procs:
            p.send_signal(signal.SIGINT)
            try:
                out, err = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            outs.append(Out(0, decode(out), decode(err)))  # exit code: killed either way
        return outs[0], outs[1]

    def compare(self, norm: object = ()) -> Out:
        r, e = self.stop()
        return self.pair.compare(r, e, "etcdctl " + " ".join(self.args), norm)  # type: ignore[arg-type]


def test_watch_key(pair: Pair) -> None:
    w = Watching(pair, "watch", "wk/a")
    pair.ctl("put", "wk/a", "1")
    pair.ctl("put", "wk/b", "2")
    pair.ctl("put", "wk/a", "3")
    pair.ctl("del", "wk/a")
    out = w.compare()
    assert out.lines == ["PUT", "wk/a", "1", "PUT", "wk/a", "3", "DELETE", "wk/a", ""]


def test_watch_prefix_prev_kv(pair: Pair) -> None:
    w = Watching(pair, "watch", "--prefix", "--prev-kv", "wp/")
    pair.ctl("put", "wp/1", "a")
    pair.ctl("put", "wp/1", "b")
    pair.ctl("put", "wq", "nope")
    pair.ctl("del", "--prefix", "wp/")
    out = w.compare()
    assert out.lines == ["PUT", "wp/1", "a", "PUT", "wp/1", "a", "wp/1", "b", "DELETE", "wp/1", "b", "wp/1", ""]


def test_watch_rev_replays_history(pair: Pair) -> None:
    pair.ctl("put", "wr/x", "1")
    rev = pair.revisions()[0]
    pair.ctl("put", "wr/x", "2")
    pair.ctl("put", "wr/y", "3")
    w = Watching(pair, "watch", "--rev", str(rev), "--prefix", "wr/")
    pair.ctl("del", "wr/y")
    out = w.compare()
    assert out.lines == ["PUT", "wr/x", "1", "PUT", "wr/x", "2", "PUT", "wr/y", "3", "DELETE", "wr/y", ""]


def _normalise_json(text: str, ident: object) -> str:
    # one JSON document per response; ids of the two clusters are already replaced
    return re.sub(r'"watch_id":\d+', '"watch_id":<ID>', text)


def test_watch_json(pair: Pair) -> None:
    rev = pair.revisions()[0]
    pair.ctl("put", "wj/a", "1")
    w = Watching(pair, "watch", "-w", "json", "--rev", str(rev + 1), "--prev-kv", "wj/a")
    pair.ctl("put", "wj/a", "2")
    out = w.compare(_normalise_json)
    docs = [json.loads(re.sub(r"<[A-Z_]+>", "0", line)) for line in out.lines if line.strip()]
    assert [len(d["Events"]) for d in docs] == [1, 1]


def test_watch_compacted_rev(fresh_pair: Pair) -> None:
    pair = fresh_pair
    for v in "123":
        pair.ctl("put", "wc", v)
    pair.ctl("compact", "3")
    w = Watching(pair, "watch", "--rev", "2", "wc")
    out = w.compare()
    assert out.out == ""
    assert "watch was canceled (etcdserver: mvcc: required revision has been compacted)" in out.err


def test_watch_interactive(pair: Pair) -> None:
    """Two watches on disjoint keys: etcdctl prints each watch from its own goroutine,
    so an event seen by both would interleave its lines at random."""
    w = Watching(pair, "watch", "-i")
    w.send("watch wi/a")
    w.send("watch --prefix wj/")
    pair.ctl("put", "wi/a", "1")
    w.send("progress")
    pair.ctl("put", "wj/b", "2")
    out = w.compare(_stdin_eof)
    assert out.lines[:3] == ["PUT", "wi/a", "1"]
    assert out.lines.count("PUT") == 2
    assert out.lines.count(f"progress notify: {pair.revisions()[0] - 1}") == 2


def _stdin_eof(text: str, ident: object) -> str:
    # Whether etcdctl -i sees SIGINT or the end of its stdin first is a race.
    return text.replace("Error: Error reading watch request line: EOF\n", "")
