"""One CPU kernel path on every x86-64 machine (AVX2, 2 threads), so a CPU run reproduces the
committed bits: why and at what cost in docs/pipeline.md, "The same numbers on another machine"."""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

MODE = "COLORIZATION_CPU_KERNELS"
COMMANDS = ("train", "evaluate", "register")  # the ones whose results git and dvc.lock hold
THREADS = 2  # a laptop has at least this many; more threads would be other bits, not faster demos
PORTABLE = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorised kernels (elementwise, reductions, Adam)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's JIT convolutions (AVX-512 ones add in another order)
    "DNNL_MAX_CPU_ISA": "AVX2",  # oneDNN before 2.x reads this name
    "MKL_CBWR": "COMPATIBLE",  # MKL's one branch that is the same on Intel and AMD (it ignores AVX2 on AMD)
    "OMP_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
    "OMP_DYNAMIC": "FALSE",  # no fewer threads than asked for when the machine is busy
    "MKL_DYNAMIC": "FALSE",
}


def pin(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the portable kernel path in `environ` unless COLORIZATION_CPU_KERNELS=native; only before
    torch is loaded (the libraries read these once): a process that loaded it keeps its settings."""
    mode = environ.get(MODE, "portable")
    if mode not in ("portable", "native"):
        raise ValueError(f"{MODE}={mode!r}; expected portable or native")
    if mode == "native" or (environ is os.environ and "torch" in sys.modules):
        return
    environ.update(PORTABLE)
