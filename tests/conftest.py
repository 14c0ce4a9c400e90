"""Shared fixtures: one embedded broker per test session for the integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("DGLBACKEND", "pytorch")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator["object"]:
    from stream.broker import EmbeddedBroker

    with EmbeddedBroker(log_dir=Path(tmp_path_factory.mktemp("broker"))) as b:
        yield b
