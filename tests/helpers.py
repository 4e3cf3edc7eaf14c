"""Small helpers shared by several test modules."""

from __future__ import annotations

import torch
from torch import nn

from recconv.ops import DOWNSAMPLE_OPS, UPSAMPLE_OPS


def randomize_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so the norms and their folding count."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=generator))
                m.bias.copy_(0.2 * torch.randn(n, generator=generator))
    return module


def built_in_op_combinations() -> list[tuple[str, str, bool]]:
    """Every ``(downsample, upsample, causal)`` of the built-in ops that a layer accepts: a Haar block
    reads its own future samples, so it refuses a causal axis."""
    return [
        (down, up, causal)
        for down in sorted(DOWNSAMPLE_OPS)
        for up in sorted(UPSAMPLE_OPS)
        for causal in (False, True)
        if not (causal and down == "haar")
    ]
