"""Does importing triton (via ``torch.optim.AdamW``) kill a napari process on Mesa GL?

    xvfb-run -a /tmp/cudavenv/bin/python benchmarks/triton_crash_check.py [--all] [--segloop]
        [--only NAME]

``--all`` adds the unguarded baselines and the other candidate fixes (informational);
``--segloop`` adds two runs of segloop's own ``train()`` in a ``thread_worker`` (segloop is
imported from this checkout's ``src`` when it is not installed): ``segloop_train_worker``
passes only when segloop itself avoids the crash.

Run it with the Python of a venv whose torch ships triton, e.g. the CUDA build that a plain
``pip install torch`` resolves on Linux::

    python3 -m venv /tmp/cudavenv
    /tmp/cudavenv/bin/pip install torch napari==0.9.2 PyQt6==6.11.0 PyQt6-Qt6==6.11.2 \\
        magicgui==0.10.2 qtpy==2.4.3
    apt-get install -y xvfb xauth libgl1 libegl1 ...   # Mesa llvmpipe is the GL driver there

Without a display the script restarts itself under ``xvfb-run -a``. It needs no segloop.

The cause it checks for: Mesa opens its DRI driver (``swrast_dri.so``, which needs
``libLLVM-15.so.1``) with ``RTLD_GLOBAL`` when vispy makes the GL context, so libLLVM's C++
symbols enter the global lookup scope. ``triton/_C/libtriton.so`` bundles its own, newer LLVM
and exports its LLVM symbols with default visibility (no ``-Bsymbolic``), so when it is
loaded later thousands of its own LLVM references bind to libLLVM-15 instead
(``llvm::DebugCounter::instance()`` among them); its static initializers then run its
inlined LLVM code on LLVM-15 objects and the process dies with SIGSEGV inside ``dlopen``.
Loaded before the GL context, libtriton (``RTLD_LOCAL`` like every extension module) binds
to itself and libLLVM-15, loaded later, binds to itself: no crash. ``torch.optim``
optimizers import ``torch._dynamo`` (``add_param_group`` is wrapped in
``torch._disable_dynamo`` and ``step`` in ``_use_grad_for_differentiable``), whose
``torch._dynamo.utils`` calls ``torch.utils._triton.has_triton_package()`` at import time,
which runs ``import triton``.

Each scenario runs in a child process (a crash kills only the child): open
``napari.Viewer(show=True)``, process events, import torch, optionally apply a fix, then do
the action in the GUI thread or in a napari ``thread_worker``. The parent prints one line per
scenario: exit code (-11 is SIGSEGV), whether triton got imported, and the training losses.

Exit status 0 when every scenario of the guarded path (the fix segloop applies: make triton
unimportable when an LLVM is already in the global symbol scope) ran without a crash and
trained; the unguarded baselines (``--all``) are informational and may crash.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time

# A C API function every libLLVM-N.so exports; found through dlopen(NULL) only when an LLVM
# was loaded into the global scope (Mesa's DRI loader uses RTLD_GLOBAL).
_LLVM_PROBE_SYMBOLS = ("LLVMContextCreate", "_ZN4llvm12DebugCounter8instanceEv")


def llvm_in_global_scope() -> bool:
    """True when some LLVM library's symbols are visible process-wide (Linux/ELF only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        process = ctypes.CDLL(None)
    except OSError:
        return False
    return any(hasattr(process, name) for name in _LLVM_PROBE_SYMBOLS)


def guard_triton() -> bool:
    """The proposed segloop fix: block ``import triton`` when it would crash.

    Returns True when triton was blocked. torch treats the ImportError as "no triton"
    (``torch.utils._triton.has_triton_package`` returns False), which is all a CPU run needs.
    """
    if "triton" in sys.modules or not llvm_in_global_scope():
        return False
    sys.modules["triton"] = None  # `import triton` now raises ImportError
    return True


def import_triton_deepbind() -> None:
    """Alternative fix: load libtriton with RTLD_DEEPBIND so it binds its own LLVM first."""
    old = sys.getdlopenflags()
    sys.setdlopenflags(old | os.RTLD_DEEPBIND)
    try:
        import triton  # noqa: F401
    finally:
        sys.setdlopenflags(old)


