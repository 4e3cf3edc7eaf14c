"""Compilation and ONNX export give the same numbers as eager mode; ONNX models take any size."""

from __future__ import annotations

import pytest
import torch

from recconv import RecAttn1d, RecAttn2d, RecAttn3d, RecConv1d, RecConv2d, RecConv3d

from .helpers import built_in_op_combinations
from .onnx_check import assert_onnx_matches

# name: (layer, example input of the export, further input shapes). Every case runs in onnxruntime on
# three shapes with a new batch size and sizes not divisible by 2**level; one goes below 2**level.
CASES = {
    "1d-paper": (lambda: RecConv1d(4, 5, 3), (2, 4, 37), [(3, 4, 50), (1, 4, 6)]),
    "1d-causal": (lambda: RecConv1d(4, 5, 2, causal=True), (2, 4, 37), [(3, 4, 64), (1, 4, 101)]),
    "2d-paper": (lambda: RecConv2d(4, 5, 3), (2, 4, 29, 31), [(1, 4, 64, 48), (3, 4, 17, 40)]),
    "2d-causal-maxpool-nearest": (
        lambda: RecConv2d(4, 3, 2, upsample="nearest", downsample="maxpool", causal=1, bias=True),
        (2, 4, 9, 13),
        [(1, 4, 16, 16), (3, 4, 11, 7)],
    ),
    "3d-video-transposed": (
        lambda: RecConv3d(4, 3, 2, factor=(1, 2, 2), upsample="transposed"),
        (2, 4, 5, 13, 11),
        [(1, 4, 3, 16, 16), (3, 4, 7, 9, 21)],
    ),
    "1d-attn": (lambda: RecAttn1d(8, 2), (2, 8, 37), [(3, 8, 64), (1, 8, 101)]),
    # Variant 2 normalizes its n x n scores by a row mean: the example keeps n > 1 (docs/export.md).
    "2d-attn-quadratic": (lambda: RecAttn2d(8, 2, variant=2), (2, 8, 13, 11), [(1, 8, 2, 2), (3, 8, 32, 20)]),
    "3d-attn": (
        lambda: RecAttn3d(8, 2, factor=(1, 2, 2)),
        (2, 8, 5, 13, 11),
        [(1, 8, 3, 16, 16), (3, 8, 7, 9, 21)],
    ),
}


@pytest.mark.parametrize(
    "name",
    ["2d-paper", "1d-causal", pytest.param("3d-video-transposed", marks=pytest.mark.slow)],  # 3D: minutes
)
def test_compile_fullgraph_matches_eager(name):
    make, shape, _ = CASES[name]
    layer = make()
    x = torch.randn(shape, requires_grad=True)
    expected = layer(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_export_with_dynamic_sizes_runs_in_onnxruntime(name, tmp_path):
    make, example, more = CASES[name]
    layer = make().eval()
    sizes = [example, *more]
    assert_onnx_matches(layer, torch.randn(example), tmp_path / f"{name}.onnx", sizes, rtol=1e-5, atol=1e-5)


SWEEP_SHAPES = {  # rank: the export's example, then further input shapes (as in CASES)
    1: [(2, 4, 37), (3, 4, 50), (1, 4, 6)],
    2: [(2, 4, 21, 23), (1, 4, 32, 16), (3, 4, 17, 40)],
    3: [(2, 4, 9, 13, 11), (1, 4, 8, 16, 16), (3, 4, 7, 9, 21)],
}


@pytest.mark.slow
@pytest.mark.parametrize("downsample, upsample, causal", built_in_op_combinations())
@pytest.mark.parametrize("d", [1, 2, 3])
def test_every_built_in_op_exports_to_onnx_with_dynamic_sizes(d, downsample, upsample, causal, tmp_path):
    layer = (RecConv1d, RecConv2d, RecConv3d)[d - 1](
        4, 3, 2, downsample=downsample, upsample=upsample, causal=causal
    )
    example, *more = SWEEP_SHAPES[d]
    assert_onnx_matches(
        layer.eval(), torch.randn(example), tmp_path / "layer.onnx", [example, *more], rtol=1e-5, atol=1e-5
    )
