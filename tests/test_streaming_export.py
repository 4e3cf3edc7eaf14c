"""Export of streaming steps: torch.export and ONNX (onnxruntime), the state as inputs and outputs."""

from __future__ import annotations

import warnings

import onnxruntime
import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from recconv import CausalConv, RecConv1d, RecConv2d, Streamer
from recconv.streaming import recnext_audio_causal_tiny, recnext_seq_causal_tiny


class LayerStep(nn.Module):
    """``layer.step`` as a module's forward, the form export tools take."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, chunk: torch.Tensor, state: dict[str, torch.Tensor]):
        return self.layer.step(chunk, state)


def onnx_steps(module, chunks, state, path):
    """Export one step, then run it in onnxruntime chunk after chunk, feeding back its state."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and version chatter
        torch.onnx.export(module, (chunks[0],), path, kwargs={"state": state}, dynamo=True, opset_version=18)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    keys = list(state)
    outs = []
    for chunk in chunks:
        inputs, _ = tree_flatten((chunk, state))
        results = session.run(None, dict(zip(names, (t.numpy() for t in inputs))))
        outs.append(torch.from_numpy(results[0]))
        state = dict(zip(keys, (torch.from_numpy(r) for r in results[1:])))
    return torch.cat(outs, -1)


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    return RecConv2d(4, kernel_size=3, level=2, causal=1, upsample="linear", downsample="avgpool").eval()


def test_layer_step_torch_export(layer):
    state = layer.init_state(1, (6,))
    chunk = torch.randn(1, 4, 6, 8)
    _, state = layer.step(chunk, state)  # a state with history: started flags set, tails filled
    exported = torch.export.export(LayerStep(layer).eval(), (chunk, state))
    out, new_state = exported.module()(chunk, state)
    expected, expected_state = layer.step(chunk, state)
    torch.testing.assert_close(out, expected)
    for key, value in expected_state.items():
        torch.testing.assert_close(new_state[key], value)


def test_layer_step_onnx_streams_like_offline(layer, tmp_path):
    x = torch.randn(1, 4, 6, 24)
    chunks = list(x.split(8, dim=3))  # a multiple of factor**level: the state keeps its shapes
    got = onnx_steps(LayerStep(layer).eval(), chunks, layer.init_state(1, (6,)), tmp_path / "layer_step.onnx")
    with torch.no_grad():
        torch.testing.assert_close(got, layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3])
def test_fixed_shape_step_exports_for_any_chunk_length(layer, chunk):
    x = torch.randn(1, 4, 6, 4 * chunk)
    chunks = list(x.split(chunk, dim=3))
    state = layer.init_state(1, (6,), fixed_shape=True)
    exported = torch.export.export(LayerStep(layer).eval(), (chunks[0], state)).module()
    outs = []
    with torch.no_grad():
        for piece in chunks:  # one graph for every phase of the strides
            out, state = exported(piece, state)
            outs.append(out)
        torch.testing.assert_close(torch.cat(outs, 3), layer(x), rtol=1e-5, atol=1e-5)


def test_fixed_shape_step_onnx_streams_single_samples(layer, tmp_path):
    x = torch.randn(1, 4, 6, 10)
    chunks = list(x.split(1, dim=3))
    state = layer.init_state(1, (6,), fixed_shape=True)
    got = onnx_steps(LayerStep(layer).eval(), chunks, state, tmp_path / "fixed_step.onnx")
    with torch.no_grad():
        torch.testing.assert_close(got, layer(x), rtol=1e-5, atol=1e-5)


def test_fixed_shape_streamer_exports_one_graph_for_single_samples(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        CausalConv(2, 4, 3, 2, causal_axis=0), nn.GELU(), RecConv1d(4, level=2, causal=True)
    )
    streamer = Streamer(model.eval())
    x = torch.randn(1, 2, 20)
    samples = list(x.split(1, dim=2))
    state = streamer.init_state(1, in_channels=2, fixed_shape=True)
    with torch.no_grad():
        held = model(x).repeat_interleave(2, 2)  # a new output every second sample, held in between
        exported = torch.export.export(streamer, (samples[0], state)).module()
        outs, exported_state = [], state
        for sample in samples:
            out, exported_state = exported(sample, exported_state)
            outs.append(out)
        torch.testing.assert_close(torch.cat(outs, 2), held, rtol=1e-5, atol=1e-5)
        got = onnx_steps(streamer, samples, state, tmp_path / "fixed_streamer.onnx")
        torch.testing.assert_close(got, held, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_streaming_preset_exports(tmp_path):
    torch.manual_seed(0)
    model = recnext_seq_causal_tiny(in_chans=2).eval()
    streamer = Streamer(model)
    x = torch.randn(1, 2, 192)
    chunks = list(x.split(64, dim=2))
    state = streamer.init_state(1, in_channels=2)
    with torch.no_grad():
        exported = torch.export.export(streamer, (chunks[0], state))
        out, _ = exported.module()(chunks[0], state)
        torch.testing.assert_close(out, streamer(chunks[0], state)[0])
        got = onnx_steps(streamer, chunks, state, tmp_path / "preset_step.onnx")
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)


def test_audio_preset_exports_for_single_frames(tmp_path):
    """The keyword spotter on device: one 10 ms log-mel frame per ONNX call, one graph for every phase."""
    torch.manual_seed(0)
    model = recnext_audio_causal_tiny().eval()
    streamer = Streamer(model)
    frames = torch.randn(1, 1, 40, 40)
    state = streamer.init_state(1, (40,), fixed_shape=True)
    with torch.no_grad():
        got = onnx_steps(streamer, list(frames.split(1, dim=3)), state, tmp_path / "audio_frame.onnx")
        held = model(frames).repeat_interleave(16, 3).narrow(3, 0, 40)
        torch.testing.assert_close(got, held, rtol=1e-4, atol=1e-4)
