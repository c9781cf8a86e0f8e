"""The daemon's allocator setting: freed large blocks go back to the system (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobsync.service.memory import keep_large_blocks_unmapped

# Frees a 16 MiB block (glibc then serves blocks up to that size from its heap), allocates 100
# blocks of 1 MiB, each followed by a small block that stays, frees them, and prints how much
# of the 100 MiB the process still holds.
_PROGRAM = """
import sys
from jobsync.service.memory import keep_large_blocks_unmapped

def resident_mib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024

if sys.argv[1] == "fixed":
    assert keep_large_blocks_unmapped()
big = bytearray(16 << 20)
del big
before = resident_mib()
blocks, pins = [], []
for _ in range(100):
    blocks.append(bytearray(1 << 20))
    pins.append(bytearray(1 << 10))
del blocks
print(resident_mib() - before)
"""


def _kept_mib(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return int(result.stdout)


@pytest.mark.skipif(not keep_large_blocks_unmapped(), reason="needs glibc's mallopt")
def test_freed_large_blocks_are_returned_once_the_threshold_is_fixed():
    assert _kept_mib("default") >= 90  # glibc's moving threshold: the heap keeps them
    assert _kept_mib("fixed") <= 10
