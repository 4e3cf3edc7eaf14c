"""The paper's formula written plainly with nn.ConvNd and F.interpolate: the semantics to beat.

This mirrors the official 2D RecConv (github.com/suous/RecNeXt) generalized to any rank, with no
layout or autograd tricks. Benchmarks compare against it and check that recconv agrees with it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MODE = ("linear", "bilinear", "trilinear")


class PaperRecConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, level: int, spatial_dims: int, factor=2) -> None:
        super().__init__()
        conv = _CONV[spatial_dims - 1]
        options = {"in_channels": channels, "out_channels": channels, "groups": channels, "bias": False,
                   "kernel_size": kernel_size, "padding": kernel_size // 2}  # fmt: skip
        self.mode = _MODE[spatial_dims - 1]
        self.level = level
        self.down = conv(stride=factor, **options)
        self.convs = nn.ModuleList(conv(**options) for _ in range(level + 1))

    def forward(self, x: Tensor) -> Tensor:
        features = []
        current = x
        for _ in range(self.level):
            size = current.shape[2:]
            current = self.down(current)
            features.append((current, size))
        h = 0
        for conv, (feature, size) in zip(self.convs, reversed(features)):
            h = F.interpolate(conv(feature + h), size=size, mode=self.mode, align_corners=False)
        return self.convs[self.level](x + h)
