"""gnn/ and security/ stay pure: no Kafka, Faust, HTTP or stream imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("faust", "kafka", "aiokafka", "aiohttp", "requests", "stream", "mode")


@pytest.mark.parametrize("package", ["gnn", "security"])
def test_core_packages_import_nothing_from_the_stream_side(package: str) -> None:
    bad = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not bad, bad
