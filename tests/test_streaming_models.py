"""Model streaming: Streamer and the causal presets give the offline output chunk by chunk."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch._dynamo.testing import CompileCounter

import recconv
from recconv import RecConv1d, RecConv2d, RecConvNd
from recconv.models import create_model
from recconv.streaming import (
    CausalConv,
    MeanOver,
    Streamer,
    recnext_audio_causal_tiny,
    recnext_seq_causal_tiny,
)

from .strategies import chunkings


def randomized(model: nn.Module) -> nn.Module:
    """Float64, eval mode, with BatchNorm statistics and affine parameters that are not the identity."""
    torch.manual_seed(0)
    model = model.double().eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    return model


def stream(streamer: Streamer, x: torch.Tensor, chunks: list[int], fixed_shape: bool = False) -> torch.Tensor:
    dim = streamer.axis + 2
    other = [s for i, s in enumerate(x.shape[2:]) if i != streamer.axis]
    state = streamer.init_state(x.shape[0], other, in_channels=x.shape[1], fixed_shape=fixed_shape)
    outs = []
    for chunk in x.split(chunks, dim=dim):
        out, state = streamer(chunk, state)
        outs.append(out)
    return torch.cat(outs, dim)


AUDIO = randomized(recnext_audio_causal_tiny())
SEQ = randomized(recnext_seq_causal_tiny(in_chans=2))
AUDIO_STREAMER, SEQ_STREAMER = Streamer(AUDIO), Streamer(SEQ)


@settings(max_examples=5)
@given(st.data())
def test_audio_preset_streams_exactly(data):
    x = torch.randn(1, 1, 16, 70, dtype=torch.float64)
    chunks = data.draw(chunkings(70))
    torch.testing.assert_close(stream(AUDIO_STREAMER, x, chunks), AUDIO(x), rtol=0, atol=1e-12)


@settings(max_examples=5)
@given(st.data())
def test_seq_preset_streams_exactly(data):
    x = torch.randn(2, 2, 150, dtype=torch.float64)
    chunks = data.draw(chunkings(150))
    torch.testing.assert_close(stream(SEQ_STREAMER, x, chunks), SEQ(x), rtol=0, atol=1e-12)


@settings(max_examples=3)
@given(st.data())
def test_fixed_shape_states_hold_each_output_until_the_next(data):
    """With a fixed-shape state the output has one sample per input sample: the latest output, new at
    every stride-th input sample (16 for the audio preset, 32 for the sequence one)."""
    for streamer, x, stride in (
        (AUDIO_STREAMER, torch.randn(1, 1, 16, 70, dtype=torch.float64), 16),
        (SEQ_STREAMER, torch.randn(2, 2, 100, dtype=torch.float64), 32),
    ):
        dim = streamer.axis + 2
        got = stream(streamer, x, data.draw(chunkings(x.shape[dim])), fixed_shape=True)
        expected = streamer.model(x)
        assert got.shape[dim] == x.shape[dim]
        held = expected.repeat_interleave(stride, dim).narrow(dim, 0, x.shape[dim])
        torch.testing.assert_close(got, held, rtol=0, atol=1e-12)


def test_a_fixed_shape_streamer_compiles_once_for_every_phase():
    model = recnext_seq_causal_tiny(in_chans=2).eval()
    streamer = Streamer(model)
    counter = CompileCounter()
    step = torch.compile(streamer, backend=counter, fullgraph=True)
    state = streamer.init_state(1, in_channels=2, fixed_shape=True)
    x = torch.randn(1, 2, 70)
    with torch.no_grad():
        outs = []
        for sample in x.split(1, dim=2):
            out, state = step(sample, state)
            outs.append(out)
        torch.testing.assert_close(torch.cat(outs, 2)[..., ::32], model(x), rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1


@pytest.mark.parametrize(
    ("builder", "entry", "axis"),
    [(recnext_audio_causal_tiny, "recnext_audio_tiny", 1), (recnext_seq_causal_tiny, "recnext_seq_tiny", 0)],
)
def test_causal_presets_have_the_recconvs_of_their_model_table_entry(builder, entry, axis):
    def recconvs(model: nn.Module) -> list[tuple]:
        layers = [m for m in model.modules() if isinstance(m, RecConvNd)]
        return [(m.in_channels, m.kernel_size, m.level, m.factor, m.upsample, m.downsample) for m in layers]

    model = builder()
    assert recconvs(model) == recconvs(create_model(entry, device="meta"))
    assert {m.causal_axis for m in model.modules() if isinstance(m, RecConvNd)} == {axis}


@pytest.mark.parametrize(
    ("builder", "shape"),
    [(recnext_audio_causal_tiny, (1, 1, 16, 1280)), (recnext_seq_causal_tiny, (1, 1, 5120))],
)
def test_receptive_field_of_a_causal_preset_is_the_widest_span_its_outputs_read(builder, shape):
    # The theory walks through CausalConv and MeanOver (their input_window); gradients show what is read.
    model = randomized(builder())
    field = recconv.receptive_field(model)
    assert field[:-1] == (math.inf,) * (len(shape) - 3)  # the head pools the other axes
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    out = model(x)
    spans = []
    for position in range(out.shape[-1] - 8, out.shape[-1]):  # 8: every phase of the RecConvs' strides
        (grad,) = torch.autograd.grad(out[..., position].sum(), x, retain_graph=True)
        read = grad.abs().flatten(0, -2).sum(0).nonzero()
        spans.append(int(read.max() - read.min()) + 1)
    assert max(spans) == field[-1]


def test_receptive_field_through_a_strided_causal_conv():
    conv = CausalConv(1, 2, (3, 5), (2, 3), causal_axis=1, spatial_dims=2)
    model = nn.Sequential(conv, RecConv2d(2, 3, level=0, causal=1))
    # The RecConv reads 3 conv outputs per axis (centered in frequency, the last 3 in time); 3 outputs
    # of a conv of kernel k and stride s read 2 * s + k inputs.
    assert recconv.receptive_field(model) == (2 * 2 + 3, 2 * 3 + 5)


def test_fused_presets_stream_what_the_unfused_ones_compute():
    model = randomized(recnext_audio_causal_tiny())
    x = torch.randn(1, 1, 16, 70, dtype=torch.float64)
    expected = model(x)
    fused = model.fuse()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    torch.testing.assert_close(stream(Streamer(fused), x, [1, 5, 64]), expected, rtol=0, atol=1e-12)


def test_presets_stream_one_frame_at_a_time_float32():
    model = recnext_audio_causal_tiny().eval()
    x = torch.randn(1, 1, 40, 48)
    torch.testing.assert_close(stream(Streamer(model), x, [1] * 48), model(x), rtol=0, atol=1e-5)


def test_streamer_state_is_not_changed():
    streamer = Streamer(SEQ)
    state = streamer.init_state(1, in_channels=2)
    saved = {key: value.clone() for key, value in state.items()}
    out, _ = streamer(torch.randn(1, 2, 40, dtype=torch.float64), state)
    assert all(torch.equal(value, saved[key]) for key, value in state.items())
    assert out.shape == (1, 10, 2)


def test_a_copied_streamer_streams_its_own_model():
    streamer = Streamer(nn.Sequential(RecConv1d(4, level=2, causal=True), nn.GELU()).double().eval())
    state = streamer.init_state(1)
    twin = copy.deepcopy(streamer)  # mid-stream: it keeps the state's layout
    with torch.no_grad():
        twin.model[0].convs[0].weight.mul_(2)
    x = torch.randn(1, 4, 9, dtype=torch.float64)
    torch.testing.assert_close(twin(x, state)[0], twin.model(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(streamer(x, state)[0], streamer.model(x), rtol=0, atol=1e-12)


def test_causal_conv_matches_nn_conv_on_padded_input():
    conv = CausalConv(3, 4, (3, 5), (2, 3), causal_axis=1, spatial_dims=2)
    x = torch.randn(2, 3, 9, 20)
    reference = conv.conv(nn.functional.pad(x, (4, 0)))
    torch.testing.assert_close(conv(x), reference)


# One test per promised error message.


@pytest.mark.parametrize(
    "model, message",
    [
        (
            nn.Sequential(RecConv1d(4, causal=True), nn.Conv1d(4, 4, 3, padding=1)),
            "Streamer: cannot stream '1' (Conv1d): it mixes along spatial axis 0 (kernel 3, stride 1, padding 1); "
            "use CausalConv",
        ),
        (
            nn.Sequential(RecConv1d(4, causal=True), nn.BatchNorm1d(4)),
            "Streamer: cannot stream '1' (BatchNorm1d): it is in training mode; call model.eval() first",
        ),
        (
            nn.Sequential(RecConv2d(4, causal=1), RecConv2d(4, causal=0)),
            "Streamer: cannot stream '1' (RecConv2d): it is not causal along spatial axis 1 (causal=0)",
        ),
        (
            nn.Sequential(RecConv2d(4, causal=1), nn.Linear(4, 4)),
            "Streamer: cannot stream '1' (Linear): it is neither causal nor applied to each time step alone",
        ),
        (
            nn.Sequential(RecConv2d(4, causal=1), MeanOver((2, 3))),
            "Streamer: cannot stream 'mean' (method): a reduction must name its dims, keep them, and leave dim 3 "
            "(time) alone",
        ),
        (
            nn.Sequential(RecConv1d(4, causal=True), nn.Flatten()),
            "Streamer: cannot stream '1' (Flatten): it is neither causal nor applied to each time step alone",
        ),
    ],
    ids=["centered-conv", "training-norm", "other-axis", "linear", "time-pooling", "flatten"],
)
def test_first_module_that_cannot_stream(model, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Streamer(model.eval() if "training" not in message else model)


def test_model_without_causal_layer_needs_an_axis():
    with pytest.raises(ValueError, match=re.escape("Streamer: Sequential has no causal layer; pass axis=")):
        Streamer(nn.Sequential(nn.ReLU()))


def test_function_that_cannot_stream():
    class Cumulative(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 2)

    with pytest.raises(ValueError, match=re.escape("Streamer: cannot stream <built-in method cumsum")):
        Streamer(Cumulative(), axis=0)


def test_chunk_of_another_shape():
    streamer = Streamer(SEQ)
    state = streamer.init_state(1, in_channels=2)
    message = (
        "Streamer: expected a chunk (1, 2, T) with T >= 1, as set by the last init_state(), got (1, 3, 5)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        streamer(torch.randn(1, 3, 5, dtype=torch.float64), state)


def test_state_of_another_model():
    streamer = Streamer(SEQ)
    streamer.init_state(1, in_channels=2)
    other = Streamer(nn.Sequential(RecConv1d(2, causal=True)).double()).init_state(1)
    with pytest.raises(
        ValueError, match=re.escape("Streamer: this state belongs to another model: expected")
    ):
        streamer(torch.randn(1, 2, 5, dtype=torch.float64), other)


class StreamsWithoutSamples(nn.Module):
    """A module that streams itself with default states only."""

    def forward(self, x):
        return x

    def init_state(self, batch_size, size=(), *, device=None, dtype=None):
        return {}

    def step(self, x, state):
        return x, state


def test_fixed_shape_state_needs_step_sample():
    streamer = Streamer(nn.Sequential(RecConv1d(4, causal=True), StreamsWithoutSamples()).eval())
    streamer.init_state(1)  # default states stream
    message = (
        "Streamer: cannot stream '1' (StreamsWithoutSamples): it has no step_sample(x, arrived, state) for a "
        "fixed-shape state"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        streamer.init_state(1, fixed_shape=True)


def test_fixed_shape_state_needs_one_output_tensor():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = RecConv1d(4, causal=True)

        def forward(self, x):
            return self.layer(x), x

    message = "Streamer: a fixed-shape state holds the model's output, which must be one tensor, got tuple"
    with pytest.raises(ValueError, match=re.escape(message)):
        Streamer(Pair().eval()).init_state(1, fixed_shape=True)


def test_step_sample_and_step_need_their_kind_of_state():
    layer = RecConv1d(4, level=1, causal=True)
    message = (
        "RecConv1d(4, level=1): step_sample() takes one sample along the causal axis 0 and a state from "
        "init_state(..., fixed_shape=True), got a chunk of shape (1, 4, 1) and a default state"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        layer.step_sample(torch.randn(1, 4, 1), torch.tensor(True), layer.init_state(1))
    conv = CausalConv(4, 4, 3, 2, causal_axis=0)
    with pytest.raises(
        ValueError,
        match=re.escape("CausalConv: a fixed-shape state streams with step_sample(), one sample at a time"),
    ):
        conv.step(torch.randn(1, 4, 3), conv.init_state(1, fixed_shape=True))


def test_a_streamer_is_in_its_models_mode():
    # torch.onnx.export warns about a module in training mode: a streamer of an eval model is not one.
    assert not Streamer(nn.Sequential(RecConv1d(4, causal=True)).eval()).training
    assert Streamer(nn.Sequential(RecConv1d(4, causal=True))).training


@pytest.mark.slow
def test_inductor_compiles_a_fixed_shape_streamer_exactly():
    torch.manual_seed(0)
    model = recnext_audio_causal_tiny().eval()
    streamer = Streamer(model)
    step = torch.compile(streamer, fullgraph=True)
    state = streamer.init_state(1, (16,), fixed_shape=True)
    x = torch.randn(1, 1, 16, 40)
    outs = []
    with torch.no_grad():
        for frame in x.split(1, dim=3):
            out, state = step(frame, state)
            outs.append(out)
        held = model(x).repeat_interleave(16, 3).narrow(3, 0, 40)
        torch.testing.assert_close(torch.cat(outs, 3), held, rtol=1e-4, atol=1e-4)
