"""Dependency direction and determinism rules, checked on the import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CORE_ALLOWED = {
    "__future__", "dataclasses", "enum", "typing", "collections", "heapq", "bisect", "struct",
    "hashlib", "zlib", "abc", "functools", "itertools", "operator", "math", "sortedcontainers", "rusd.core",
}
FORBIDDEN = {
    "rusd/storage": {"rusd.server", "grpc", "asyncio", "sim"},
    "sim": {"rusd.server", "grpc", "lmdb", "rusd.storage.lmdb", "asyncio", "threading", "socket", "time"},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _within(name: str, roots: set[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _files("rusd/core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_only_pure_modules(path: Path) -> None:
    bad = [name for name in _imports(path) if not _within(name, CORE_ALLOWED)]
    assert bad == [], f"{path} imports {bad}"


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_import_one_way(folder: str) -> None:
    bad = [
        (str(p.relative_to(ROOT)), name)
        for p in _files(folder)
        for name in _imports(p)
        if _within(name, FORBIDDEN[folder])
    ]
    assert bad == []
