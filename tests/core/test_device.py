"""The guard that keeps triton from crashing a process whose GL driver loaded an LLVM."""

from __future__ import annotations

import ctypes.util
import glob
import subprocess
import sys

import pytest

CODE = """
import ctypes, sys
from segloop.core.device import avoid_triton_crash
assert avoid_triton_crash() is False, "blocked triton although no LLVM is loaded"
ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)  # what Mesa's llvmpipe driver does
assert avoid_triton_crash() is True, "did not block triton with an LLVM in the global scope"
try:
    import triton  # noqa: F401
except ImportError:
    print("blocked")
"""


def _libllvm() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/libLLVM-*.so*") + glob.glob("/lib/*/libLLVM-*.so*"))
    return found[0] if found else ctypes.util.find_library("LLVM")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard is Linux-only")
def test_triton_is_blocked_once_an_llvm_is_loaded_process_wide():
    library = _libllvm()
    if library is None:
        pytest.skip("no libLLVM on this machine (Mesa's llvmpipe is not installed)")
    result = subprocess.run(
        [sys.executable, "-c", CODE, library], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "blocked"


def test_prepare_network_sets_the_memory_format_both_ways():
    """A network that predicted in channels_last (validation during training) trains in
    the contiguous format again when the training's settings say so."""
    import torch

    from segloop.core.device import ComputeSettings, prepare_network

    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 3))
    cpu = torch.device("cpu")
    prepare_network(network, ComputeSettings(cpu, True, None))
    weight = network[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    prepare_network(network, ComputeSettings(cpu, False, None))
    assert network[0].weight is weight  # the optimizer's parameter objects stay
    assert weight.is_contiguous()
