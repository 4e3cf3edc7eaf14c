"""Compilation and ONNX export give the same numbers as eager mode."""

from __future__ import annotations

import pytest
import torch

from recconv import RecConv1d, RecConv2d, RecConv3d

from .onnx_check import assert_onnx_matches

CASES = {
    "2d-paper": (lambda: RecConv2d(4, 5, 3), (2, 4, 29, 31)),
    "1d-causal": (lambda: RecConv1d(4, 5, 2, causal=True), (2, 4, 37)),
    "3d-video-transposed": (
        lambda: RecConv3d(4, 3, 2, factor=(1, 2, 2), upsample="transposed"),
        (1, 4, 5, 13, 11),
    ),
    "2d-causal-maxpool-nearest": (
        lambda: RecConv2d(4, 3, 2, upsample="nearest", downsample="maxpool", causal=1, bias=True),
        (1, 4, 9, 13),
    ),
}


@pytest.mark.parametrize("name", ["2d-paper", "1d-causal", "3d-video-transposed"])
def test_compile_fullgraph_matches_eager(name):
    make, shape = CASES[name]
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
def test_onnx_export_runs_in_onnxruntime(name, tmp_path):
    make, shape = CASES[name]
    assert_onnx_matches(make().eval(), torch.randn(shape), tmp_path / f"{name}.onnx", rtol=1e-5, atol=1e-5)
