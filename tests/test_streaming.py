"""Layer streaming: chunk-by-chunk outputs equal the offline causal output, for any chunking."""

from __future__ import annotations

import gc
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch._dynamo.testing import CompileCounter
from torch._subclasses.fake_tensor import FakeTensorMode

from recconv import RecConv1d, RecConv2d, RecConv3d
from recconv.ops import DepthwiseConv, OpProtocolError, stream_conv

from .helpers import built_in_op_combinations
from .strategies import build, chunkings, layer_kwargs, sizes


def stream(layer, x, chunks, state=None, fixed_shape=False):
    """Concatenated step outputs of ``x`` cut into ``chunks`` along the causal axis, and the last state."""
    axis = layer.causal_axis
    other = [s for i, s in enumerate(x.shape[2:]) if i != axis]
    state = layer.init_state(x.shape[0], other, fixed_shape=fixed_shape) if state is None else state
    outs = []
    for chunk in x.split(chunks, dim=axis + 2):
        out, state = layer.step(chunk, state)
        outs.append(out)
    return torch.cat(outs, axis + 2), state


@st.composite
def streamed_cases(draw):
    kwargs = draw(layer_kwargs(causal=True))
    size = draw(sizes())
    chunks = draw(chunkings(size[kwargs["causal"]]))
    return kwargs, size, chunks


STATE_KINDS = pytest.mark.parametrize(
    "fixed_shape", [False, True], ids=["default-state", "fixed-shape-state"]
)


@STATE_KINDS
@given(case=streamed_cases(), batch=st.integers(1, 2))
def test_any_chunking_equals_offline_float64(case, batch, fixed_shape):
    kwargs, size, chunks = case
    torch.manual_seed(0)
    layer = build(kwargs, dtype=torch.float64).eval()
    x = torch.randn(batch, kwargs["in_channels"], *size, dtype=torch.float64)
    got, _ = stream(layer, x, chunks, fixed_shape=fixed_shape)
    torch.testing.assert_close(got, layer(x), rtol=0, atol=1e-12)


@STATE_KINDS
@given(case=streamed_cases())
def test_any_chunking_equals_offline_float32(case, fixed_shape):
    kwargs, size, chunks = case
    torch.manual_seed(0)
    layer = build(kwargs).eval()
    x = torch.randn(2, kwargs["in_channels"], *size)
    got, _ = stream(layer, x, chunks, fixed_shape=fixed_shape)
    torch.testing.assert_close(got, layer(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (RecConv1d(3, 3, level=3, causal=True, dtype=torch.float64), (2, 3, 61)),
        (RecConv2d(3, 3, level=2, causal=1, upsample="transposed", dtype=torch.float64), (1, 3, 10, 41)),
        (RecConv3d(2, 3, level=2, factor=(1, 2, 2), causal=0, downsample="maxpool", dtype=torch.float64), (1, 2, 13, 6, 5)),
    ],
    ids=["1d", "2d-freq-time", "3d-video"],
)  # fmt: skip
@STATE_KINDS
def test_named_ranks_single_samples_and_one_chunk(layer, shape, fixed_shape):
    x = torch.randn(shape, dtype=torch.float64)
    length = shape[2 + layer.causal_axis]
    for chunks in ([1] * length, [length], [2, 5, 1, length - 8]):
        got, _ = stream(layer, x, chunks, fixed_shape=fixed_shape)
        torch.testing.assert_close(got, layer(x), rtol=0, atol=1e-12)


@STATE_KINDS
def test_state_is_not_changed_and_can_branch(fixed_shape):
    layer = RecConv1d(
        2, 3, level=2, causal=True, upsample="linear", downsample="avgpool", dtype=torch.float64
    )
    x = torch.randn(1, 2, 20, dtype=torch.float64)
    _, state = stream(layer, x[..., :7], [3, 4], fixed_shape=fixed_shape)
    saved = {key: value.clone() for key, value in state.items()}
    first, _ = layer.step(x[..., 7:12], state)
    for key, value in state.items():
        assert torch.equal(value, saved[key]), key
    again, _ = layer.step(x[..., 7:12], state)  # retry from the same state
    assert torch.equal(first, again)
    branch, _ = stream(layer, x[..., 7:], [13], state)  # another branch from the same point
    torch.testing.assert_close(branch, layer(x)[..., 7:], rtol=0, atol=1e-12)


