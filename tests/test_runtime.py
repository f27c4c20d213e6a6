"""limit_heap_growth: freed large tensor buffers go back to the OS (each case in a fresh process,
since mallopt changes the whole process)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, torch
if sys.argv[1] == "on":
    from speechllm.runtime import limit_heap_growth
    assert limit_heap_growth()
def rss(): return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
base = rss()
x = torch.ones(2**20); del x                           # a freed 4 MiB buffer raises glibc's mmap threshold
bufs = [torch.ones(512 * 1024 + i) for i in range(200)]  # ~400 MiB in 2 MiB tensors of varying size
small = [torch.ones(8) for _ in range(100)]            # small live allocations after them
del bufs
print(round(rss() - base))
"""


def retained_mib(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def test_freed_buffers_are_returned_to_the_os():
    assert retained_mib("off") > 300  # glibc's default keeps them (the training run's RSS creep)
    assert retained_mib("on") < 50
