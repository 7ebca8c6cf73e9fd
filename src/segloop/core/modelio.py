"""Model files: one ``.safetensors`` file holding weights, JSON config and JSON metadata.

Loading never unpickles anything: safetensors stores raw tensors plus a string header,
where segloop keeps ``{"format", "config", "metadata"}`` as JSON text. Saving writes a
temporary file next to the target and renames it, so a crash or cancel never leaves a
half-written model.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .classes import ClassEntry, class_legend
from .imageio import atomic_output
from .metadata import FORMAT, HeaderError, read_model_header
from .models import ModelConfig, build_network
from .package import PackageError, is_package, package_header, package_model

MODEL_SUFFIX = ".safetensors"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "models"

DEFAULT_POSTPROCESS = {
    "fg_threshold": 0.5,
    "seed_threshold": 0.5,
    "min_size": 0,
    "min_seed_size": 3,
    "smooth": 1.0,
    "min_peak": 0.0,
    "split_large": 0.0,
}
DEFAULT_PREPROCESS = {"invert": "never", "percentiles": [1.0, 99.8], "colour": "luma"}
#: Prediction defaults a model may override in ``metadata["predict"]`` (chosen on its
#: validation split): object ``diameter`` of new images (None = the training images'
#: scale, ``"auto"`` = measure it with a first pass) and test-time augmentation.
DEFAULT_PREDICT: dict[str, Any] = {"diameter": None, "tta": False}


class ModelFileError(ValueError):
    """A model file is missing, corrupt, truncated or does not match its config."""


@dataclass
class ModelBundle:
    """A ready-to-run network with its configuration and metadata."""

    config: ModelConfig
    network: nn.Module
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or (self.path.stem if self.path else "model"))

    @property
    def target(self) -> str:
        """``"instances"`` (background/interior/border) or ``"classes"`` (user classes)."""
        return str(self.metadata.get("target", "instances"))

    @property
    def diameter(self) -> float | None:
        """Median object diameter (pixels) of the training data, as the network saw it."""
        value = self.metadata.get("diameter")
        return float(value) if value else None

    @property
    def native_scale_factor(self) -> float:
        """Rescale factor that maps the training images' scale to the network's
        (1.0 for models trained at native scale)."""
        native = self.metadata.get("native_diameter")
        if self.metadata.get("rescaled") and native and self.diameter:
            return self.diameter / float(native)
        return 1.0

    @property
    def preprocess(self) -> dict[str, Any]:
        return {**DEFAULT_PREPROCESS, **self.metadata.get("preprocess", {})}

    @property
    def postprocess(self) -> dict[str, Any]:
        return {**DEFAULT_POSTPROCESS, **self.metadata.get("postprocess", {})}

    @property
    def predict_defaults(self) -> dict[str, Any]:
        """What :class:`~segloop.core.segment.SegmentOptions` left as None falls back to."""
        return {**DEFAULT_PREDICT, **self.metadata.get("predict", {})}

    @property
    def legend(self) -> list[ClassEntry]:
        """Name and colour of every value of this model's class map (0 first)."""
        return class_legend(self.metadata, self.config.n_classes)


def new_metadata(name: str, target: str = "instances", **extra: Any) -> dict[str, Any]:
    """Metadata skeleton for a new model."""
    return {
        "name": name,
        "version": 1,
        "parent": None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": target,
        "preprocess": dict(DEFAULT_PREPROCESS),
        "postprocess": dict(DEFAULT_POSTPROCESS),
        **extra,
    }


def new_bundle(
    config: ModelConfig, name: str, target: str = "instances", seed: int = 0, **extra: Any
) -> ModelBundle:
    """A freshly initialised network (weights drawn with ``seed``) with default metadata."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(config)
    return ModelBundle(config, network, new_metadata(name, target, **extra))


def with_distance_head(bundle: ModelBundle) -> ModelBundle:
    """A copy of an instance model with a distance head added (for fine-tuning).

    Every weight is copied; the new output channel starts as the interior logit minus
    the background logit, which already peaks inside objects, so fine-tuning starts from
    a sensible distance map rather than from noise.
    """
    if bundle.target != "instances" or bundle.config.n_classes != 3:
        raise ValueError("a distance head needs a 3-class instance model")
    if bundle.config.distance_head:
        raise ValueError(f"model {bundle.name!r} already has a distance head")
    config = replace(bundle.config, distance_head=True)
    network = build_network(config)
    state = {k: v.float() for k, v in bundle.network.state_dict().items()}
    weight, bias = state.pop("head.weight"), state.pop("head.bias")
    new_state = network.state_dict()
    new_state.update(state)
    new_state["head.weight"] = torch.cat([weight, (weight[1] - weight[0])[None]])
    new_state["head.bias"] = torch.cat([bias, (bias[1] - bias[0])[None]])
    network.load_state_dict(new_state)
    return ModelBundle(config, network, copy.deepcopy(bundle.metadata))


def widened(bundle: ModelBundle, base_channels: int) -> ModelBundle:
    """A copy of a U-Net with more channels per level that computes the same output.

    Each level keeps its old channels first; the added ones start with fresh random
    incoming weights and zero outgoing weights, so the wider network's output equals the
    old one until fine-tuning uses the new channels (Net2Net-style widening; Chen et al.
    2016). Skip concatenations map the two halves separately.

    Parameters
    ----------
    bundle : ModelBundle
        A U-Net model.
    base_channels : int
        Channels at the first level; more than the model's.
    """
    if bundle.config.arch != "unet":
        raise ValueError("only U-Nets can be widened")
    if base_channels <= bundle.config.base_channels:
        raise ValueError(f"base_channels must exceed {bundle.config.base_channels}")
    config = replace(bundle.config, base_channels=base_channels)
    network = build_network(config)
    old_state = {k: v.float() for k, v in bundle.network.state_dict().items()}
    new_state = network.state_dict()
    input_dims = {}  # parameter name -> (dim holding input channels, halves concatenated)
    for name, module in network.named_modules():
        if isinstance(module, nn.ConvTranspose2d):
            input_dims[f"{name}.weight"] = (0, False)
        elif isinstance(module, nn.Conv2d):
            input_dims[f"{name}.weight"] = (1, name.startswith("up.") and name.endswith(".0"))
    for key, fresh in new_state.items():
        old = old_state[key]
        if old.shape == fresh.shape:
            new_state[key] = old
            continue
        target = fresh.clone()
        in_dim, concat = input_dims.get(key, (None, False))
        index = [
            _old_positions(o, n, concat and dim == in_dim)
            for dim, (o, n) in enumerate(zip(old.shape, fresh.shape, strict=True))
        ]
        if in_dim is not None:  # added input channels must not change the old outputs
            added = torch.ones(fresh.shape[in_dim], dtype=torch.bool)
            added[index[in_dim]] = False
            target.index_fill_(in_dim, torch.nonzero(added).ravel(), 0.0)
        target[torch.meshgrid(*index, indexing="ij")] = old
        new_state[key] = target
    network.load_state_dict(new_state)
    metadata = copy.deepcopy(bundle.metadata)
    metadata["widened_from"] = bundle.config.base_channels
    return ModelBundle(config, network, metadata)


def _old_positions(old: int, new: int, concatenated: bool) -> torch.Tensor:
    """Where the old channels of one dimension sit in the widened dimension."""
    if not concatenated:
        return torch.arange(old)
    half_old, half_new = old // 2, new // 2
    return torch.cat([torch.arange(half_old), half_new + torch.arange(half_old)])


def shipped_models() -> dict[str, Path]:
    """Models that ship inside the package, by name."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.name[: -len(MODEL_SUFFIX)]: p for p in sorted(SHIPPED_DIR.glob(f"*{MODEL_SUFFIX}"))}


