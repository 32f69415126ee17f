"""benchmarks/arithmetic.py: a benchmark process that has loaded numpy re-runs itself with one thread per
library and, on an x86-64 CPU with AVX2, OpenBLAS's AVX2 kernels, so that its figures do not depend on the CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

SCRIPT = """
import json, os, sys
sys.path.insert(0, {benchmarks!r})
import numpy  # loaded first, as benchmarks/noisy.py does
from arithmetic import fixed_arithmetic

fixed_arithmetic()
from threadpoolctl import threadpool_info

names = ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "MKL_CBWR")
print(json.dumps({{"libraries": threadpool_info(), "env": {{name: os.environ.get(name) for name in names}}}}))
"""


def _arithmetic() -> object:
    spec = importlib.util.spec_from_file_location("arithmetic", BENCHMARKS / "arithmetic.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_process_that_loaded_numpy_reruns_on_one_thread_with_the_fixed_kernels(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(benchmarks=str(BENCHMARKS)))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and k != "OPENBLAS_CORETYPE"}
    env["MKL_CBWR"] = "COMPATIBLE"  # the caller's own setting is kept
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["env"]["OPENBLAS_NUM_THREADS"] == "1" and report["env"]["MKL_CBWR"] == "COMPATIBLE"
    blas = [lib for lib in report["libraries"] if lib["internal_api"] == "openblas"]
    assert blas and all(lib["num_threads"] == 1 for lib in blas)
    if _arithmetic()._has_avx2():  # type: ignore[attr-defined]
        assert report["env"]["OPENBLAS_CORETYPE"] == "Haswell"
        assert all(lib["architecture"] == "Haswell" for lib in blas)
