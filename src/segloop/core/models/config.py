"""JSON-serialisable network configurations and the named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

ARCHITECTURES = ("unet", "segnet")
PADDINGS = ("same", "valid")
#: Allowed ranges of the integer fields (inclusive): anything outside cannot be a network
#: that trains or runs on one machine (``depth`` 9 already needs 256-px-divisible input).
INT_RANGES: dict[str, tuple[int, int]] = {
    "depth": (1, 8),
    "base_channels": (1, 512),
    "in_channels": (1, 16),
    "n_classes": (2, 255),
}
MAX_CONVS_PER_LEVEL = 8


def _check_int(name: str, value: Any) -> None:
    low, high = INT_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"model config {name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"model config {name} must be between {low} and {high} (got {value})")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network (weights come separately).

    Parameters
    ----------
    arch : {"unet", "segnet"}
        Network family.
    depth : int
        Number of resolution levels (``depth - 1`` max-pool steps).
    base_channels : int
        Feature channels at the first level; doubled at every level down.
    padding : {"same", "valid"}
        ``"valid"`` is the original U-Net (unpadded 3x3 convolutions, the output is
        smaller than the input); ``"same"`` keeps the spatial size.
    batch_norm : bool
        Batch normalisation after every 3x3 convolution.
    in_channels : int
        Image channels the network reads (1 for grayscale).
    n_classes : int
        Output channels (softmax classes).
    distance_head : bool
        One more output channel after the classes: a per-pixel regression (sigmoid) of
        the distance to the object's edge, divided by the object's largest such distance
        (1 at its centre, 0 at its edge and on background). Instance models use it to seed
        and split touching objects (see :func:`segloop.core.targets.normalized_distance`).
    convs_per_level : tuple of int or None
        SegNet only: 3x3 convolutions per encoder level (VGG16: 2, 2, 3, 3, 3).
    """

    arch: str = "unet"
    depth: int = 5
    base_channels: int = 16
    padding: str = "same"
    batch_norm: bool = True
    in_channels: int = 1
    n_classes: int = 3
    convs_per_level: tuple[int, ...] | None = None
    distance_head: bool = False

    @property
    def n_outputs(self) -> int:
        """Channels the network's head produces (classes, then the distance if any)."""
        return self.n_classes + int(self.distance_head)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        for name in INT_RANGES:
            _check_int(name, getattr(self, name))
        for name in ("batch_norm", "distance_head"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model config {name} must be true or false")
        if self.convs_per_level is not None:
            convs = self.convs_per_level
            if len(convs) != self.depth or not all(
                isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_CONVS_PER_LEVEL
                for c in convs
            ):
                raise ValueError(
                    f"model config convs_per_level must hold {self.depth} integers between 1 "
                    f"and {MAX_CONVS_PER_LEVEL}, got {list(convs)}"
                )
        if self.arch == "segnet" and self.padding != "same":
            raise ValueError("SegNet uses same-padded convolutions only")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        out = asdict(self)
        if out["convs_per_level"] is not None:
            out["convs_per_level"] = list(out["convs_per_level"])
        if not out["distance_head"]:
            del out["distance_head"]  # files without the head stay as before
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        data = dict(data)
        convs = data.get("convs_per_level")
        if convs is not None:
            if not isinstance(convs, (list, tuple)):
                raise ValueError(f"model config convs_per_level must be a list, got {convs!r}")
            data["convs_per_level"] = tuple(convs)
        return cls(**data)

    def with_classes(self, n_classes: int, in_channels: int | None = None) -> ModelConfig:
        """Copy with another number of output classes (and optionally input channels)."""
        return replace(
            self,
            n_classes=n_classes,
            in_channels=self.in_channels if in_channels is None else in_channels,
        )


PRESETS: dict[str, ModelConfig] = {
    # Fast CPU network: same-padded, batch norm, base 16, four 2x2 pooling steps (5
    # resolution levels, 16..256 channels, about 1.9 M parameters).
    "unet": ModelConfig(arch="unet", depth=5, base_channels=16, padding="same", batch_norm=True),
    # The original U-Net (Ronneberger et al. 2015): 5 levels, 64..1024 channels, valid convs.
    "unet-classic": ModelConfig(
        arch="unet", depth=5, base_channels=64, padding="valid", batch_norm=False
    ),
    # SegNet with the VGG16 encoder layout (13 convs), full width.
    "segnet-classic": ModelConfig(
        arch="segnet", depth=5, base_channels=64, batch_norm=True, convs_per_level=(2, 2, 3, 3, 3)
    ),
    # Narrow SegNet with the same structure for CPU use.
    "segnet": ModelConfig(
        arch="segnet", depth=5, base_channels=16, batch_norm=True, convs_per_level=(2, 2, 3, 3, 3)
    ),
}


def preset(name: str, n_classes: int = 3, in_channels: int = 1) -> ModelConfig:
    """Return the named preset configuration with the given classes and input channels."""
    if name not in PRESETS:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].with_classes(n_classes, in_channels)
