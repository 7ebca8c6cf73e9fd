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
