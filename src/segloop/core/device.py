"""Device choice and CPU speed settings (channels_last, bf16 autocast)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")

_log = logging.getLogger(__name__)
# Exported by every libLLVM; found through dlopen(NULL) only when an LLVM sits in the
# process's global symbol scope (Mesa's DRI loader opens its driver RTLD_GLOBAL).
_LLVM_SYMBOLS = ("LLVMContextCreate", "_ZN4llvm12DebugCounter8instanceEv")


def _llvm_in_global_scope() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        process = ctypes.CDLL(None)
    except OSError:
        return False
    return any(hasattr(process, name) for name in _LLVM_SYMBOLS)


def avoid_triton_crash() -> bool:
    """Make ``import triton`` fail cleanly where loading it would segfault; True if blocked.

    torch's optimizers import ``torch._dynamo``, which imports triton when it is installed
    (the CUDA wheels ship it). ``libtriton.so`` bundles its own LLVM with exported symbols;
    once Mesa's llvmpipe has put ``libLLVM-N.so`` in the global scope (napari's GL context),
    libtriton binds to that LLVM instead and crashes in its static initializers. Then torch
    is told there is no triton (``sys.modules["triton"] = None``), which a CPU run never needs.
    Call it after the GL context exists and before the first optimizer is built.
    """
    if "triton" in sys.modules or not _llvm_in_global_scope():
        return False
    sys.modules["triton"] = None
    _log.warning("an LLVM (Mesa GL) is loaded process-wide: triton disabled to avoid a crash")
    return True


class DeviceError(ValueError):
    """Raised when the requested device is unknown or not available."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Devices usable on this machine, best first (``"cpu"`` is always last)."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if _mps_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda[:N]" | "mps"`` into an available ``torch.device``.

    ``"auto"`` picks CUDA, then MPS, then CPU. An unavailable device raises
    :class:`DeviceError` naming what is available instead.
    """
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if kind != "cpu" and kind not in available_devices():
        raise DeviceError(
            f"device {name!r} is not available here; available: {', '.join(available_devices())}"
        )
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels for this CPU (AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class ComputeSettings:
    """How tensors run on a device: memory format and autocast dtype."""

    device: torch.device
    channels_last: bool
    autocast_dtype: torch.dtype | None

    def describe(self) -> str:
        """Human-readable summary, e.g. ``"cpu (bf16, channels_last)"``."""
        extras = []
        if self.autocast_dtype is not None:
            extras.append({torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype])
        else:
            extras.append("fp32")
        if self.channels_last:
            extras.append("channels_last")
        return f"{self.device} ({', '.join(extras)})"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward passes (a no-op context for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move a (N, C, H, W) batch to the device in the right memory format."""
        tensor = tensor.to(self.device, non_blocking=True)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor


def compute_settings(
    device: str | torch.device = "auto", fast: bool = True, training: bool = False
) -> ComputeSettings:
    """Pick memory format and mixed precision for ``device``.

    On CPU: bf16 autocast where the CPU has native bf16 kernels; channels_last for
    inference always, for training only together with bf16 (measured on a CPU without
    bf16: channels_last made fp32 training steps ~15 % slower but inference ~30 %
    faster, see docs/benchmarks.md). On CUDA: bf16 autocast where supported. MPS: fp32.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if not fast:
        return ComputeSettings(dev, False, None)
    if dev.type == "cpu":
        bf16 = cpu_supports_bf16()
        return ComputeSettings(dev, bf16 or not training, torch.bfloat16 if bf16 else None)
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return ComputeSettings(dev, True, torch.bfloat16)
    return ComputeSettings(dev, False, None)


#: ``Module.to`` swaps parameters in place; two threads preparing one network at once (the
#: chunked segmentation runs two windows at a time) would let one run a forward pass on
#: half-converted weights. Under this lock, a forward only starts once its network is whole.
_PREPARE_LOCK = threading.Lock()


def prepare_network(network: torch.nn.Module, settings: ComputeSettings) -> torch.nn.Module:
    """Move ``network`` to the device and memory format of ``settings`` (thread-safe).

    The format is set both ways: a network that predicted in channels_last (validation
    during training) goes back to the contiguous format when ``settings`` train without it.
    """
    layout = torch.channels_last if settings.channels_last else torch.contiguous_format
    with _PREPARE_LOCK:
        network = network.to(settings.device).to(memory_format=layout)
    return network


@contextlib.contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``None`` leaves it alone)."""
    if n_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