class PlainAdamW:
    """A hand-written AdamW that is not a torch.optim.Optimizer (no torch._dynamo)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        import torch

        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps, self.wd, self.t = lr, betas, eps, weight_decay, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        import torch

        self.t += 1
        b1, b2 = self.betas
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v, strict=True):
                if p.grad is None:
                    continue
                p.mul_(1 - self.lr * self.wd)
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


def segloop_training() -> list[float]:
    """segloop's own train_iter (2 epochs of a 2-level, 4-channel U-Net on 64x64 disks)."""
    from pathlib import Path

    try:
        import segloop  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import numpy as np
    import torch

    from segloop.core.evaluation import LabelledImage
    from segloop.core.modelio import new_bundle
    from segloop.core.models import ModelConfig
    from segloop.core.training import TrainConfig, train

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    data = []
    for i in range(4):
        labels = np.zeros((64, 64), np.int32)
        for k in range(1, 6):
            cy, cx = rng.integers(8, 56, size=2)
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = k
        noise = rng.normal(0, 0.1, labels.shape).astype(np.float32)
        image = (labels > 0).astype(np.float32) + noise
        data.append(LabelledImage(image, labels, name=str(i)))
    bundle = new_bundle(ModelConfig(depth=2, base_channels=4), "tiny")
    config = TrainConfig(epochs=2, crop=48, batch_size=2, tune_postprocess=False)
    result = train(bundle, data, config)
    return [round(float(h["loss"]), 4) for h in getattr(result, "history", [])][:5] or ["trained"]


def tiny_training(optimizer_kind: str, steps: int = 5) -> list[float]:
    import torch

    if optimizer_kind == "segloop":
        return segloop_training()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1)
    )
    if optimizer_kind == "plain":
        opt = PlainAdamW(net.parameters(), lr=1e-2)
    else:
        kwargs = {
            "adamw": {},
            "foreach_false": {"foreach": False},
            "fused": {"fused": True},
        }[optimizer_kind]
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2, **kwargs)
    x = torch.randn(2, 1, 16, 16)
    y = (x > 0).float()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        loss.backward()
        opt.step()
        losses.append(round(float(loss), 4))
    return losses


# name: (action, where, fix, guarded-path scenario?)
SCENARIOS = {
    "import_triton_main": ("triton", "main", "none", False),
    "import_triton_worker": ("triton", "worker", "none", False),
    "import_dynamo_main": ("dynamo", "main", "none", False),
    "adamw_main": ("adamw", "main", "none", False),
    "adamw_worker": ("adamw", "worker", "none", False),
    "adamw_worker_TORCHDYNAMO_DISABLE": ("adamw", "worker", "env_dynamo_disable", False),
    "adamw_foreach_false_worker": ("foreach_false", "worker", "none", False),
    "adamw_fused_worker": ("fused", "worker", "none", False),
    "plain_adamw_worker": ("plain", "worker", "none", False),
    "adamw_worker_preimport_before_viewer": ("adamw", "worker", "preimport", False),
    "adamw_worker_deepbind": ("adamw", "worker", "deepbind", False),
    "import_torch_only_main": ("torch", "main", "none", False),
    # the guarded path (what segloop does before building its optimizer)
    "guard_adamw_main": ("adamw", "main", "guard", True),
    "guard_adamw_worker": ("adamw", "worker", "guard", True),
    "guard_dynamo_worker": ("dynamo", "worker", "guard", True),
    # --segloop: segloop's own training in a thread_worker; the first one passes only once
    # segloop guards itself (nothing done by this script), the second applies guard_triton()
    "segloop_train_worker": ("segloop", "worker", "none", True),
    "segloop_train_worker_guard": ("segloop", "worker", "guard", True),
}


