"""The `lepton` command line: --help everywhere, key management that never prints key material."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [[], ["run"], ["demo"], ["train"], ["broker"], ["produce"], ["subscribe"], ["keys"], ["keys", "generate"],
            ["keys", "rotate"], ["keys", "list"], ["keys", "x25519"], ["bench"], ["bench", "engine"], ["eval"],
            ["eval", "linkpred"], ["eval", "anomaly"], ["state"], ["state", "inspect"], ["bench", "e2e"]]


def _lepton(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "lepton")
def test_every_command_has_help(cmd: list[str]) -> None:
    r = _lepton(*cmd, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout


def test_keys_generate_rotate_list(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    assert _lepton("keys", "generate", "--file", str(f), "--kid", "one").returncode == 0
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    assert _lepton("keys", "generate", "--file", str(f)).returncode == 2  # no silent overwrite
    assert _lepton("keys", "rotate", "--file", str(f), "--kid", "two").returncode == 0
    out = _lepton("keys", "list", "--file", str(f))
    assert out.stdout.split("\n")[:2] == ["one", "two  (active)"]
    material = [line.split(":", 1)[1] for line in f.read_text().split()]
    assert all(base64.b64decode(m) and m not in out.stdout + out.stderr for m in material)
    f.chmod(0o644)
    bad = _lepton("keys", "list", "--file", str(f))
    assert bad.returncode == 2 and "chmod 600" in bad.stderr
