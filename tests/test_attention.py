"""RecAttn and LinearAttention: the paper's formulas in every rank, costs, fusing, precision, errors."""

from __future__ import annotations

import copy
import io
import math
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import recconv
from recconv import LinearAttention, RecAttn1d, RecAttn2d, RecAttn3d
from recconv.attention import _ATTEND, RecAttnNd, linear_attention, official_to_recconv, recconv_to_official
from recconv.ops import ConvNorm

from . import reference
from .helpers import randomize_norms
from .strategies import MAX_SIZE, ranks

RECATTN = {1: RecAttn1d, 2: RecAttn2d, 3: RecAttn3d}
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@st.composite
def recattn_kwargs(draw) -> dict:
    d = draw(ranks)
    heads = draw(st.sampled_from([1, 2, 4]))
    return {
        "spatial_dims": d,
        "in_channels": heads * 2 * draw(st.integers(1, 2)),
        "num_heads": heads,
        "kernel_size": draw(st.sampled_from([1, 3, 5])),
        "level": draw(st.integers(1, 3 if d < 3 else 2)),
        "variant": draw(st.sampled_from([1, 2])),
        "factor": draw(st.sampled_from([2, 3])),
    }


def build(kwargs: dict) -> RecAttnNd:
    options = dict(kwargs)
    return RECATTN[options.pop("spatial_dims")](**options)


# --- the paper's formulas -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "d, size, heads, variant, level",
    [
        (1, (23,), 2, 1, 1),
        (1, (40,), 4, 2, 3),
        (2, (9, 14), 2, 1, 1),
        (2, (13, 7), 4, 2, 2),
        (3, (5, 6, 7), 2, 1, 1),
        (3, (4, 9, 5), 2, 2, 2),
    ],
)
def test_matches_a_plain_reference_of_the_formulas(d, size, heads, variant, level):
    layer = randomize_norms(RECATTN[d](8, heads, 5, level, variant=variant)).eval().double()
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    expected = reference.recattn(x, recconv_to_official(layer.state_dict(), layer), heads, variant, level)
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