def resolve_model_path(ref: str | os.PathLike) -> Path:
    """A model reference is a shipped model's name or an existing file path (a
    ``.safetensors`` model or a bioimage.io ``.zip`` package made by ``segloop export``).

    A shipped model's bare name (``nuclei``) always means the shipped model, whatever
    the current folder holds, so a command gives the same result wherever it runs; a
    local file of that exact name is reached with a path (``./nuclei``)."""
    shipped = shipped_models()
    if str(ref) in shipped:  # also Path("nuclei"): a bare name, whatever its type
        return shipped[str(ref)]
    path = Path(ref).expanduser()
    if path.is_file():
        # "./nuclei" must not be recorded (e.g. as a version's parent) as "nuclei"
        return path.absolute() if path.name in shipped else path
    if path.exists():
        raise ModelFileError(f"{path} is not a model file")
    names = ", ".join(shipped) or "none installed"
    raise ModelFileError(f"no model file {str(ref)!r} and no shipped model of that name ({names})")


def save_model(bundle: ModelBundle, path: str | os.PathLike, half: bool = False) -> Path:
    """Write ``bundle`` atomically to ``path`` (temp file in the same folder + rename).

    Parameters
    ----------
    half : bool
        Store floating-point weights as float16 (halves the file; loaded as float32).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in bundle.network.state_dict().items():
        value = value.detach().to("cpu")
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value.contiguous().clone()
    header = {
        "format": FORMAT,
        "config": json.dumps(bundle.config.to_dict()),
        "metadata": json.dumps(bundle.metadata, default=_json_default),
    }
    try:
        with atomic_output(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)
    except OSError as exc:
        raise OSError(f"cannot write model file {path}: {_io_reason(exc)}") from exc
    except Exception as exc:  # safetensors' SafetensorError wraps the I/O error as text
        if type(exc).__name__ != "SafetensorError":
            raise
        raise OSError(f"cannot write model file {path}: {_io_reason(exc)}") from exc
    bundle.path = path
    return path


def _io_reason(exc: BaseException) -> str:
    """The operating system's reason in an I/O error (also inside safetensors' text)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    found = re.search(r'message: "([^"]+)"', text)
    return found.group(1) if found else (text.splitlines()[0] if text else type(exc).__name__)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in model metadata")


def read_header(ref: str | os.PathLike) -> tuple[ModelConfig, dict[str, Any], Path]:
    """Config and metadata of a model file without loading its weights."""
    path = resolve_model_path(ref)
    try:
        if is_package(path):
            config_dict, metadata = package_header(path)
        else:
            config_dict, metadata = read_model_header(path)
    except (HeaderError, PackageError) as exc:
        raise ModelFileError(str(exc)) from exc
    try:
        config = ModelConfig.from_dict(config_dict)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: broken model config ({exc})") from exc
    return config, metadata, path


def load_model(ref: str | os.PathLike, device: str | torch.device = "cpu") -> ModelBundle:
    """Load a model file or shipped model by name; errors name the problem."""
    from safetensors.torch import load_file

    config, metadata, path = read_header(ref)
    try:
        if is_package(path):  # the segloop model file inside the package
            from safetensors.torch import load as load_bytes

            tensors = load_bytes(package_model(path)[1])
        else:
            tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ModelFileError(f"{path}: weights cannot be read ({exc})") from exc
    try:
        network = build_network(config)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{path}: weights do not match the config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise ModelFileError(
                f"{path}: tensor {key} has shape {tuple(value.shape)}, "
                f"config expects {tuple(expected[key].shape)}"
            )
        if value.is_floating_point():
            tensors[key] = value.float()
    network.load_state_dict(tensors)
    network.to(device).eval()
    return ModelBundle(config, network, metadata, path)