def child(name: str) -> None:
    import faulthandler

    faulthandler.enable()
    action, where, fix, _ = SCENARIOS[name]
    report: dict = {"scenario": name}
    if fix == "preimport":
        import torch  # noqa: F401
        import triton  # noqa: F401
    report["llvm_global_before_viewer"] = llvm_in_global_scope()

    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication

    import napari

    viewer = napari.Viewer(show=True)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)
    report["llvm_global_after_viewer"] = llvm_in_global_scope()
    import torch  # noqa: F401  (the plugin imports torch after the viewer exists)

    report["triton_after_import_torch"] = "triton" in sys.modules
    if fix == "guard":
        report["guard_blocked_triton"] = guard_triton()
    elif fix == "deepbind":
        import_triton_deepbind()
    print("CHILD ready", json.dumps(report), flush=True)

    def work():
        if action == "triton":
            import triton  # noqa: F401

            return "imported"
        if action == "dynamo":
            import torch._dynamo  # noqa: F401

            return "imported"
        if action == "torch":
            return "nothing"
        return tiny_training(action)

    if where == "main":
        report["result"] = work()
    else:
        from napari.qt.threading import thread_worker

        loop = QEventLoop()
        out: dict = {}
        worker = thread_worker(work, start_thread=False)()
        worker.returned.connect(lambda value: out.setdefault("result", value))
        worker.errored.connect(lambda exc: out.setdefault("error", repr(exc)))
        worker.finished.connect(loop.quit)
        worker.start()
        loop.exec()
        report.update(out)
    report["triton_in_sys_modules"] = sys.modules.get("triton") is not None
    report["dynamo_in_sys_modules"] = "torch._dynamo" in sys.modules
    viewer.close()
    print("RESULT", json.dumps(report), flush=True)
    sys.stdout.flush()
    os._exit(0 if "error" not in report else 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also run the unguarded baselines")
    parser.add_argument(
        "--segloop", action="store_true", help="also train with segloop's train() (from ../src)"
    )
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            print("no display and no xvfb-run", file=sys.stderr)
            return 2
        return subprocess.call([xvfb, "-a", sys.executable, *sys.argv])
    try:
        import torch
        import triton
    except ImportError as exc:
        print(f"note: {exc}; this venv has no triton, nothing can clash", flush=True)
    else:
        print(f"torch {torch.__version__}, triton {triton.__version__}", flush=True)
    names = args.only or [
        n
        for n, s in SCENARIOS.items()
        if (args.all or s[3]) and (args.segloop or not n.startswith("segloop"))
    ]
    failed = []
    for name in names:
        env = dict(os.environ)
        if SCENARIOS[name][2] == "env_dynamo_disable":
            env["TORCHDYNAMO_DISABLE"] = "1"
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", name],
                env=env,
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out, err = "timeout", exc.stdout or "", exc.stderr or ""
        seconds = time.monotonic() - start
        result = next(
            (json.loads(line[7:]) for line in str(out).splitlines() if line.startswith("RESULT ")),
            None,
        )
        lines = str(out).splitlines()
        ready = next(
            (json.loads(line[12:]) for line in lines if line.startswith("CHILD ready ")), {}
        )
        verdict = "SIGSEGV" if rc == -11 else ("ok" if rc == 0 and result else f"rc={rc}")
        info = result or ready
        print(
            f"{name:40s} {verdict:8s} {seconds:5.1f}s "
            f"llvm_global(before/after viewer)={info.get('llvm_global_before_viewer')}/"
            f"{info.get('llvm_global_after_viewer')} "
            f"triton_after_import_torch={info.get('triton_after_import_torch')} "
            f"triton_imported={(result or {}).get('triton_in_sys_modules', '?')} "
            f"dynamo={(result or {}).get('dynamo_in_sys_modules', '?')} "
            f"result={(result or {}).get('result', (result or {}).get('error'))}",
            flush=True,
        )
        if verdict != "ok" and rc not in (-11,):
            tail = "\n".join(str(err).splitlines()[-15:])
            print(f"   stderr tail:\n{tail}", flush=True)
        if SCENARIOS[name][3] and verdict != "ok":
            failed.append(name)
    if failed:
        print("FAILED (guarded path):", ", ".join(failed))
        return 1
    print("guarded path: no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