class PaperRecAttn(nn.Module):
    """The paper's module structure: ``down = [strided ConvNorm, attention]``, ``conv`` = ConvNorm."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            ConvNorm(channels, channels, 5, 2, 2, groups=channels), LinearAttention(channels, heads)
        )
        self.conv = ConvNorm(channels, channels, 5, 1, 2, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x + F.interpolate(self.down(x), size=x.shape[2:], mode="nearest"))


def test_the_papers_module_structure_converts_both_ways():
    ours = randomize_norms(RecAttn2d(16, 4)).eval().double()
    paper = PaperRecAttn(16, 4).eval().double()
    assert list(paper.state_dict()) == list(recconv_to_official(ours.state_dict(), ours))
    paper.load_state_dict(recconv_to_official(ours.state_dict(), ours))  # strict: every name and shape
    x = torch.randn(2, 16, 15, 12, dtype=torch.float64)
    # Close, not equal: on the CPU the core runs its ops on channels-last tensors.
    torch.testing.assert_close(paper(x), ours(x), rtol=1e-12, atol=1e-12)
    theirs = randomize_norms(PaperRecAttn(16, 4), seed=1).eval().double()
    assert not torch.allclose(theirs(x), ours(x))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "uses the paper's RecAttn names (e.g. 'down.0.conv.weight'); load it with recconv.models.load_checkpoint"
        ),
    ):
        ours.load_state_dict(theirs.state_dict())
    ours.load_state_dict(official_to_recconv(theirs.state_dict(), ours))
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


def test_state_dict_names_are_the_module_names_at_every_level():
    layer = RecAttn1d(4, 2, level=3)
    prefixes = list(dict.fromkeys(key.rsplit(".", 2)[0] for key in layer.state_dict()))
    assert prefixes == ["down", "convs.0.qk", "convs.0.pe", "convs.1", "convs.2", "convs.3"]
    names = [name for name, _ in (*layer.named_parameters(), *layer.named_buffers())]
    assert sorted(names) == sorted(layer.state_dict())
    assert isinstance(layer.convs[0], LinearAttention) and len(layer.convs) == 4
    missing = layer.load_state_dict({"convs.3.extra": torch.zeros(1)}, strict=False)
    assert "convs.0.qk.conv.weight" in missing.missing_keys and "convs.3.conv.weight" in missing.missing_keys
    assert missing.unexpected_keys == ["convs.3.extra"]
    with pytest.raises(RuntimeError, match=re.escape('Missing key(s) in state_dict: "down.conv.weight"')):
        layer.load_state_dict({})


def test_the_two_variants_are_one_function_in_exact_arithmetic():
    first = randomize_norms(LinearAttention(24, 4, spatial_dims=2)).eval().double()
    second = LinearAttention(24, 4, variant=2, spatial_dims=2).double().eval()
    second.load_state_dict(first.state_dict())
    x = torch.randn(2, 24, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(first(x), second(x), rtol=1e-12, atol=1e-12)


@given(
    variant=st.sampled_from([1, 2]),
    shape=st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 30)),
    a=st.floats(-3, 3),
    b=st.floats(-3, 3),
)
def test_attention_is_linear_in_the_values(variant, shape, a, b):
    generator = torch.Generator().manual_seed(sum(shape))
    q, k = (torch.rand(shape, generator=generator, dtype=torch.float64) + 0.1 for _ in range(2))
    v, w = (torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(2))
    attend = _ATTEND[variant]
    scale = shape[-1] ** -0.5
    combined = attend(q, k, a * v + b * w, scale)
    assert combined.shape == (*shape[:2], shape[3], shape[2])
    torch.testing.assert_close(combined, a * attend(q, k, v, scale) + b * attend(q, k, w, scale))


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("variant", [1, 2])
def test_outputs_are_convex_combinations_of_the_values(d, variant):
    attention = randomize_norms(LinearAttention(8, 2, variant=variant, spatial_dims=d)).eval().double()
    nn.init.zeros_(attention.pe.norm.weight)  # pe then adds its BatchNorm's bias only
    nn.init.zeros_(attention.pe.norm.bias)
    x = torch.randn(3, 8, *(5,) * d, dtype=torch.float64)
    out = attention(x).flatten(2)
    low, high = x.flatten(2).amin(-1, keepdim=True), x.flatten(2).amax(-1, keepdim=True)
    assert ((out >= low - 1e-9) & (out <= high + 1e-9)).all()
    assert out.std(-1).min() > 0  # positions weight the values differently
    nn.init.zeros_(attention.qk.conv.weight)  # constant q and k: every position gets the mean
    mean = x.flatten(2).mean(-1, keepdim=True).expand_as(out)
    torch.testing.assert_close(attention(x).flatten(2), mean, rtol=1e-5, atol=1e-5)  # up to the 1e-6


# --- shapes, costs, fusing ----------------------------------------------------------------------


@given(kwargs=recattn_kwargs(), data=st.data(), batch=st.integers(0, 2))
def test_shapes_params_and_counted_costs(kwargs, data, batch):
    layer = build(kwargs).eval()
    d, c = kwargs["spatial_dims"], kwargs["in_channels"]
    size = data.draw(st.tuples(*[st.integers(1, MAX_SIZE[d])] * d))
    x = torch.randn(batch, c, *size)
    assert layer(x).shape == x.shape
    assert layer(x[0] if batch else torch.randn(c, *size)).shape == (c, *size)
    kernel = kwargs["kernel_size"] ** d
    conv_norm = c * kernel + 2 * c
    attention = c * c + 4 * c + c * 3**d + 2 * c  # qk (2 groups) and pe, each with its BatchNorm
    assert sum(p.numel() for p in layer.parameters()) == (kwargs["level"] + 1) * conv_norm + attention
    # The documented MACs of the attention at the coarse level, as FlopCounterMode counts them.
    coarse = recconv.level_sizes(layer, size)[-1]
    n, head_dim = math.prod(coarse), c // kwargs["num_heads"]
    products = 2 * c * head_dim * n + c * n if kwargs["variant"] == 1 else 2 * c * n * n
    with FlopCounterMode(display=False) as counter:
        layer.convs[0](torch.randn(1, c, *coarse))
    assert counter.get_total_flops() == 2 * (c * c * n + c * 3**d * n + products)
    # The theory helper asks every op (attention included) and agrees with the counter.
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(1, c, *size))
    assert recconv.conv_flops(layer, size) == counter.get_total_flops()


def test_variant_one_cost_grows_linearly_with_positions():
    attention = LinearAttention(32, 4, spatial_dims=2, device="meta")
    macs = []
    for side in (8, 16, 32):
        with FlopCounterMode(display=False) as counter:
            attention(torch.empty(1, 32, side, side, device="meta"))
        macs.append(counter.get_total_flops() // 2)
    assert macs[1] == 4 * macs[0] and macs[2] == 4 * macs[1]


@pytest.mark.parametrize("d, level", [(1, 3), (2, 1), (3, 2)])
def test_fuse_keeps_outputs_and_the_papers_names(d, level):
    layer = randomize_norms(RECATTN[d](8, 2, 3, level)).eval().double()
    x = torch.randn(2, 8, *(9,) * d, dtype=torch.float64)
    expected = layer(x)
    names = [key.split(".conv.")[0] for key in layer.state_dict() if ".conv.weight" in key]
    assert layer.fuse() is layer
    assert not any(isinstance(m, (ConvNorm, nn.modules.batchnorm._BatchNorm)) for m in layer.modules())
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)
    assert [key.removesuffix(".weight") for key in layer.state_dict() if key.endswith(".weight")] == names


def test_training_gradients_reach_every_parameter():
    layer = RecAttn3d(8, 2, 3, level=2, factor=(1, 2, 2))
    x = torch.randn(2, 8, 3, 10, 9, requires_grad=True)
    layer(x).square().mean().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.count_nonzero() > 0, name


def test_gradcheck_float64():
    layer = randomize_norms(RecAttn1d(4, 2, 3, level=2, variant=2)).eval().double()
    x = torch.randn(1, 4, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_channels_last_and_non_contiguous_inputs():
    layer = randomize_norms(RecAttn2d(8, 2)).eval()
    x = torch.randn(2, 8, 10, 12).transpose(2, 3)
    assert not x.is_contiguous()
    expected = layer(x.contiguous())
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)), expected)


def test_compile_fullgraph_matches_eager():
    layer = randomize_norms(RecAttn2d(8, 2, level=2)).eval()
    x = torch.randn(2, 8, 13, 11)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x))


def test_pickle_copy_and_state_dict_round_trips():
    layer = randomize_norms(RecAttn2d(8, 4, level=2, variant=2)).eval()
    x = torch.randn(1, 8, 9, 9)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    restored = RecAttn2d(8, 4, level=2, variant=2).eval()
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    for clone in (restored, pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        torch.testing.assert_close(clone(x), layer(x), rtol=0, atol=0)
        assert list(clone.state_dict()) == list(layer.state_dict())


def test_extra_repr_reads_like_the_constructor():
    assert RecAttn2d(64, 4).extra_repr() == "64, num_heads=4, kernel_size=5, level=1"
    assert RecAttn3d(16, 2, (3, 5, 5), 2, variant=2, factor=(1, 2, 2), upsample="linear").extra_repr() == (
        "16, num_heads=2, kernel_size=(3, 5, 5), level=2, variant=2, factor=(1, 2, 2), upsample='linear'"
    )
    assert (
        LinearAttention(8, 2, variant=2, spatial_dims=1).extra_repr()
        == "8, num_heads=2, variant=2, spatial_dims=1"
    )


# --- precision ----------------------------------------------------------------------------------


def _naive_low_precision(attention: LinearAttention, x: Tensor, dtype: torch.dtype) -> Tensor:
    """The formulas evaluated entirely in ``dtype``: what autocast would do without the float32 guard."""
    b, c = x.shape[:2]
    n, heads = math.prod(x.shape[2:]), attention.num_heads
    qk = (F.elu(attention.qk(x).to(dtype)) + 1).reshape(b, 2, heads, c // heads, n)
    return _ATTEND[attention.variant](*qk.unbind(1), x.to(dtype).reshape(b, heads, c // heads, n), n**-0.5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_autocast_error_against_float64(device, dtype, tolerance):
    layer = randomize_norms(RecAttn2d(32, 4, level=2)).eval().to(device)
    x = torch.randn(2, 32, 28, 28, device=device)
    expected = copy.deepcopy(layer).double()(x.double())
    with torch.autocast(device, dtype=dtype):
        out = layer(x)
    assert out.dtype == dtype
    error = (out.double() - expected).norm() / expected.norm()
    assert error < tolerance, f"relative error {error:.2e} under {dtype} autocast"


@pytest.mark.parametrize("device", DEVICES)
def test_float16_autocast_survives_sums_that_overflow_float16(device):
    # Large activations: k.v summed over positions exceeds float16's range (65504).
    attention = randomize_norms(LinearAttention(16, 2, spatial_dims=2)).eval().to(device)
    x = 60 * torch.randn(1, 16, 16, 16, device=device)
    with torch.autocast(device, dtype=torch.float16):
        out = attention(x)
        naive = _naive_low_precision(attention, x, torch.float16)
    assert not torch.isfinite(naive).all()  # the guard is needed here
    expected = copy.deepcopy(attention).double()(x.double())
    assert torch.isfinite(out).all()
    assert ((out.double() - expected).norm() / expected.norm()) < 4e-3


# --- the plug-in core, swap and theory ----------------------------------------------------------


def test_recattn_is_the_core_with_its_ops_plugged_in():
    layer = RecAttn2d(8, 2, level=2)
    assert isinstance(layer, recconv.RecConvNd)
    assert layer.level == 2 and layer.upsample == "nearest" and layer.shared_down
    assert [type(m).__name__ for m in layer.convs] == ["LinearAttention", "ConvNorm", "ConvNorm"]
    assert layer.down.conv.stride == (2, 2) and layer.down.conv.groups == 8


def test_swap_leaves_recattn_alone_and_theory_describes_it():
    model = nn.Sequential(RecAttn2d(8, 2), nn.Conv2d(8, 8, 3, padding=1, groups=8))
    _, report = recconv.swap(model, level=1)
    assert [layer.name for layer in report.swapped] == ["1"]
    assert "already a RecConv" in report.skipped[0].reason
    layer = RecAttn2d(8, 2)
    assert recconv.num_params(layer) == sum(p.numel() for p in layer.parameters())
    assert recconv.receptive_field(layer) == (math.inf, math.inf)  # the attention sees everything
    with pytest.raises(TypeError, match="coarsest op LinearAttention is not a conv of the layer's kernel"):
        recconv.effective_kernel_size(layer)
    with pytest.raises(TypeError, match="unknown RecConv option 'coarse'"):
        recconv.swap(nn.Conv2d(8, 8, 3, padding=1, groups=8), level=1, coarse=linear_attention)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: RecAttn2d(8, 2, level=0), ValueError, "RecAttn2d: level must be an int >= 1 (the attention works one level down), got 0"),
        (lambda: RecAttn1d(8, 0), ValueError, "RecAttn1d: num_heads must be a positive int, got 0"),
        (lambda: RecAttn2d(12, 8), ValueError, "RecAttn2d: in_channels must be even and a multiple of num_heads, got in_channels=12, num_heads=8"),
        (lambda: RecAttn3d(9, 3), ValueError, "RecAttn3d: in_channels must be even and a multiple of num_heads, got in_channels=9, num_heads=3"),
        (lambda: RecAttn2d(8, 2, variant=3), ValueError, "RecAttn2d: variant must be 1 or 2, got 3"),
        (lambda: RecAttn2d(8, 2, 4), ValueError, "RecAttn2d: kernel_size must be odd and positive, got 4"),
        (lambda: RecAttnNd(8, 2), TypeError, "RecAttnNd is abstract: use RecAttn1d, RecAttn2d or RecAttn3d"),
        (lambda: LinearAttention(8, 3), ValueError, "LinearAttention: dim must be even (qk has 2 groups) and a multiple of num_heads, got dim=8, num_heads=3"),
        (lambda: LinearAttention(0, 1), ValueError, "LinearAttention: dim and num_heads must be positive ints, got 0 and 1"),
        (lambda: LinearAttention(8, 2, variant=0), ValueError, "LinearAttention: variant must be 1 or 2, got 0"),
        (lambda: LinearAttention(8, 2, spatial_dims=4), ValueError, "LinearAttention: spatial_dims must be 1, 2 or 3, got 4"),
        (lambda: linear_attention(8, (3,), num_heads=2, bias=True), ValueError, "linear_attention: bias=True is not supported"),
        (lambda: linear_attention(8, (3,), num_heads=2, causal_axis=0), ValueError, "linear_attention: every position attends to all others, so it cannot be causal"),
    ],
)  # fmt: skip
def test_constructor_errors(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    "layer, x, message",
    [
        (RecAttn2d(8, 2), torch.randn(1, 4, 8, 8), "RecAttn2d(8, level=1): expected (N, 8, H, W) or (8, H, W), got (1, 4, 8, 8)"),
        (RecAttn1d(8, 2, level=2), torch.randn(1, 8, 8, 8), "RecAttn1d(8, level=2): expected (N, 8, L) or (8, L), got (1, 8, 8, 8)"),
        (LinearAttention(8, 2, spatial_dims=3), torch.randn(1, 8, 4, 4), "LinearAttention(8, 2): expected (N, 8) followed by 3 spatial sizes, got (1, 8, 4, 4)"),
    ],
)  # fmt: skip
def test_input_errors(layer, x, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        layer(x)
