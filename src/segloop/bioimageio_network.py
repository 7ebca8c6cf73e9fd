"""Standalone segloop network for bioimage.io packages: needs PyTorch only, not segloop.

``segloop export`` copies this file into a package as ``segloop_network.py``; it is the
``architecture`` of the package's ``pytorch_state_dict`` weights and the source of its
TorchScript weights. :class:`SegloopNetwork` wraps the same U-Net or SegNet layers as
``segloop.core.models`` (identical parameter names under ``net.``) and adds what segloop
does around a single prediction tile, so any image size works and the output equals
segloop's own:

1. mirror-pad the image (numpy's ``reflect`` mode, repeated for small images) by
   ``context`` pixels at the top and left and up to a multiple of the network's pooling
   factor at the bottom and right: into one square tile, as segloop pads an image that
   fits its default 512-px tile (longer side up to 576 px), else per axis;
2. run the network;
3. softmax over the class logits; sigmoid of the distance logit (models with a distance
   head) after them;
4. crop back to the input's size.

The forward pass is TorchScript-compatible (``torch.jit.script``).
"""

from __future__ import annotations

from typing import List, Optional  # noqa: UP035 (TorchScript needs typing names)

import torch
from torch import nn


def conv_block(in_ch: int, out_ch: int, batch_norm: bool, n_convs: int = 2) -> nn.Sequential:
    """``n_convs`` x (same-padded 3x3 conv [+ BN] + ReLU), as segloop's ``conv_block``."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers.append(
            nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Same-padded U-Net (Ronneberger et al. 2015): ``depth`` levels, ``base_channels``
    doubled per level, skip connections, 1x1 head with ``n_outputs`` channels."""

    def __init__(
        self, depth: int, base_channels: int, batch_norm: bool, in_channels: int, n_outputs: int
    ) -> None:
        super().__init__()
        widths = [base_channels * 2**level for level in range(depth)]
        self.down = nn.ModuleList()
        in_ch = in_channels
        for width in widths:
            self.down.append(conv_block(in_ch, width, batch_norm))
            in_ch = width
        self.pool = nn.MaxPool2d(2)
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upconv.append(nn.ConvTranspose2d(width * 2, width, kernel_size=2, stride=2))
            self.up.append(conv_block(width * 2, width, batch_norm))
        self.head = nn.Conv2d(widths[0], n_outputs, kernel_size=1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: List[torch.Tensor] = []  # noqa: UP006
        for level, block in enumerate(self.down):
            x = block(x)
            if level < self.depth - 1:
                skips.append(x)
                x = self.pool(x)
        for level, (upconv, block) in enumerate(zip(self.upconv, self.up)):  # noqa: B905
            x = upconv(x)
            x = block(torch.cat([skips[len(skips) - 1 - level], x], dim=1))
        return self.head(x)


class SegNet(nn.Module):
    """SegNet (Badrinarayanan et al. 2017) as segloop's: VGG-style encoder, decoder
    upsampling with the stored max-pool indices."""

    def __init__(
        self,
        depth: int,
        base_channels: int,
        in_channels: int,
        n_outputs: int,
        convs_per_level: List[int],  # noqa: UP006
    ) -> None:
        super().__init__()
        widths = [base_channels * min(2**level, 8) for level in range(depth)]
        self.encoder = nn.ModuleList()
        in_ch = in_channels
        for width, n_convs in zip(widths, convs_per_level):  # noqa: B905
            self.encoder.append(_vgg_block(in_ch, width, width, n_convs))
            in_ch = width
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            out_width = widths[level - 1] if level > 0 else widths[0]
            self.decoder.append(
                _vgg_block(widths[level], widths[level], out_width, convs_per_level[level])
            )
        self.head = nn.Conv2d(widths[0], n_outputs, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices: List[torch.Tensor] = []  # noqa: UP006
        sizes: List[List[int]] = []  # noqa: UP006
        for block in self.encoder:
            x = block(x)
            sizes.append([x.shape[-2], x.shape[-1]])
            x, idx = self.pool(x)
            indices.append(idx)
        for level, block in enumerate(self.decoder):
            back = len(indices) - 1 - level
            x = nn.functional.max_unpool2d(
                x, indices[back], kernel_size=[2, 2], stride=[2, 2], output_size=sizes[back]
            )
            x = block(x)
        return self.head(x)


def _vgg_block(in_ch: int, width: int, out_width: int, n_convs: int) -> nn.Sequential:
    """``n_convs`` x (3x3 conv without bias + BN + ReLU); the last one maps to ``out_width``."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        out_ch = out_width if i == n_convs - 1 else width
        layers += [
            nn.Conv2d(in_ch if i == 0 else width, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def reflect_index(size: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Source indices of numpy's ``np.pad(..., mode="reflect")`` along one axis, for any
    padding (repeated reflection when the padding exceeds the axis)."""
    index = torch.arange(-before, size + after, device=device)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = torch.remainder(index, period)
    return torch.where(index >= size, period - index, index)


class SegloopNetwork(nn.Module):
    """segloop's network with its tile padding and output activations (see module doc).

    Parameters
    ----------
    arch : {"unet", "segnet"}
        Network family (same-padded).
    depth, base_channels, batch_norm, in_channels, n_classes, distance_head,
    convs_per_level
        The fields of segloop's ``ModelConfig``.
    context : int
        Mirrored context added on every side before the network runs (segloop predicts
        with 32 px).
    square_up_to : int
        Images whose longer side is at most this are padded to one square tile exactly
        as segloop pads them (576 px: what its default 512-px tiles take in one piece);
        larger ones are padded per axis (segloop would tile them).
    """

    def __init__(
        self,
        arch: str = "unet",
        depth: int = 5,
        base_channels: int = 16,
        batch_norm: bool = True,
        in_channels: int = 1,
        n_classes: int = 3,
        distance_head: bool = False,
        convs_per_level: Optional[List[int]] = None,  # noqa: UP006, UP045
        context: int = 32,
        square_up_to: int = 576,
    ) -> None:
        super().__init__()
        n_outputs = n_classes + int(distance_head)
        if arch == "unet":
            self.net = UNet(depth, base_channels, batch_norm, in_channels, n_outputs)
            self.multiple = 2 ** (depth - 1)
        elif arch == "segnet":
            convs = list(convs_per_level or [2, 2, 3, 3, 3][:depth])
            self.net = SegNet(depth, base_channels, in_channels, n_outputs, convs)
            self.multiple = 2**depth
        else:
            raise ValueError(f"unknown architecture {arch!r}")
        self.n_classes = n_classes
        self.distance_head = distance_head
        self.context = context
        self.square_up_to = square_up_to

    def _round_up(self, size: int) -> int:
        return (size + self.multiple - 1) // self.multiple * self.multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) normalised image -> (N, n_outputs, H, W) probabilities."""
        height, width = x.shape[-2], x.shape[-1]
        c = self.context
        rows_to = self._round_up(height + 2 * c)
        cols_to = self._round_up(width + 2 * c)
        if max(height, width) <= self.square_up_to:
            # segloop's single-tile plan: one square tile, context halved on small ones
            rows_to = cols_to = self._round_up(max(height, width) + 2 * c)
            c = min(2 * c, rows_to // 2) // 2
        rows = reflect_index(height, c, rows_to - height - c, x.device)
        cols = reflect_index(width, c, cols_to - width - c, x.device)
        padded = x.index_select(-2, rows).index_select(-1, cols)
        logits = self.net(padded)[:, :, c : c + height, c : c + width]
        probs = torch.softmax(logits[:, : self.n_classes], dim=1)
        if self.distance_head:
            probs = torch.cat([probs, torch.sigmoid(logits[:, self.n_classes :])], dim=1)
        return probs
