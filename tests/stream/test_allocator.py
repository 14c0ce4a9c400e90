"""keep_freed_blocks: a large temporary freed and allocated again is not page-faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import ctypes, resource, sys
from stream.allocator import keep_freed_blocks
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
if sys.argv[1] == "keep":
    assert keep_freed_blocks()
n = 64 << 20  # above glibc's largest default mmap threshold (32 MiB)
p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
p = libc.malloc(n); ctypes.memset(p, 1, n)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_large_blocks_are_reused_without_page_faults() -> None:
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 10_000  # 64 MiB of fresh 4 KiB pages: one fault each
    assert kept < default / 10
