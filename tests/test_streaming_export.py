"""Export of streaming steps: torch.export and ONNX (onnxruntime), the state as inputs and outputs."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from recconv import CausalConv, RecConv1d, RecConv2d, Streamer
from recconv.streaming import (
    LayerStep,
    OnnxStep,
    export_onnx_step,
    recnext_audio_causal_tiny,
    recnext_seq_causal_tiny,
)


def onnx_steps(module, chunks, state, path):
    """Export one step, then run it in onnxruntime chunk after chunk, feeding back its state."""
    export_onnx_step(module, chunks[0], state, path)
    step, outs = OnnxStep(path), []
    for chunk in chunks:
        out, state = step(chunk, state)
        outs.append(out)
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
    got = onnx_steps(layer, chunks, layer.init_state(1, (6,)), tmp_path / "layer_step.onnx")
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
    got = onnx_steps(layer, chunks, state, tmp_path / "fixed_step.onnx")
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
    # What the strided conv gates (the GELU and the RecConv) runs under one If: on its new samples only.
    graph = onnx.load(tmp_path / "fixed_streamer.onnx").graph
    assert [node.op_type for node in graph.node].count("If") == 1


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


def test_onnx_step_names_its_inputs_and_outputs_after_the_state(tmp_path):
    layer = RecConv1d(4, kernel_size=3, level=2, causal=True).eval()
    state = layer.init_state(1, fixed_shape=True)
    export_onnx_step(layer, torch.randn(1, 4, 1), state, tmp_path / "step.onnx")
    session = OnnxStep(tmp_path / "step.onnx").session
    assert [node.name for node in session.get_inputs()] == ["chunk", *(f"state.{key}" for key in state)]
    assert [node.name for node in session.get_outputs()] == [
        "output",
        *(f"next_state.{key}" for key in state),
    ]


def test_a_stream_goes_on_in_pytorch_after_onnxruntime_and_back(tmp_path):
    """Same state keys and tensors on both sides: a stream can move between them."""
    torch.manual_seed(0)
    layer = RecConv1d(4, kernel_size=3, level=2, causal=True).eval()
    x = torch.randn(1, 4, 24)
    state = layer.init_state(1, fixed_shape=True)
    export_onnx_step(layer, x[..., :1], state, tmp_path / "step.onnx")
    steps = (OnnxStep((tmp_path / "step.onnx").read_bytes()), layer.step)
    outs = []
    with torch.no_grad():
        for t, sample in enumerate(x.split(1, dim=2)):
            out, state = steps[t // 5 % 2](sample, state)  # five samples in each, in turn
            outs.append(out)
        torch.testing.assert_close(torch.cat(outs, 2), layer(x), rtol=1e-5, atol=1e-5)


def test_export_onnx_step_refuses_a_state_that_changes_shape(tmp_path):
    layer = RecConv1d(4, kernel_size=3, level=2, causal=True).eval()
    message = (
        r"export_onnx_step: RecConv1d's state does not keep its shapes for chunks of shape \(1, 4, 3\) "
        r"\(changed: .*\): use init_state\(..., fixed_shape=True\), or a chunk length that is a multiple"
    )
    with pytest.raises(ValueError, match=message):
        export_onnx_step(layer, torch.randn(1, 4, 3), layer.init_state(1), tmp_path / "step.onnx")
    assert not (tmp_path / "step.onnx").exists()


def test_layer_step_refuses_a_module_that_cannot_step():
    with pytest.raises(TypeError, match=r"LayerStep: Linear has no step\(chunk, state\)"):
        LayerStep(nn.Linear(2, 2))


def test_onnx_step_refuses_a_file_of_another_exporter(tmp_path):
    torch.onnx.export(
        nn.Linear(2, 2).eval(), (torch.randn(1, 2),), tmp_path / "linear.onnx", dynamo=True, verbose=False
    )
    with pytest.raises(
        ValueError, match=r"linear.onnx was not written by export_onnx_step: inputs \['input'\]"
    ):
        OnnxStep(tmp_path / "linear.onnx")


def test_onnx_step_names_missing_state_keys(tmp_path):
    layer = RecConv1d(4, kernel_size=3, level=1, causal=True).eval()
    state = layer.init_state(1, fixed_shape=True)
    export_onnx_step(layer, torch.randn(1, 4, 1), state, tmp_path / "step.onnx")
    with pytest.raises(
        ValueError, match=r"OnnxStep: the state lacks \['clock'\]; expected the keys \['clock', "
    ):
        OnnxStep(tmp_path / "step.onnx")(
            torch.randn(1, 4, 1), {k: v for k, v in state.items() if k != "clock"}
        )
