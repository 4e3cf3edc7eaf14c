"""``torch.compile(model)`` of every preset: one graph (``fullgraph=True``) in training and inference,
under bfloat16 autocast, outputs and gradients as close to float32 as eager's, and few compilations for
varying sizes.

One preset per kind (1D, 2D, 3D, RecAttn; CI: the 1D one), one block per stage, compiles with the ``aot_eager``
backend: Dynamo's capture (where graph breaks and recompilations come from) and AOTAutograd's forward
and backward graphs, without Inductor's code generation, which takes minutes per model on a small CPU.
The ``slow`` tests compile every full preset with Inductor, the default backend.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from recconv import RecConv1d
from recconv.models import PRESETS, create_model, list_models
from recconv.ops import ConvNorm

ONE_PER_KIND = ["recnext_seq_tiny", "recnext_audio_tiny", "recnext_video_tiny", "recnext_a0"]
# Small inputs every preset accepts. 2D: 128, not 64: at 64 the A series' last stage attends from 1x1
# maps, where a BatchNorm in training over a batch of two normalizes two values per channel and its
# gradients are bfloat16 rounding; recnext_a1's training check failed there on one thread and passed
# on two (pytest -m slow tests/test_compile_models.py -k "every_preset and recnext_a1").
SIZES = {1: (96,), 2: (128, 128), 3: (4, 32, 32)}
# Five sizes per rank for dynamic shapes; most are not divisible by 2**level of any stage. In 3D no
# map of any level is 1 wide for one size and wider for another: the stride order a convolution's
# output gets depends on whether a size is 1, so Dynamo compiles a graph for each side (its 0/1 rule).
DYNAMIC_SIZES = {
    1: [(96,), (111,), (128,), (150,), (173,)],
    2: [(64, 64), (72, 80), (75, 69), (96, 88), (101, 123)],
    3: [(4, 34, 34), (5, 36, 40), (3, 41, 37), (6, 48, 35), (4, 53, 45)],
}


def spatial_dims(name: str) -> int:
    return PRESETS[name].config.get("spatial_dims", 2)


def build(name: str, shallow: bool = False) -> torch.nn.Module:
    """The preset, or with ``shallow`` its blocks one per stage (the time to compile grows with depth)."""
    depths = {"depths": (1,) * len(PRESETS[name].config["depths"])} if shallow else {}
    # Seeded: the bfloat16 checks' margins depend on the weights (unseeded, recnext_audio_tiny's training
    # check failed in some runs).
    torch.manual_seed(0)
    # No stochastic depth: compiled code draws its own random numbers, so masks would differ from eager.
    return create_model(name, num_classes=5, drop_path_rate=0.0, **depths)


def batch(name: str, size: tuple[int, ...] | None = None) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, PRESETS[name].input_size[0], *(size or SIZES[spatial_dims(name)]))


def check_compiled_against_eager(name: str, backend: str, shallow: bool = False) -> None:
    """Train and eval mode under bfloat16 autocast: compiled is about as close to the float32 result as
    eager is, and backward runs.

    Compiled and eager bfloat16 round differently (Inductor fuses ops and keeps float32 between them),
    and in training mode a BatchNorm over a batch of two magnifies rounding: the two can be further from
    each other than compiled is from float32 (``recnext_m0`` in training mode, where compiled came closer
    to float32 than eager). So each is judged against float32: compiled within twice eager's error, plus
    1 % of the largest value. Training-mode gradients can be mostly that rounding: on a CPU with bfloat16
    instructions, ``recnext_m2``'s stem gradients were off float32's by 1.2-2.4 times their norm for some
    weights, eager and compiled alike, and for others compiled was off by 7x eager's error. So there they
    are only held to be finite and not wildly off (within ten times eager's error plus their own norm; a
    wrong kernel was off by 1e8 times); gradients are compared closely in eval mode.
    """
    torch._dynamo.reset()
    model = build(name, shallow)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    x = batch(name)
    for training in (True, False):
        model.train(training)
        statistics = {key: value.clone() for key, value in model.state_dict().items()}
        outputs = {}
        gradients = {}
        for label, net, bfloat16 in (
            ("float32", model, False),
            ("eager", model, True),
            ("compiled", compiled, True),
        ):
            model.load_state_dict(statistics)  # a training step moves BatchNorm statistics: the same start
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
                out = net(x)
            if bfloat16:
                assert out.dtype == torch.bfloat16, f"{name} {label}: logits in {out.dtype}"
            outputs[label] = out.float()
            out.float().square().sum().backward()
            gradients[label] = {n: p.grad for n, p in model.named_parameters()}
        mode = "train" if training else "eval"
        reference = outputs["float32"]
        errors = {label: (outputs[label] - reference).abs().max().item() for label in ("eager", "compiled")}
        allowed = 2 * errors["eager"] + 0.01 * reference.abs().max().item()
        assert errors["compiled"] <= allowed, (
            f"{name} {mode} logits: max |compiled - float32| = {errors['compiled']:.3g}, "
            f"max |eager - float32| = {errors['eager']:.3g} (allowed {allowed:.3g})"
        )
        # Per tensor, the error in norm; some gradients are zero in exact arithmetic (a bias before a
        # BatchNorm in training) and only rounding in bfloat16: judge those against the model's largest.
        largest = max(g.norm().item() for g in gradients["float32"].values() if g is not None)
        slack = (10, 1.0) if training else (2, 0.01)  # times eager's error, and of the gradient's norm
        for param, expected in gradients["float32"].items():
            got, eager = gradients["compiled"][param], gradients["eager"][param]
            assert expected is not None and got is not None, f"{name}: no gradient for {param}"
            assert torch.isfinite(got).all(), f"{name} {mode}: gradient of {param} not finite"
            error = (got.float() - expected).norm().item()
            bound = (
                slack[0] * (eager.float() - expected).norm().item()
                + slack[1] * expected.norm().item()
                + 1e-3 * largest
            )
            assert error <= bound, (
                f"{name} {mode}: gradient of {param} off float32's by {error:.3g} in norm (bound {bound:.3g})"
            )


def compilations(name: str, backend: str, training: bool, shallow: bool = False) -> int:
    """Graphs Dynamo compiles for ``dynamic=True`` over five input sizes (a run of each)."""
    torch._dynamo.reset()
    counters.clear()
    model = build(name, shallow).train(training)
    counting = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=counting)
    for size in DYNAMIC_SIZES[spatial_dims(name)]:
        x = batch(name, size)
        with torch.set_grad_enabled(training):
            out = compiled(x)
            if training:
                out.sum().backward()
            else:
                torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-4)
    # A restart of the analysis (Dynamo re-traces once to specialize float module attributes such as
    # BatchNorm's eps) calls the backend again but installs one graph: count the graphs.
    return counters["stats"]["unique_graphs"]


# CI keeps the 1D preset (about 90 s with the next test on 2 busy cores); the others take as long each.
@pytest.mark.parametrize(
    "name", [ONE_PER_KIND[0], *(pytest.param(name, marks=pytest.mark.slow) for name in ONE_PER_KIND[1:])]
)
def test_one_preset_per_kind_compiles_in_one_graph_and_matches_eager(name):
    check_compiled_against_eager(name, "aot_eager", shallow=True)


def test_dynamic_sizes_train_convs_in_one_graph_with_inductor():
    """Dense convs (strided, pointwise) and a RecConv's lifted ones: Inductor's own lowering of a conv's
    backward compiled a graph per length (see ``recconv.ops._conv_any_size``)."""
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        ConvNorm(2, 8, 3, stride=2, padding=1, spatial_dims=1),
        RecConv1d(8, 3, 2),
        ConvNorm(8, 4, spatial_dims=1),
    )
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for length in (40, 53, 71):
        x = torch.randn(2, 2, length)
        compiled(x).square().sum().backward()
        got = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        model(x).square().sum().backward()
        for a, b in zip(got, (p.grad for p in model.parameters())):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        model.zero_grad()
    assert counters["stats"]["unique_graphs"] == 1


def test_dynamic_sizes_compile_a_1d_preset_at_most_twice():
    # Dynamo alone decides on recompilations: its "eager" backend runs the captured graph as is.
    assert compilations("recnext_seq_tiny", "eager", training=False) <= 2


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_preset_compiles_with_inductor_and_matches_eager(name):
    check_compiled_against_eager(name, "inductor")


# Upstream, not ours: torch 2.14.1's C++ code generation guards whether a float32 sum reduces more than
# 4096 elements (need_use_acc_helper in torch/_inductor/codegen/cpp.py), and the training graphs of the 3D
# and RecAttn presets have such sums (over the batch and a stage's map) that cross it among these sizes
# (recnext_video_tiny: 2 x 6 x 24 x 18 = 5184 at the stem's output for (6, 48, 35)), so each side gets its
# own graph: three in all, with duck sizing's (TORCH_LOGS=recompiles,dynamic). Strict: a release that
# drops the guard makes these tests fail until the marks go.
SUM_SIZE_GUARDED = pytest.mark.xfail(
    strict=True, reason="torch's Inductor compiles a graph for each side of a 4096-element float32 sum"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, training",
    [
        *((name, False) for name in ONE_PER_KIND),
        ("recnext_seq_tiny", True),
        ("recnext_audio_tiny", True),
        pytest.param("recnext_video_tiny", True, marks=SUM_SIZE_GUARDED),
        pytest.param("recnext_a0", True, marks=SUM_SIZE_GUARDED),
    ],
    ids=lambda value: {True: "train", False: "eval"}.get(value, value),
)
def test_dynamic_sizes_compile_at_most_twice_with_inductor(name, training):
    assert compilations(name, "inductor", training) <= 2
