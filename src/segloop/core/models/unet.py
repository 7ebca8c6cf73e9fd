"""U-Net (Ronneberger et al. 2015) with valid or same padding."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


def conv_block(in_ch: int, out_ch: int, padding: int, batch_norm: bool, n_convs: int = 2):
    """``n_convs`` x (3x3 conv [+ BN] + ReLU)."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers.append(
            nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=padding, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def center_crop(features: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop the centre ``height x width`` of a (N, C, H, W) tensor (copy-and-crop skip)."""
    top = (features.shape[-2] - height) // 2
    left = (features.shape[-1] - width) // 2
    return features[..., top : top + height, left : left + width]


class UNet(nn.Module):
    """U-Net: contracting path, expanding path with up-convolutions and skip connections.

    With ``config.padding == "valid"`` every 3x3 convolution is unpadded, so the output
    is smaller than the input (572 -> 388 for the classic configuration) and skip
    connections are centre-cropped, as in the paper. With ``"same"`` the output has the
    input's size, which must be divisible by ``2 ** (depth - 1)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        pad = 1 if config.padding == "same" else 0
        widths = [config.base_channels * 2**level for level in range(config.depth)]
        self.down = nn.ModuleList()
        in_ch = config.in_channels
        for width in widths:
            self.down.append(conv_block(in_ch, width, pad, config.batch_norm))
            in_ch = width
        self.pool = nn.MaxPool2d(2)
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upconv.append(nn.ConvTranspose2d(width * 2, width, kernel_size=2, stride=2))
            self.up.append(conv_block(width * 2, width, pad, config.batch_norm))
        self.head = nn.Conv2d(widths[0], config.n_outputs, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits, then the distance logit if any (N, n_outputs, H_out, W_out)."""
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for upconv, block, skip in zip(self.upconv, self.up, reversed(skips), strict=True):
            x = upconv(x)
            x = torch.cat([center_crop(skip, x.shape[-2], x.shape[-1]), x], dim=1)
            x = block(x)
        return self.head(x)
