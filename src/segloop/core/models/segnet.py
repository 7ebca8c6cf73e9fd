"""SegNet (Badrinarayanan et al. 2017): decoder upsamples with stored max-pool indices."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class SegNet(nn.Module):
    """Encoder of VGG-style conv+BN+ReLU blocks with index-returning 2x2 max-pools;
    decoder of max-unpooling with those indices followed by conv+BN+ReLU blocks.

    No learned up-sampling and no copied feature maps: only the pooling indices travel
    from encoder to decoder. Widths double per level up to ``8 * base_channels`` (VGG16:
    64, 128, 256, 512, 512). Input sides must be divisible by ``2 ** depth``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        convs = config.convs_per_level or (2, 2, 3, 3, 3)[: config.depth]
        if len(convs) != config.depth:
            raise ValueError("convs_per_level needs one entry per level")
        widths = [config.base_channels * min(2**level, 8) for level in range(config.depth)]
        self.encoder = nn.ModuleList()
        in_ch = config.in_channels
        for width, n_convs in zip(widths, convs, strict=True):
            layers: list[nn.Module] = []
            for i in range(n_convs):
                layers += _conv_bn_relu(in_ch if i == 0 else width, width)
            self.encoder.append(nn.Sequential(*layers))
            in_ch = width
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.decoder = nn.ModuleList()
        for level in reversed(range(config.depth)):
            width = widths[level]
            out_width = widths[level - 1] if level > 0 else widths[0]
            layers = []
            for i in range(convs[level]):
                last = i == convs[level] - 1
                layers += _conv_bn_relu(width, out_width if last else width)
            self.decoder.append(nn.Sequential(*layers))
        self.head = nn.Conv2d(widths[0], config.n_outputs, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits, then the distance logit if any (N, n_outputs, H, W)."""
        indices: list[torch.Tensor] = []
        sizes: list[torch.Size] = []
        for block in self.encoder:
            x = block(x)
            sizes.append(x.shape)
            x, idx = self.pool(x)
            indices.append(idx)
        for block, idx, size in zip(self.decoder, reversed(indices), reversed(sizes), strict=True):
            x = self.unpool(x, idx, output_size=size[-2:])
            x = block(x)
        return self.head(x)
