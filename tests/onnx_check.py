"""Export a module to ONNX and compare onnxruntime's output with eager PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnxruntime
import torch
from torch import nn


def assert_onnx_matches(module: nn.Module, x: torch.Tensor, path: Path, *, rtol: float, atol: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and version chatter
        torch.onnx.export(module, (x,), path, dynamo=True, opset_version=18)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = module(x)
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=rtol, atol=atol)
