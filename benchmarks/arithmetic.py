"""The same floating-point arithmetic for every benchmark run, whichever machine runs it.

OpenBLAS and numpy pick their kernels by the CPU, and kernels that add in another order give other floats, and
so, over a run, other trajectories. Styblinski-6's median (noisy.py, seeds 0-29, main) was 89.4 on an AMD EPYC
and 96.5 on an Intel Xeon: there OpenBLAS took its SkylakeX kernels and numpy its AVX-512 loops. With the AVX2
ones the Xeon gave 89.4 too, and the EPYC's figures on all six noisy problems (BENCHMARKS.md, tenth round of
issue 16). The thread count did not matter there (1 or 2 OpenBLAS threads gave the same 30 runs); one thread
keeps wall times comparable between processes that share a machine.

The libraries read these variables when they load, so they must be set before numpy is imported:
`fixed_environment()` gives them for a child process, `fixed_arithmetic()` re-executes this one with them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
AVX2_ARITHMETIC = {
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS's AVX2 kernels (an AMD EPYC's own choice)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's AVX2 loops, not its AVX-512 ones
    "ATEN_CPU_CAPABILITY": "avx2",  # torch, for Optuna's GP
    "MKL_CBWR": "AVX2",  # the MKL inside torch
}


def fixed_environment() -> dict[str, str]:
    """ONE_THREAD and, where the CPU has AVX2, AVX2_ARITHMETIC, less what the caller's environment sets."""
    wanted = dict(ONE_THREAD)
    if _has_avx2():
        wanted.update(AVX2_ARITHMETIC)
    return {name: value for name, value in wanted.items() if name not in os.environ}


def fixed_arithmetic() -> None:
    """Re-run this process (the same command) with `fixed_environment()`, unless it has it already."""
    unset = fixed_environment()
    if unset:
        os.environ.update(unset)
        sys.stdout.flush()
        os.execv(sys.executable, sys.orig_argv)


def _has_avx2() -> bool:
    try:
        return " avx2 " in Path("/proc/cpuinfo").read_text().replace("\n", " ") + " "
    except OSError:  # not Linux: the machine's own kernels
        return False
