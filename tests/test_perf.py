"""Training keeps little memory and compiles cleanly (behaviour only: speed lives in benchmarks/)."""

from __future__ import annotations

import pytest
import torch
from functorch.compile import make_boxed_func
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.testing import CompileCounterWithBackend

from recconv import RecConv1d, RecConv2d, RecConv3d
from recconv._util import CHANNELS_LAST
from recconv.ops import (
    ConvNorm,
    _causal_resample,
    _channels_last_hint,
    _conv,
    _depthwise_weight_grad,
    _layout_copy,
    _pool_op,
    _resize,
    dense_depthwise_conv,
    depthwise_conv_norm,
)

from .helpers import built_in_op_combinations
from .strategies import build, layer_kwargs, sizes

LAYERS = {1: RecConv1d, 2: RecConv2d, 3: RecConv3d}
SHAPES = {1: (2, 8, 64), 2: (2, 8, 20, 24), 3: (1, 8, 8, 12, 10)}


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward (parameters included)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x).sum().backward()
    return sum(storages.values())


def outputs_and_gradients(layer: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().requires_grad_(True)
    out = layer(x)
    grads = torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])
    return [out, *grads]


def node_targets(graphs: list[torch.fx.GraphModule]) -> set[str]:
    """The target of every node of ``graphs`` and of their subgraphs (a checkpoint's recursion runs in one)."""
    modules = [m for g in graphs for m in g.modules() if isinstance(m, torch.fx.GraphModule)]
    return {str(node.target) for m in modules for node in m.graph.nodes}


@pytest.mark.parametrize("d", [1, 2, 3])
def test_training_with_recompute_saves_about_what_one_base_conv_saves(d):
    layer = LAYERS[d](8, 5, 3 if d < 3 else 2, recompute=True)
    x = torch.randn(SHAPES[d], requires_grad=True)
    base = saved_bytes(dense_depthwise_conv(8, (5,) * d), x)
    assert saved_bytes(layer, x) <= 1.3 * base
    layer.recompute = None  # eager default: store every sum and coarse tensor, the faster way on a CPU
    assert saved_bytes(layer, x) > 1.5 * base


@given(kwargs=layer_kwargs(), size=sizes(), channels_last=st.booleans())
def test_recomputation_gives_bitwise_the_stored_results(kwargs, size, channels_last):
    recomputing = build(kwargs, recompute=True)
    storing = build(kwargs, recompute=False)
    storing.load_state_dict(recomputing.state_dict())
    x = torch.randn(2, kwargs["in_channels"], *size)
    if channels_last and x.dim() > 3:
        x = x.contiguous(memory_format=(torch.channels_last, torch.channels_last_3d)[x.dim() - 4])
    for got, expected in zip(outputs_and_gradients(recomputing, x), outputs_and_gradients(storing, x)):
        assert torch.equal(got, expected)


def test_torch_func_gradients_match_autograd_in_training():
    layer = RecConv1d(2, 3, 2, recompute=True)
    x = torch.randn(1, 2, 12)
    params = dict(layer.named_parameters())
    grads = torch.func.grad(lambda p: torch.func.functional_call(layer, p, (x,)).square().sum())(params)
    expected = torch.autograd.grad(layer(x).square().sum(), list(params.values()))
    for name, g in zip(params, expected):
        torch.testing.assert_close(grads[name], g)


def test_ops_with_state_run_once_per_step():
    # A BatchNorm in an op must see each training batch once: such a layer stores instead of recomputing.
    layer = RecConv2d(4, 3, 2, coarse=depthwise_conv_norm, recompute=True)
    layer(torch.randn(2, 4, 12, 12, requires_grad=True)).sum().backward()
    assert layer.convs[0].norm.num_batches_tracked.item() == 1


