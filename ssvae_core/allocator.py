"""Host memory for training on the CPU: freed buffers reused, large ones in huge pages.

Every training step allocates and frees the same large tensors (each layer's activations
[B, C, H, W] and their gradients, 6 MiB at the `small` preset, 94 MiB at `paper`). With
glibc's defaults, a block freed at the top of the heap is given back to the kernel once more
than about twice the largest block is free there, and a block above the mmap threshold is
unmapped on free; either way the next step faults the pages in again and the kernel zeroes
each one. Avoiding it made `ssvae_core.train`'s step 1.07x to 1.36x faster at `small` and
1.93x to 1.95x at `paper` in two runs on the 2-core CI machine (README, Benchmarks;
`allocator` in `bench/levers.py`).

`tune_process` makes two settings, both for the process that trains:

- glibc: ``M_MMAP_THRESHOLD`` = 32 MiB (its largest) and ``M_TRIM_THRESHOLD`` = 1 GiB, so
  blocks up to 32 MiB come from the heap and what is freed stays there for the next step.
  The resident size stays at its peak, which a training process reaches in its first step;
- PyTorch: ``THP_MEM_ALLOC_ENABLE=1``, its own switch to align blocks of 2 MiB and more to
  2 MiB and ask for transparent huge pages (``madvise``), so a block above 32 MiB faults in
  as one page per 2 MiB rather than per 4 KiB. PyTorch reads it once, at its first
  allocation: it applies only if set before ``import torch``. `HUGE_PAGES_ENV` goes to Ray's
  workers for that reason: a local start sets it before ``ray.init``, and on a cluster the
  image (docker/Dockerfile) and the launcher configs' ~/.bashrc export it.

Neither changes a number: only where the bytes live. Elsewhere than glibc (macOS, musl) the
glibc settings are skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

HUGE_PAGES_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}
# glibc's mallopt parameters (malloc.h) and the values set
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2**30


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def reuse_freed_memory() -> bool:
    """glibc keeps freed blocks up to 32 MiB for reuse (see the module doc). True if set."""
    libc = _glibc()
    if libc is None:
        return False
    trim = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    mmap = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(trim == 1 and mmap == 1)


def tune_process() -> dict[str, bool]:
    """Both settings for this process; which of them took effect.

    Huge pages apply only where torch is not imported yet (`HUGE_PAGES_ENV`); an explicit
    ``THP_MEM_ALLOC_ENABLE=0`` in the environment is left as it is.
    """
    huge = "torch" not in sys.modules and os.environ.get("THP_MEM_ALLOC_ENABLE") != "0"
    if huge:
        os.environ.update(HUGE_PAGES_ENV)
    return {"reuse_freed_memory": reuse_freed_memory(), "huge_pages": huge}
