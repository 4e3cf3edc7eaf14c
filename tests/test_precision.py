"""Low-precision error stays at the dtype's rounding level at every depth (benchmarks/precision.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from recconv import RecConv1d, RecConv2d, RecConv3d

SIZES = {RecConv1d: (512,), RecConv2d: (48, 48), RecConv3d: (8, 24, 24)}
BOUNDS = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}  # about 4x the measured errors


@pytest.mark.parametrize("layer_class", list(SIZES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", list(BOUNDS), ids=str)
def test_relative_error_is_bounded_and_does_not_grow_with_level(layer_class, dtype):
    errors = []
    for level in range(1, 6):
        torch.manual_seed(level)
        layer = layer_class(8, 5, level, dtype=torch.float64)
        x = torch.randn(2, 8, *SIZES[layer_class], dtype=torch.float64)
        with torch.no_grad():
            reference = layer(x)
            out = copy.deepcopy(layer).to(dtype)(x.to(dtype)).double()
        errors.append(((out - reference).norm() / reference.norm()).item())
    assert max(errors) < BOUNDS[dtype], errors
    assert errors[-1] < 2 * errors[0], errors  # level 5 is no worse than level 1 beyond noise
