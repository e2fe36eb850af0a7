"""One CPU kernel path on every x86-64 machine, so a CPU run reproduces the committed bits.

PyTorch, oneDNN and MKL each pick their kernels from the CPU they find (AVX-512 or AVX2) and
split work by the thread count, and the kernels add floats in different orders: the demo
trained on another machine ended a few ulps apart, and 1000 steps later c-GAN scored 17.02 dB
instead of 17.05. So the commands whose results git and dvc.lock hold (train, evaluate,
register) pin, before torch is imported, the path the libraries document for this
(bench/cpu_reproducibility.py measures each one):

- `ATEN_CPU_CAPABILITY=avx2`: PyTorch's own vectorised kernels (elementwise, reductions, Adam);
- `ONEDNN_MAX_CPU_ISA=AVX2`: oneDNN's JIT convolutions (AVX-512 ones add in another order);
- `MKL_CBWR=COMPATIBLE`: MKL's BLAS (the linear layers) in its one branch that is the same
  on Intel and AMD (MKL ignores `MKL_CBWR=AVX2` on AMD and picks its own);
- a fixed thread count: reductions are split per thread, so 2 threads give other bits than 16.

`COLORIZATION_CPU_KERNELS=native` leaves the libraries to choose: faster on a machine with
many cores or AVX-512, but its CPU results then differ from the committed ones in the last
digits. GPU training is unaffected (and differs from CPU anyway).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

MODE = "COLORIZATION_CPU_KERNELS"
COMMANDS = ("train", "evaluate", "register")  # the ones whose results git and dvc.lock hold
THREADS = 2  # a laptop has at least this many; more threads would be other bits, not faster demos
PORTABLE = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",  # oneDNN before 2.x reads this name
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
    "OMP_DYNAMIC": "FALSE",  # no fewer threads than asked for when the machine is busy
    "MKL_DYNAMIC": "FALSE",
}


def pin(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the portable kernel path in `environ` unless COLORIZATION_CPU_KERNELS=native.

    Only before torch is loaded: the libraries read these once. A process that loaded torch
    first (a test, a notebook calling the CLI in-process) keeps its own settings untouched."""
    mode = environ.get(MODE, "portable")
    if mode not in ("portable", "native"):
        raise ValueError(f"{MODE}={mode!r}; expected portable or native")
    if mode == "native" or (environ is os.environ and "torch" in sys.modules):
        return
    environ.update(PORTABLE)
