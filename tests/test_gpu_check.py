"""benchmarks/gpu_check.py runs on the CPU at tiny sizes (the GPU figures need a GPU machine): every variant of
lth-train's training and the bare loop, compiled (aot_eager here) and in bf16, masked and dense, and 2 DDP processes
(gloo); it prints its table and the ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_prints_its_ratios():
    done = subprocess.run(
        [sys.executable, SCRIPT, "--device", "cpu", "--quick", "--backend", "aot_eager", "--ddp", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[2:6]] == ["fp32", "fp32+compile", "bf16", "bf16+compile"]
    assert lines[6].startswith("DDP, 2 processes:")
    ratios = dict(item.split("=") for item in lines[-1].split())
    expected = {"lth_vs_bare", "masked_vs_dense_bare", "masked_vs_dense_lth", "ddp2_throughput_vs_1",
                "speedup_bf16_compile_lth", "speedup_fp32_compile_bare"}  # fmt: skip
    assert expected <= set(ratios) and all(float(v) > 0 for v in ratios.values())