def test_ops_of_levels_without_a_new_sample_are_skipped():
    """Single samples reach level i every 2**i steps; the steps of its ops run only then."""
    layer = RecConv1d(2, 3, level=3, causal=True, dtype=torch.float64)
    calls = {}
    for name, op in (
        [("down", layer.down_op(1))]
        + [(f"convs.{j}", c) for j, c in enumerate(layer.convs)]
        + [(f"ups.{j}", u) for j, u in enumerate(layer.ups)]
    ):

        def counted(*args, _step=op.step, _name=name):
            calls[_name] = calls.get(_name, 0) + 1
            return _step(*args)

        op.step = counted
    x = torch.randn(1, 2, 16, dtype=torch.float64)
    out, _ = stream(layer, x, [1] * 16)
    torch.testing.assert_close(out, layer(x), rtol=0, atol=1e-12)
    steps_at = {level: 16 // 2**level for level in range(4)}  # steps in which level gets a sample
    assert calls == {
        "down": steps_at[0] + steps_at[1] + steps_at[2],  # one op shared by the levels (the paper's)
        **{f"convs.{j}": steps_at[3 - j] for j in range(4)},
        **{f"ups.{j}": steps_at[2 - j] for j in range(3)},
    }


def test_state_is_tensors_only():
    state = RecConv2d(4, 3, level=2, causal=1, upsample="linear").init_state(2, (8,))
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert "downs.1.tail" in state  # one entry per level although the down op is shared


def max_samples(k: int, f: int, up: str) -> dict[str, int]:
    """The docs' state formula (1D, per channel), in samples kept by each kind of op."""
    return {
        "convs": k - 1,
        "downs": k + f - 2,
        "ups": {"linear": f, "nearest": f - 1, "transposed": k + f - 2}[up],
    }


@pytest.mark.parametrize("up", ["linear", "nearest", "transposed"])
@pytest.mark.parametrize("down", ["conv", "avgpool"])
@pytest.mark.parametrize("k, f", [(3, 2), (5, 3), (1, 4)])
def test_state_size_is_bounded_by_the_documented_formula(up, down, k, f):
    level = 3
    layer = RecConv1d(1, k, level=level, factor=f, upsample=up, downsample=down, causal=True)
    state = layer.init_state(1)
    worst: dict[str, int] = {}
    for chunk in torch.randn(1, 1, 3 * f**level).split(1, dim=2):  # every phase of every level
        _, state = layer.step(chunk, state)
        for op in ("convs", "downs", "ups"):
            samples = sum(v.shape[-1] for key, v in state.items() if key.startswith(op) and v.dim() == 3)
            worst[op] = max(worst.get(op, 0), samples)
    count = {"convs": level + 1, "downs": level, "ups": level}
    bound = {op: count[op] * n for op, n in max_samples(k, f, up).items()}
    assert worst == bound


@pytest.mark.parametrize(
    "layer, size",
    [
        (RecConv1d(2, 3, level=3, causal=True, downsample="maxpool", upsample="transposed"), ()),
        (RecConv2d(2, 3, level=2, factor=3, causal=1, upsample="linear"), (5,)),
        (RecConv3d(2, 3, level=2, factor=(2, 2, 1), causal=0, upsample="haar", downsample="avgpool"), (4, 3)),
    ],
    ids=["1d", "2d", "3d"],
)
def test_a_fixed_shape_state_keeps_its_shapes_and_compiles_once_for_every_phase(layer, size):
    """Single samples through every phase of the strides (and the stream's start): one graph."""
    counter = CompileCounter()
    step = torch.compile(layer.step, backend=counter, fullgraph=True)
    state = layer.init_state(2, size, fixed_shape=True)
    shapes = {key: value.shape for key, value in state.items()}
    axis = layer.causal_axis
    x = torch.randn(2, 2, *size[:axis], 3 * layer.factor[axis] ** layer.level, *size[axis:])
    outs = []
    with torch.no_grad():
        for sample in x.split(1, dim=axis + 2):
            out, state = step(sample, state)
            assert {key: value.shape for key, value in state.items()} == shapes
            outs.append(out)
        torch.testing.assert_close(torch.cat(outs, axis + 2), layer(x), rtol=0, atol=1e-5)
    assert counter.frame_count == 1


def test_a_compiled_step_does_not_recompile_when_other_layers_stream_or_go():
    # Eager steps remember states and shapes (per layer and beside the layers); a traced step must not
    # read what they remember, or its guards would change with every new entry (failed before: 4
    # graphs instead of 2; in a longer run dynamo even failed to build a guard once a layer was gone).
    layers = [RecConv1d(2, 3, level=2, causal=True) for _ in range(3)]
    counter = CompileCounter()
    with torch.no_grad():
        for layer in layers:
            layer.step(torch.randn(1, 2, 4), layer.init_state(1))
        step = torch.compile(layers[0].step, backend=counter, fullgraph=True)
        state = layers[0].init_state(1, fixed_shape=True)
        _, state = step(torch.randn(1, 2, 1), state)
        del layers[1:]
        gc.collect()
        for length in (1, 2, 1):  # another chunk length needs a graph of its own, once
            _, state = step(torch.randn(1, 2, length), state)
            other = RecConv1d(2, 3, level=1, causal=True)  # a new layer streams eagerly
            other.step(torch.randn(1, 2, 4), other.init_state(1))
    assert counter.frame_count == 2


@pytest.mark.parametrize("up, kept", [("linear", 2), ("nearest", 1), ("transposed", None)])
@pytest.mark.parametrize("k, f", [(3, 2), (5, 3), (1, 4)])
def test_fixed_shape_state_size_is_the_documented_formula(up, kept, k, f):
    level = 3
    layer = RecConv1d(1, k, level=level, factor=f, upsample=up, causal=True)
    state = layer.init_state(1, fixed_shape=True)
    samples = {op: sum(v.shape[-1] for key, v in state.items() if key.startswith(op) and v.dim() == 3)
               for op in ("convs", "downs", "ups")}  # fmt: skip
    ups = -(-(k + f - 1) // f) if kept is None else kept
    assert samples == {"convs": (level + 1) * (k - 1), "downs": level * (k - 1), "ups": level * ups}
    assert state["clock"].shape == ()


def test_state_size_does_not_grow_with_the_stream():
    layer = RecConv2d(3, 5, level=3, causal=1)
    state = layer.init_state(1, (6,))
    period = 2**3  # chunks of a multiple of factor**level come back to the same phase
    shapes = []
    for chunk in torch.randn(1, 3, 6, 40 * period).split(period, dim=3):
        _, state = layer.step(chunk, state)
        shapes.append({key: tuple(v.shape) for key, v in state.items()})
    assert all(s == shapes[0] for s in shapes)


@pytest.mark.parametrize(
    "layer, size",
    [
        (RecConv1d(4, 5, level=2, causal=True, bias=True), (33,)),
        (RecConv2d(4, 3, level=2, causal=1, bias=True, upsample="nearest"), (5, 33)),
        (RecConv3d(4, 3, level=1, factor=2, causal=0, bias=True), (33, 4, 4)),
    ],
    ids=["1d", "2d", "3d"],
)
def test_float32_with_bias_in_every_rank(layer, size):
    x = torch.randn(2, 4, *size)
    got, _ = stream(layer, x, [4, 1, 9, 19])
    torch.testing.assert_close(got, layer(x), rtol=0, atol=1e-5)


def test_steps_under_fake_tensors_or_inference_mode_leave_later_steps_fit_for_autograd():
    # Nothing a step makes may outlive it: a tensor kept from a fake-tensor mode or inference mode
    # would break later steps.
    x = torch.randn(1, 4, 12)
    with FakeTensorMode() as fake:
        layer = RecConv1d(4, 3, level=2, factor=3, causal=True)
        layer.step(fake.from_tensor(x), layer.init_state(1))
    layer = RecConv1d(4, 3, level=2, factor=3, causal=True)
    with torch.inference_mode():
        layer.step(x, layer.init_state(1))
    x.requires_grad_(True)
    got, _ = stream(layer, x, [5, 7])
    got.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(got, layer(x), rtol=0, atol=1e-5)


# One test per promised error message.


def test_non_causal_layer_cannot_stream():
    layer = RecConv2d(8, level=2)
    message = "RecConv2d(8, level=2): step() streams along the causal axis, but this layer is not causal"
    with pytest.raises(ValueError, match=re.escape(message)):
        layer.step(torch.randn(1, 8, 4, 4), {})
    with pytest.raises(ValueError, match=re.escape(message.replace("step()", "init_state()"))):
        layer.init_state(1, (4,))


def test_init_state_needs_the_other_sizes():
    message = "RecConv2d(8, level=2): init_state needs the sizes of the 1 spatial axes other than the causal axis 1, got size=()"
    with pytest.raises(ValueError, match=re.escape(message)):
        RecConv2d(8, level=2, causal=1).init_state(1)


@pytest.mark.parametrize("shape", [(1, 4, 10), (1, 8, 0), (8, 10)])
def test_wrong_chunk_shape(shape):
    layer = RecConv1d(8, level=2, causal=True)
    message = (
        "RecConv1d(8, level=2): step() expects a chunk (N, 8, L) with >= 1 sample along the causal axis 0, "
        f"got {shape}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        layer.step(torch.randn(shape), layer.init_state(1))


def test_wrong_batch_size():
    layer = RecConv1d(8, kernel_size=3, level=1, causal=True)
    message = (
        "RecConv1d(8, level=1): state['downs.0.tail'] has shape (2, 8, 3), expected (1, 8, T) (T: any length "
        "at dim 2) for a chunk of shape (1, 8, 5): a state from another layer, batch size or input size; "
        "start a stream with init_state(1, ())"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        layer.step(torch.randn(1, 8, 5), layer.init_state(2))


def test_a_fixed_shape_state_must_keep_its_shapes():
    layer = RecConv1d(8, kernel_size=3, level=1, causal=True)
    state = layer.init_state(1, fixed_shape=True)
    state["convs.1.tail"] = torch.zeros(1, 8, 3)
    message = (
        "RecConv1d(8, level=1): state['convs.1.tail'] has shape (1, 8, 3), expected (1, 8, 2) for a chunk of "
        "shape (1, 8, 5): a state from another layer, batch size or input size; start a stream with "
        "init_state(1, (), fixed_shape=True)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        layer.step(torch.randn(1, 8, 5), state)


def test_the_state_a_step_returned_is_checked_again_when_changed_or_used_for_another_chunk_shape():
    # A step skips checking the state it returned last, if it comes back unchanged for the same shape.
    layer = RecConv2d(2, kernel_size=3, level=1, causal=1)
    _, state = layer.step(torch.randn(1, 2, 6, 3), layer.init_state(1, (6,)))
    layer.step(torch.randn(1, 2, 6, 1), state)
    with pytest.raises(
        ValueError, match=re.escape("for a chunk of shape (2, 2, 6, 3): a state from another")
    ):
        layer.step(torch.randn(2, 2, 6, 3), state)
    with pytest.raises(
        ValueError, match=re.escape("for a chunk of shape (1, 2, 7, 3): a state from another")
    ):
        layer.step(torch.randn(1, 2, 7, 3), state)
    state["downs.0.tail"] = state["downs.0.tail"][:, :1]
    with pytest.raises(ValueError, match=re.escape("state['downs.0.tail'] has shape (1, 1, ")):
        layer.step(torch.randn(1, 2, 6, 3), state)
    del state["downs.0.tail"]
    with pytest.raises(ValueError, match="this state belongs to another layer"):
        layer.step(torch.randn(1, 2, 6, 3), state)


def test_wrong_other_size():
    layer = RecConv2d(2, kernel_size=3, level=1, causal=1)
    with pytest.raises(
        ValueError, match=re.escape("for a chunk of shape (1, 2, 7, 3): a state from another")
    ):
        layer.step(torch.randn(1, 2, 7, 3), layer.init_state(1, (6,)))


def test_state_of_another_layer():
    layer = RecConv1d(8, level=2, causal=True)
    other = RecConv1d(8, level=1, causal=True).init_state(1)
    message = (
        "RecConv1d(8, level=2): this state belongs to another layer: expected keys ['convs.0.tail', "
        "'convs.1.tail', 'convs.2.tail', 'downs.0.tail', 'downs.1.tail', 'ups.0.last', 'ups.0.pending', "
        "'ups.0.started', 'ups.1.last', 'ups.1.pending', 'ups.1.started'], got ['convs.0.tail', "
        "'convs.1.tail', 'downs.0.tail', 'ups.0.last', 'ups.0.pending', 'ups.0.started']; start a stream "
        "with init_state()"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        layer.step(torch.randn(1, 8, 4), other)


def test_state_must_be_a_dict_of_tensors():
    layer = RecConv1d(8, level=1, causal=True)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "RecConv1d(8, level=1): the state must be the dict from init_state() or step(), got tuple"
        ),
    ):
        layer.step(torch.randn(1, 8, 4), tuple(layer.init_state(1).values()))
    state = {**layer.init_state(1), "convs.0.tail": [0.0]}
    with pytest.raises(
        TypeError, match=re.escape("RecConv1d(8, level=1): state['convs.0.tail'] must be a tensor, got list")
    ):
        layer.step(torch.randn(1, 8, 4), state)


class NoStreaming(DepthwiseConv):
    init_state = None
    step = None


class NoFixedShapeStreaming(DepthwiseConv):
    init_fixed_state = None
    fixed_step = None


def test_user_op_without_streaming_methods():
    layer = RecConv1d(4, level=1, conv=NoStreaming, causal=True)
    message = (
        "RecConv1d(4, level=1): the op NoStreaming does not answer init_state(); give it that method of the op "
        "protocol (see recconv.ops)"
    )
    with pytest.raises(OpProtocolError, match=re.escape(message)):
        layer.init_state(1)
    assert math.isfinite(layer(torch.randn(1, 4, 9)).sum().item())  # it still runs offline


def test_user_op_without_fixed_shape_streaming_methods():
    layer = RecConv1d(4, level=1, conv=NoFixedShapeStreaming, causal=True)
    message = (
        "RecConv1d(4, level=1): the op NoFixedShapeStreaming does not answer init_fixed_state(); give it that "
        "method of the op protocol (see recconv.ops)"
    )
    with pytest.raises(OpProtocolError, match=re.escape(message)):
        layer.init_state(1, fixed_shape=True)
    layer.step(torch.randn(1, 4, 9), layer.init_state(1))  # the default state still streams


@pytest.mark.parametrize(
    "compiled",
    [False, True],  # Inductor sums taps where eager calls the conv, in 1D at every length
    ids=["eager", "inductor"],
)
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("length", [3, 4000])  # summed taps on a step's few samples; conv beyond
def test_stream_conv_is_the_depthwise_conv(dims, length, compiled):
    kernel, stride = (5, 3, 1)[:dims], (2, 1, 1)[:dims]
    padding = (0, 1, 0)[:dims]  # none along the causal first axis, as in a step
    x = torch.randn(2, 6, length, *(4,) * (dims - 1), dtype=torch.float64)
    window = F.pad(x, (0, 0) * (dims - 1) + (2, 0))  # the samples kept before the chunk
    weight, bias = torch.randn(6, 1, *kernel, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    expected = conv(window, weight, bias, stride, padding, 1, 6)
    if compiled:
        torch._dynamo.reset()
    conv_of_step = torch.compile(stream_conv, fullgraph=True) if compiled else stream_conv
    got = conv_of_step(window, weight, bias, stride, padding)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.cuda
def test_cuda_fixed_shape_steps_replay_as_cuda_graphs():
    # A fixed-shape step is one graph for every phase, so torch.compile can capture it as a CUDA graph.
    layer = RecConv1d(8, 5, level=3, causal=True).cuda().eval()
    step = torch.compile(layer.step, mode="reduce-overhead", fullgraph=True)
    state = layer.init_state(1, fixed_shape=True)
    x = torch.randn(1, 8, 40, device="cuda")
    outs = []
    with torch.no_grad():
        for sample in x.split(1, dim=2):
            torch.compiler.cudagraph_mark_step_begin()
            out, state = step(sample, state)
            # A replay reuses its output memory: keep copies of what the next one would overwrite.
            outs.append(out.clone())
            state = {key: value.clone() for key, value in state.items()}
        torch.testing.assert_close(torch.cat(outs, 2), layer(x), rtol=1e-5, atol=1e-5)


def inductor_streams_like_offline(layer, size: tuple[int, ...]) -> None:
    """Single samples through a fixed-shape step compiled by Inductor (a C++ kernel here) equal the
    offline layer."""
    torch._dynamo.reset()
    step = torch.compile(layer.step, fullgraph=True)
    axis = layer.causal_axis
    x = torch.randn(1, layer.in_channels, *size)
    state = layer.init_state(1, [s for i, s in enumerate(size) if i != axis], fixed_shape=True)
    outs = []
    with torch.no_grad():
        for sample in x.split(1, dim=axis + 2):
            out, state = step(sample, state)
            outs.append(out)
        torch.testing.assert_close(torch.cat(outs, axis + 2), layer(x), rtol=1e-5, atol=1e-5)


def test_inductor_compiles_a_fixed_shape_step_exactly():
    layer = RecConv2d(3, 3, level=2, causal=1, downsample="maxpool", upsample="transposed", bias=True).eval()
    inductor_streams_like_offline(layer, (5, 9))


@pytest.mark.slow
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("downsample, upsample, causal", [c for c in built_in_op_combinations() if c[2]])
def test_inductor_compiles_every_built_in_fixed_shape_step_exactly(dims, downsample, upsample, causal):
    layer_class = (RecConv1d, RecConv2d, RecConv3d)[dims - 1]
    layer = layer_class(2, 3, level=2, causal=dims - 1, downsample=downsample, upsample=upsample).eval()
    inductor_streams_like_offline(layer, (4, 3, 9)[3 - dims :])
