"""colorization.cpu_kernels: the documented pinning, applied only before torch is loaded."""

from __future__ import annotations

import os

import torch

from colorization import cpu_kernels


def test_the_pinning_is_the_documented_one_and_native_leaves_the_environment_alone():
    env = {"OMP_NUM_THREADS": "7", "ATEN_CPU_CAPABILITY": "avx512"}
    cpu_kernels.pin(env)
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert env["MKL_CBWR"] == "COMPATIBLE" and env["OMP_NUM_THREADS"] == str(cpu_kernels.THREADS)
    mine = {cpu_kernels.MODE: "native", "OMP_NUM_THREADS": "7"}
    cpu_kernels.pin(mine)
    assert mine == {cpu_kernels.MODE: "native", "OMP_NUM_THREADS": "7"}


def test_a_process_that_loaded_torch_first_is_left_alone(monkeypatch):
    monkeypatch.delenv(cpu_kernels.MODE, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    threads = torch.get_num_threads()
    cpu_kernels.pin()  # as the CLI's callback does under typer's CliRunner, inside pytest
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_CBWR" not in os.environ
    assert torch.get_num_threads() == threads
