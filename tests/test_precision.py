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


@pytest.mark.parametrize("recompute", [False, True], ids=["stored", "recomputed"])
def test_bfloat16_gradients_of_a_3d_layer_on_small_channels_last_maps(recompute):
    # Its coarsest level sees (4, 1, 1) maps, on which oneDNN's bfloat16 depthwise conv3d got the
    # weight's gradient wrong from channels-last input on AVX-512 CPUs (benchmarks/onednn_bf16_conv3d.py).
    torch.manual_seed(0)
    layer = RecConv3d(24, (3, 5, 5), 3, factor=(1, 2, 2), recompute=recompute)
    x = torch.randn(2, 24, 4, 8, 8).contiguous(memory_format=torch.channels_last_3d)
    gradients = []
    for bfloat16 in (False, True):
        layer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            layer(x).float().square().sum().backward()
        gradients.append({name: p.grad.clone() for name, p in layer.named_parameters()})
    for name, expected in gradients[0].items():
        error = ((gradients[1][name] - expected).norm() / expected.norm()).item()
        assert error < 5 * BOUNDS[torch.bfloat16], f"{name}: bfloat16 gradient off by {error:.3g}"