def compile_and_compare(layer: nn.Module, x: torch.Tensor, **options) -> None:
    compiled = torch.compile(layer, fullgraph=True, **options)
    for got, expected in zip(outputs_and_gradients(compiled, x), outputs_and_gradients(layer, x)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("d", [2, 3])
def test_compiled_convs_get_the_weight_with_channels_last_strides(d):
    """The same values, with the strides Inductor reads to lay a conv out channels-last; only for
    channels-last input."""
    weight = torch.randn(8, 1, *(3,) * d)
    memory_format = torch.channels_last if d == 2 else torch.channels_last_3d
    x = torch.randn(SHAPES[d]).contiguous(memory_format=memory_format)
    hinted = _channels_last_hint(weight, x)
    assert torch.equal(hinted, weight) and hinted.data_ptr() == weight.data_ptr()
    assert hinted.stride() == (3**d, 1, *(3 ** (d - 1 - i) for i in range(d)))
    assert _channels_last_hint(weight, x.contiguous()) is weight
    transposed = torch.randn(*(3,) * d, 8, 1).permute(d, d + 1, *range(d))  # not contiguous
    assert torch.equal(_channels_last_hint(transposed, x), transposed)


@pytest.mark.parametrize(
    "mode, shape, size",
    [("linear", (2, 3, 7), [13]), ("bilinear", (2, 3, 5, 6), [9, 11]), ("trilinear", (1, 2, 3, 4, 5), [5, 7, 9]),
     ("nearest", (2, 3, 5, 6), [10, 12])],
)  # fmt: skip
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_the_resize_op_passes_torch_library_checks(mode, shape, size, channels_last):
    x = torch.randn(shape, dtype=torch.float64)
    if channels_last and x.dim() in CHANNELS_LAST:
        x = x.contiguous(memory_format=CHANNELS_LAST[x.dim()])
    torch.library.opcheck(_resize, (x.requires_grad_(), size, mode))


@pytest.mark.parametrize("input_grad", [True, False], ids=["input-grad", "no-input-grad"])
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
@pytest.mark.parametrize(
    "stride, padding, dilation, groups",
    [((1, 1), (2, 1), (1, 1), 8), ((2, 1), (0, 1), (1, 2), 2)],
    ids=["depthwise", "grouped-strided-dilated"],
)
@pytest.mark.parametrize(
    "d, channels_last", [(1, False), (2, False), (2, True), (3, False), (3, True)],
    ids=["1d", "2d", "2d-channels_last", "3d", "3d-channels_last"],
)  # fmt: skip
def test_the_conv_op_passes_torch_library_checks(
    d, channels_last, stride, padding, dilation, groups, transposed, input_grad
):
    x = torch.randn(SHAPES[d], dtype=torch.float64)  # 8 channels
    if channels_last:
        x = x.contiguous(memory_format=CHANNELS_LAST[x.dim()])
    # (out, in / groups) for a conv, (in, out / groups) for a transposed one
    channels = {8: (8, 1), 2: (8, 3) if transposed else (6, 4)}[groups]
    weight = torch.randn(*channels, *(5, 3, 3)[:d], dtype=torch.float64, requires_grad=True)
    geometry = (stride * 2)[:d], (padding * 2)[:d], (dilation * 2)[:d], groups, transposed
    torch.library.opcheck(_conv, (x.requires_grad_(input_grad), weight, *geometry))


@pytest.mark.parametrize(
    "d, kernel, stride, padding, dilation",
    [(1, (5,), (1,), (2,), (1,)), (1, (3,), (2,), (0,), (3,)), (2, (5, 3), (1, 2), (2, 0), (1, 2)),
     (2, (3, 3), (2, 2), (1, 1), (1, 1)), (3, (3, 1, 2), (1, 2, 1), (1, 0, 1), (2, 1, 1))],
)  # fmt: skip
def test_the_summed_weight_gradient_is_atens(d, kernel, stride, padding, dilation):
    x = torch.randn(SHAPES[d], dtype=torch.float64)
    weight = torch.randn(x.shape[1], 1, *kernel, dtype=torch.float64)
    conv = torch.convolution(x, weight, None, stride, padding, dilation, False, [0] * d, x.shape[1])
    grad = torch.randn_like(conv)
    expected = torch.ops.aten.convolution_backward(
        grad, x, weight, None, stride, padding, dilation, False, [0] * d, x.shape[1], [False, True, False]
    )[1]
    torch.testing.assert_close(_depthwise_weight_grad(grad, x, kernel, stride, padding, dilation), expected)


@pytest.mark.parametrize("d, to_channels_last", [(2, True), (2, False), (3, True), (1, False)])
def test_the_layout_copy_op_passes_torch_library_checks(d, to_channels_last):
    x = torch.randn(SHAPES[d], dtype=torch.float64)
    like = x.contiguous(memory_format=CHANNELS_LAST[x.dim()]) if to_channels_last else x
    torch.library.opcheck(_layout_copy, (x, like))  # used in backward formulas only: no autograd


@pytest.mark.parametrize(
    "layer, shape",
    [(RecConv1d(4, 5, 3), (2, 4, 50)), (RecConv2d(4, 5, 2), (2, 4, 17, 19)), (RecConv3d(4, 3, 1), (1, 4, 6, 7, 8)),
     (RecConv2d(4, 5, 2, upsample="nearest"), (2, 4, 16, 16))],
    ids=["1d", "2d", "3d", "2d-nearest"],
)  # fmt: skip
def test_compiled_layers_resize_through_the_op_and_exported_ones_through_interpolate(layer, shape):
    """Inductor calls the op as it is (its decomposition made compiled training slow): outputs and
    gradients bitwise those of eager mode. Without autograd in 1D and 2D, and in an exported graph,
    F.interpolate stays (Inductor fuses it, ONNX knows it)."""
    torch._dynamo.reset()
    layer = layer.double()
    backend = CompileCounterWithBackend("aot_eager")
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    got = torch.compile(layer, backend=backend, fullgraph=True)(x)
    (got_grad,) = torch.autograd.grad(got.square().sum(), x)
    expected = layer(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    assert torch.equal(got, expected) and torch.equal(got_grad, expected_grad)
    assert any(target.endswith(".resize.default") for target in node_targets(backend.graphs))
    backend = CompileCounterWithBackend("aot_eager")
    with torch.no_grad():  # decomposed: equal to rounding
        torch.testing.assert_close(torch.compile(layer, backend=backend, fullgraph=True)(x), expected)
    resized = any("resize" in target for target in node_targets(backend.graphs))
    assert backend.graphs and resized == (x.dim() == 5)
    exported = torch.export.export(layer, (x.detach(),))
    assert not any("resize" in target for target in node_targets([exported.graph_module]))


@pytest.mark.parametrize("upsample", ["linear", "transposed"])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("recompute", [False, True], ids=["stored", "recomputed"])
def test_compiled_training_convolves_through_the_op_in_every_rank(d, recompute, upsample):
    """Inductor calls the op as it is (its layout of the convs' backward made compiled training slow),
    in float32 training only, not in inference or exported graphs; the results are eager mode's."""

    def convolves(backend: CompileCounterWithBackend) -> bool:
        return "recconv.conv.default" in node_targets(backend.graphs)

    torch._dynamo.reset()
    layer = LAYERS[d](4, 3, 2, bias=True, recompute=recompute, upsample=upsample)
    x = torch.randn(SHAPES[d][0], 4, *SHAPES[d][2:])
    backend = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    # To float32 rounding: a bias's gradient sums thousands of terms in another order (1e-5 failed by 1e-6
    # for some seeds).
    for got, expected in zip(outputs_and_gradients(compiled, x), outputs_and_gradients(layer, x)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert convolves(backend)
    params = list(layer.parameters())  # an input without a gradient, as in training: the op skips it too
    got, expected = (torch.autograd.grad(module(x).square().sum(), params) for module in (compiled, layer))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    backend = CompileCounterWithBackend("aot_eager")
    with torch.no_grad():
        torch.compile(layer, backend=backend, fullgraph=True)(x)
    assert backend.graphs and not convolves(backend)
    backend = CompileCounterWithBackend("aot_eager")
    outputs_and_gradients(torch.compile(layer.double(), backend=backend, fullgraph=True), x.double())
    assert backend.graphs and not convolves(backend)
    exported = torch.export.export(layer.float(), (x,))
    assert not any(target.startswith("recconv.") for target in node_targets([exported.graph_module]))


def aot_graphs(model: nn.Module, x: torch.Tensor, dynamic: bool) -> list[torch.fx.GraphModule]:
    """The forward and backward graphs AOTAutograd hands a backend for one compiled training step."""
    graphs = []

    def keep(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        graphs.append(graph)
        return make_boxed_func(graph.forward)

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), dynamic=dynamic)
    compiled(x).sum().backward()
    return graphs


# Transposed up ops need only 1D: 2D and 3D layers' run as the op in float32 training anyway.
@pytest.mark.parametrize("d, upsample", [(1, "linear"), (2, "linear"), (3, "linear"), (1, "transposed")])
def test_compiled_training_convs_keep_symbolic_sizes_through_the_op(d, upsample):
    """Every conv of a training graph traced for symbolic sizes runs as recconv's op, whose backward
    Inductor does not compile for fixed sizes; for static sizes the dense convs stay ATen's."""
    model = nn.Sequential(ConvNorm(3, 8, 3, padding=1, spatial_dims=d), LAYERS[d](8, 3, 2, upsample=upsample))
    x = torch.randn(SHAPES[d][0], 3, *SHAPES[d][2:])
    targets = node_targets(aot_graphs(model, x, dynamic=True))
    assert "recconv.conv.default" in targets and "recconv.conv_backward.default" in targets
    assert not targets & {"aten.convolution.default", "aten.convolution_backward.default"}
    # A fresh tensor: one that Dynamo traced with symbolic sizes stayed symbolic under dynamic=False.
    targets = node_targets(aot_graphs(model, x.clone(), dynamic=False))
    assert {"aten.convolution.default", "aten.convolution_backward.default"} <= targets
    # Under autocast the op's inputs are cast as autocast casts a conv's: eager mode's result.
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", dynamic=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = compiled(x.clone()), model(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("d", [2, 3])
def test_compiled_training_sums_the_weight_gradients_of_large_depthwise_convs(d, channels_last):
    """Where a depthwise conv's map has 4096 positions or more, its weight gradient is a sum per kernel
    offset (Inductor fuses them; ATen's kernel was 2.5x slower), the input's gradient ATen's; the
    gradient of an output left in another layout is copied once into the conv's. Results: eager mode's."""
    layer = LAYERS[d](4, 3, 2)
    x = torch.randn((1, 4, 64, 64) if d == 2 else (1, 4, 4, 32, 32))
    if channels_last:
        x = x.contiguous(memory_format=CHANNELS_LAST[x.dim()])
    backward = aot_graphs(layer, x, dynamic=False)[-1]
    calls = [n for n in backward.graph.nodes if str(n.target) == "recconv.conv_backward.default"]
    summed = [tuple(n.args[-1]) for n in calls if not n.args[-1][1]]  # ATen's kernel skips the weight
    assert summed == [(True, False)]  # the full-resolution conv alone has 4096 positions
    assert ("recconv.in_layout_of.default" in node_targets([backward])) != channels_last
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    for got, expected in zip(outputs_and_gradients(compiled, x), outputs_and_gradients(layer, x)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("linear", [True, False], ids=["ramp", "hold"])
@pytest.mark.parametrize("factor, size", [(2, 9), (2, 10), (3, 7), (4, 16)])
@pytest.mark.parametrize("dim", [2, 3])
def test_the_causal_resample_in_blocks_is_bitwise_the_gather_by_position(
    linear, factor, size, dim, channels_last
):
    """Eager mode repeats whole blocks, in the input's layout; exported graphs gather fine position t
    from coarse t // factor (and the one before it, for the ramp)."""
    shape = [2, 3, 5, 6]
    shape[dim] = -(-size // factor)
    x = torch.randn(shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fine = torch.arange(size)
    current, previous = fine // factor, (fine // factor - 1).clamp(min=0)
    weight = ((fine % factor + 1).double() / factor).view([size if a == dim else 1 for a in range(4)])
    gathered = x.index_select(dim, current)
    if linear:
        gathered = torch.lerp(x.index_select(dim, previous), gathered, weight)
    resampled = _causal_resample(x, dim - 2, size, factor, linear)
    assert torch.equal(resampled, gathered)
    assert (resampled.stride(1) == 1) == channels_last  # channels vary fastest in channels-last


@pytest.mark.parametrize("upsample", ["linear", "nearest"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_every_conv_of_a_causal_layer_runs_channels_last_on_the_cpu(d, upsample):
    """As in a centered layer: on contiguous tensors oneDNN's depthwise convs are slower
    (``benchmarks/compiled_backward.py`` times the backward in each layout)."""
    layer = LAYERS[d](8, 3, 2, causal=d - 1, upsample=upsample)
    layouts = []
    for conv in layer.convs:
        conv.register_forward_pre_hook(lambda _, args: layouts.append(args[0].stride(1) == 1))
    layer(torch.randn(SHAPES[d], requires_grad=True)).sum().backward()
    assert layouts == [True] * (layer.level + 1)


def autograd_nodes(out: torch.Tensor) -> set[str]:
    """The class names of the autograd graph's nodes behind ``out``."""
    seen, stack, names = set(), [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            names.add(type(node).__name__)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("length", [64, 61], ids=["whole-blocks", "cut"])
@pytest.mark.parametrize("causal", [False, True], ids=["centered", "causal"])
@pytest.mark.parametrize("upsample", ["linear", "nearest", "transposed"])
def test_sums_into_up_outputs_never_make_autograd_copy_a_view_base(upsample, causal, length):
    """An in-place sum into a crop of a larger tensor makes backward copy all of it (CopySlices)."""
    layer = RecConv1d(4, 3, 3, causal=causal, upsample=upsample)
    x = torch.randn(2, 4, length, requires_grad=True)
    assert "CopySlices" not in autograd_nodes(layer(x))


@pytest.mark.parametrize(
    "layer, shape",
    [(RecConv1d(4, 5, 3, causal=True), (2, 4, 50)), (RecConv2d(4, 3, 2, causal=1, upsample="nearest"), (2, 4, 9, 13)),
     (RecConv3d(4, 3, 1, causal=2), (1, 4, 5, 6, 7))],
    ids=["1d", "2d-nearest", "3d"],
)  # fmt: skip
def test_compiled_causal_layers_train_and_infer_as_in_eager_mode(layer, shape):
    """Compiled training of static sizes resamples in blocks (whose backward sums, where the gather's
    scatters), compiled inference ramps by gathering (which Inductor fuses) and holds in blocks: all give
    eager's results."""

    def gathers(backend: CompileCounterWithBackend) -> bool:
        return any("index_select" in target for target in node_targets(backend.graphs))

    torch._dynamo.reset()
    layer = layer.double()
    x = torch.randn(shape, dtype=torch.float64)
    backend = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    for got, expected in zip(outputs_and_gradients(compiled, x), outputs_and_gradients(layer, x)):
        torch.testing.assert_close(got, expected)
    assert backend.graphs and not gathers(backend)
    backend = CompileCounterWithBackend("aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(layer, backend=backend, fullgraph=True)(x), layer(x))
    assert gathers(backend) == layer.ups[0].linear


@pytest.mark.parametrize("d, downsample", [(1, "maxpool"), (2, "avgpool")])
def test_compiled_training_of_pool_down_ops_runs_with_inductor(d, downsample):
    """ATen's replication-pad backward and its meta disagree on the gradient's strides for channels-last
    input, which Inductor's compiled backward checks: it failed in 1D and 2D before the pool became an
    op of its own under compile."""
    torch._dynamo.reset()
    layer = LAYERS[d](4, 3, 2, downsample=downsample)
    compile_and_compare(layer, torch.randn(SHAPES[d][0], 4, *SHAPES[d][2:]))


@pytest.mark.parametrize(
    "kind, kernel, stride, padding, mode",
    [("avg", [3, 3], [2, 2], [1, 1, 2, 0], "replicate"), ("max", [1, 5], [1, 2], [4, 0, 0, 0], "replicate"),
     ("avg", [2, 2], [2, 2], [0, 1, 0, 1], "constant")],
)  # fmt: skip
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_the_pool_op_passes_torch_library_checks(kind, kernel, stride, padding, mode, channels_last):
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(_pool_op, (x.requires_grad_(), kind, kernel, stride, padding, mode))


@pytest.mark.parametrize(
    "d, downsample, through_op",
    [
        (2, "avgpool", True),
        (2, "maxpool", True),
        (2, "haar", False),
        (3, "haar", True),
        (1, "avgpool", False),
    ],
)
def test_compiled_training_pools_through_the_op_and_inference_and_export_through_aten(
    d, downsample, through_op
):
    """In training, the op in 3D and for overlapping windows in 2D (Inductor pooled the Haar block's
    and the lifted 1D layers' faster itself); eager mode's results either way (bitwise through the op)."""

    def pools(graphs: list[torch.fx.GraphModule]) -> bool:
        return any("padded_pool" in target for target in node_targets(graphs))

    torch._dynamo.reset()
    layer = LAYERS[d](4, 3, 2, downsample=downsample).double()
    x = torch.randn(SHAPES[d][0], 4, *SHAPES[d][2:], dtype=torch.float64)
    backend = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    for got, expected in zip(outputs_and_gradients(compiled, x), outputs_and_gradients(layer, x)):
        assert (
            torch.equal(got, expected)
            if through_op
            else torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
        )
    assert pools(backend.graphs) == through_op
    backend = CompileCounterWithBackend("aot_eager")
    with torch.no_grad():
        torch.compile(layer, backend=backend, fullgraph=True)(x)
    assert backend.graphs and not pools(backend.graphs)
    assert not pools([torch.export.export(layer, (x,)).graph_module])


def test_dynamic_compiled_inference_of_a_haar_down_op_runs_with_inductor():
    """The Haar block's padding to a whole block was ``-size % f``: on a symbolic size Inductor failed
    (``TensorReferenceAnalysis`` has no ``python_mod``, torch 2.14)."""
    torch._dynamo.reset()
    layer = RecConv2d(4, 3, 2, downsample="haar").eval()
    compiled = torch.compile(layer, dynamic=True)
    with torch.no_grad():
        for size in [(13, 15), (17, 20)]:
            x = torch.randn(2, 4, *size)
            torch.testing.assert_close(compiled(x), layer(x))


def test_compiled_inference_of_a_causal_hold_after_a_nearest_resize_runs_with_inductor():
    """Gathered, Inductor's C++ code generation failed on the fused index (a sympy error, torch 2.14)."""
    torch._dynamo.reset()
    layer = RecConv2d(4, 3, 2, upsample="nearest", causal=True).eval()
    x = torch.randn(2, 4, 13, 15)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(layer, fullgraph=True)(x), layer(x))


@pytest.mark.slow
@pytest.mark.parametrize("d", [1, 2, 3])
def test_compiled_training_and_inference_have_no_graph_breaks(d):
    torch._dynamo.reset()
    layer = LAYERS[d](4, 5, 2)
    x = torch.randn(SHAPES[d][0], 4, *SHAPES[d][2:])
    compile_and_compare(layer, x)  # training stores (float32 on the CPU)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(layer.eval(), fullgraph=True)(x), layer(x))


@pytest.mark.slow
@pytest.mark.parametrize("downsample, upsample, causal", built_in_op_combinations())
@pytest.mark.parametrize("d", [1, 2, 3])
def test_every_built_in_op_compiles_with_inductor_in_training_and_inference(d, downsample, upsample, causal):
    """Inductor, not aot_eager: its own lowerings and stride checks failed for pool down ops in training
    and a causal hold after a nearest resize in inference (found with this sweep)."""
    torch._dynamo.reset()
    layer = LAYERS[d](4, 3, 2, downsample=downsample, upsample=upsample, causal=causal)
    x = torch.randn(SHAPES[d][0], 4, *SHAPES[d][2:])
    compile_and_compare(layer, x)
    with torch.no_grad():
        torch.testing.assert_close(
            torch.compile(layer.eval(), fullgraph=True)(x), layer(x), rtol=1e-4, atol=1e-4
        )


DYNAMIC_SIZES = {  # rank: sizes not divisible by 2**level, for the dynamic sweep
    1: [(37,), (50,), (61,)],
    2: [(13, 15), (17, 20), (22, 19)],
    3: [(6, 7, 9), (7, 10, 11), (9, 9, 13)],
}


@pytest.mark.slow
@pytest.mark.parametrize("downsample, upsample, causal", built_in_op_combinations())
@pytest.mark.parametrize("d", [1, 2, 3])
def test_every_built_in_op_compiles_for_dynamic_sizes_with_inductor(d, downsample, upsample, causal):
    """``dynamic=True``, three sizes not divisible by ``2**level``, training and inference against eager
    (a symbolic modulo in the Haar block's padding failed here)."""
    torch._dynamo.reset()
    layer = LAYERS[d](4, 3, 2, downsample=downsample, upsample=upsample, causal=causal)
    compiled = torch.compile(layer, dynamic=True)
    for size in DYNAMIC_SIZES[d]:
        x = torch.randn(2, 4, *size)
        for got, expected in zip(outputs_and_gradients(compiled, x), outputs_and_gradients(layer, x)):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), layer(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("downsample, upsample, causal", built_in_op_combinations())
@pytest.mark.parametrize("d", [1, 2, 3])
def test_every_built_in_op_compiles_under_bfloat16_autocast_with_inductor(d, downsample, upsample, causal):
    """Training under CPU autocast to bfloat16: logits and parameter gradients within 5 % (in norm) of
    eager mode's, which rounds differently."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = LAYERS[d](4, 3, 2, downsample=downsample, upsample=upsample, causal=causal)
    x = torch.randn(SHAPES[d][0], 4, *SHAPES[d][2:])
    results = []
    for module in (torch.compile(layer), layer):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(x)
        gradients = torch.autograd.grad(out.float().square().sum(), list(layer.parameters()))
        results.append([out.float(), *gradients])
    for got, expected in zip(*results):
        assert (got - expected).norm() <= 0.05 * expected.norm()


@pytest.mark.slow
def test_compiled_training_under_bfloat16_autocast_has_no_graph_breaks():
    torch._dynamo.reset()
    layer = RecConv2d(4, 5, 2)
    x = torch.randn(2, 4, 20, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        compiled = torch.compile(layer, fullgraph=True)
        got, expected = compiled(x), layer(x)
        assert got.dtype == expected.dtype == torch.bfloat16
        torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
        got.float().sum().backward()


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True], ids=["centered", "causal"])
@pytest.mark.parametrize("d", [1, 2])
def test_dynamic_sizes_compile_at_most_twice(d, causal):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    layer = LAYERS[d](4, 3, 3, causal=causal)
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    for n in (32, 37, 45, 50, 61):  # 37, 45 and 61 are not divisible by 2**level
        x = torch.randn(2, 4, *(n,) * d)
        compiled(x).sum().backward()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2


@pytest.mark.cuda
@pytest.mark.parametrize("d", [1, 2, 3])
def test_cuda_matches_cpu_in_training(d):
    layer = LAYERS[d](8, 5, 2).double()
    x = torch.randn(SHAPES[d], dtype=torch.float64)
    expected = outputs_and_gradients(layer, x)
    got = outputs_and_gradients(layer.cuda(), x.cuda())
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-10)


@pytest.mark.cuda
@pytest.mark.parametrize("d", [1, 2, 3])
def test_cuda_compiled_training_matches_eager(d):
    torch._dynamo.reset()
    compile_and_compare(LAYERS[d](8, 5, 2).cuda(), torch.randn(SHAPES[d], device="cuda"))


@pytest.mark.cuda
def test_cuda_bfloat16_autocast_training():
    layer = RecConv2d(8, 5, 3).cuda()
    x = torch.randn(SHAPES[2], device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    "d, dtype, recompute, recomputes",
    [(1, torch.float32, None, False), (2, torch.float32, None, False), (3, torch.float32, None, False),
     (2, torch.float64, None, True), (1, torch.float64, None, True), (2, torch.float32, True, True)],
)  # fmt: skip
def test_compiled_training_recomputes_by_default_only_where_the_convs_are_inductors(
    d, dtype, recompute, recomputes
):
    """Storing is the faster where the convs run as recconv's op (float32 on the CPU)."""
    torch._dynamo.reset()
    layer = LAYERS[d](4, 3, 2, recompute=recompute, dtype=dtype)
    backend = CompileCounterWithBackend("aot_eager")
    x = torch.randn(SHAPES[d][0], 4, *SHAPES[d][2:], dtype=dtype)
    torch.compile(layer, backend=backend, fullgraph=True)(x).sum().backward()
    checkpointed = any("checkpoint" in target for target in node_targets(backend.graphs))
    assert checkpointed == recomputes


def test_recompute_is_an_option_checked_and_shown():
    assert "recompute=True" in RecConv1d(2, recompute=True).extra_repr()
    with pytest.raises(TypeError, match=r"RecConv1d: recompute must be None, True or False, got 'yes'"):
        RecConv1d(2, recompute="yes")


def test_set_grad_checkpointing_switches_every_layer_of_a_model():
    from recconv.models import create_model

    model = create_model("recnext_seq_tiny")
    model.set_grad_checkpointing()
    layers = [m for m in model.modules() if isinstance(m, RecConv1d)]
    assert layers and all(layer.recompute is True for layer in layers)
    model.set_grad_checkpointing(False)
    assert all(layer.recompute is None for layer in layers)
