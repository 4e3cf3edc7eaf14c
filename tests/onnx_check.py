"""Export a module to ONNX with dynamic sizes and compare onnxruntime's output with eager PyTorch."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnxruntime
import torch
from torch import nn
from torch.export import Dim


def export_dynamic(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export ``module`` as docs/export.md does: every axis but the channels dynamic."""
    dynamic = {axis: Dim.AUTO for axis in range(example.dim()) if axis != 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and version chatter
        torch.onnx.export(module, (example,), path, dynamo=True, dynamic_shapes=(dynamic,))


def assert_onnx_matches(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    sizes: Sequence[Sequence[int]],
    *,
    rtol: float,
    atol: float,
) -> None:
    """Export with ``example``, then run onnxruntime on inputs of every shape in ``sizes``.

    The example's sizes must leave every intermediate map at least 2 positions large: the exporter
    records a size that is 1 in the example as always 1 (see docs/export.md).
    """
    export_dynamic(module, example, path)
    (graph_input,) = onnx.load(path).graph.input
    dims = graph_input.type.tensor_type.shape.dim
    fixed = [axis for axis, dim in enumerate(dims) if axis != 1 and not dim.dim_param]
    assert not fixed, f"axes {fixed} of {path.name} were exported with fixed sizes"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in sizes:
        x = torch.randn(shape)
        (out,) = session.run(None, {graph_input.name: x.numpy()})
        with torch.no_grad():
            expected = module(x)
        torch.testing.assert_close(
            torch.from_numpy(out), expected, rtol=rtol, atol=atol, msg=lambda m: f"{shape}: {m}"
        )
