"""Bad command lines: a non-zero exit, a clear error naming the flag, no traceback,
and nothing created on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# args -> (exit status, what the first line must contain)
CASES: dict[str, tuple[list[str], int, tuple[str, ...]]] = {
    "max-txn-ops-not-a-number": (["--max-txn-ops", "abc"], 2, ("-max-txn-ops", '"abc"')),
    "max-txn-ops-out-of-range": (["--max-txn-ops=99999999999999999999999"], 2, ("-max-txn-ops",)),
    "auth-token-jwt-without-keys": (["--auth-token", "jwt"], 1, ("--auth-token", "invalid auth signature method")),
    "listen-client-url-without-scheme": (
        ["--listen-client-urls", "127.0.0.1:2379"],
        2,
        ("-listen-client-urls", "127.0.0.1:2379"),
    ),
    "unknown-flag": (["--no-such-flag"], 2, ("no-such-flag",)),
    "quota-not-a-number": (["--quota-backend-bytes", "lots"], 2, ("-quota-backend-bytes", '"lots"')),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_flag_is_refused_clearly(tmp_path: Path, case: str) -> None:
    args, status, words = CASES[case]
    data_dir = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "rusd", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == status, out
    assert "Traceback" not in out, out
    first = proc.stderr.splitlines()[0]
    assert all(w in first for w in words), out
    assert not data_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
