from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from security.errors import KeyRingError
from security.keys import KeyRing


def test_parse_env_last_is_active_and_repr_hides_keys() -> None:
    a, b = base64.b64encode(b"a" * 32).decode(), base64.b64encode(b"b" * 32).decode()
    ring = KeyRing.parse(f"old:{a}, new:{b}")
    assert ring.active == "new" and ring.key("old") == b"a" * 32
    assert a not in repr(ring) and b not in repr(ring)


@pytest.mark.parametrize("text,match", [("nocolon", "kid:base64key"), ("k:!!!", "base64"),
                                        (f"k:{base64.b64encode(b'short').decode()}", "32 bytes"),
                                        (f"bad id:{base64.b64encode(bytes(32)).decode()}", "key id"), ("", "no keys")])
def test_bad_key_text_is_refused(text: str, match: str) -> None:
    with pytest.raises(KeyRingError, match=match):
        KeyRing.parse(text)


def test_key_file_permissions(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    ring = KeyRing.generate("k1")
    ring.write(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert KeyRing.from_file(path).active_key == ring.active_key
    os.chmod(path, 0o640)
    with pytest.raises(KeyRingError, match="chmod 600"):
        KeyRing.from_file(path)
    with pytest.raises(KeyRingError, match="does not exist"):
        KeyRing.from_file(tmp_path / "missing")
