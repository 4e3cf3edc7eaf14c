"""RecNeXt backbones under torch.compile, channels_last, ONNX Runtime, DDP and timm."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from recconv.models import create_model, list_models, register_timm_models

from .onnx_check import assert_onnx_matches

# One example input per preset family, with a batch of 2 and, at the coarsest level of every stage, at
# least 2 positions per axis (docs/export.md); two further shapes change the batch and every size, to
# sizes not divisible by the model's total stride. CI exports the image, audio and video models it
# exported before dynamic sizes; the other presets share their family's code (tests/test_export.py
# covers 1D RecConv and RecAttn) and run with -m slow.
EXPORT_INPUTS = {
    "recnext_m": ((2, 3, 128, 96), [(1, 3, 67, 51), (3, 3, 100, 130)]),
    "recnext_a": ((2, 3, 128, 96), [(1, 3, 67, 51), (3, 3, 100, 130)]),
    "recnext_audio": ((2, 1, 40, 101), [(1, 1, 64, 77), (3, 1, 33, 150)]),
    "recnext_video": ((2, 3, 6, 40, 36), [(1, 3, 4, 33, 47), (3, 3, 9, 64, 29)]),
    "recnext_seq": ((2, 1, 300), [(1, 1, 97), (3, 1, 1025)]),
}
IN_CI = {"recnext_m0", "recnext_audio_tiny", "recnext_video_tiny"}


def _family(name: str) -> str:
    return re.sub(r"(\d+|_tiny|_small)$", "", name)


@pytest.mark.parametrize(
    "name",
    [name if name in IN_CI else pytest.param(name, marks=pytest.mark.slow) for name in list_models()],
)
def test_onnx_export_with_dynamic_sizes_matches_onnxruntime(tmp_path, name):
    example, more = EXPORT_INPUTS[_family(name)]
    model = create_model(name).eval()
    if name != "recnext_audio_tiny":  # fused and unfused models both export
        model.fuse()
    sizes = [example, *more]
    assert_onnx_matches(model, torch.randn(example), tmp_path / f"{name}.onnx", sizes, rtol=1e-4, atol=1e-5)


def test_every_preset_has_export_inputs():
    assert {_family(name) for name in list_models()} == set(EXPORT_INPUTS)


def test_compile_fullgraph_matches_eager_in_training():
    # float64: training-mode BatchNorm over two samples amplifies float32 rounding differences.
    torch.manual_seed(0)
    model = create_model("recnext_audio_tiny").double()
    x = torch.randn(2, 1, 40, 101, dtype=torch.float64)
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), list(model.parameters()))
    torch._dynamo.reset()
    # fullgraph: dynamo captures the whole model, no graph break; aot_eager also traces the backward
    # (inductor's CPU code generation would add a minute to the test).
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    "name, shape, memory_format",
    [
        ("recnext_m0", (2, 3, 64, 64), torch.channels_last),
        ("recnext_video_tiny", (1, 3, 4, 32, 32), torch.channels_last_3d),
    ],
)
def test_channels_last_gives_the_same_numbers(name, shape, memory_format):
    model = create_model(name).eval()
    x = torch.randn(shape)
    expected = model(x)
    model = model.to(memory_format=memory_format)
    features = model.forward_features(x.to(memory_format=memory_format))
    assert features.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(model.forward_head(features), expected, rtol=1e-4, atol=1e-5)


def _ddp_worker(rank: int, world_size: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # the same initial weights on every rank
        model = DistributedDataParallel(create_model("recnext_seq_tiny", num_classes=3).eval())
        x, y = torch.load(Path(out_dir) / "batch.pt")
        for _ in range(2):  # a second step fails if any parameter got no gradient in the first
            model.zero_grad()
            F.cross_entropy(model(x[rank::world_size]), y[rank::world_size]).backward()
        if rank == 0:
            torch.save([p.grad for p in model.module.parameters()], Path(out_dir) / "grads.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_single_process_trains_without_unused_parameters(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = create_model("recnext_seq_tiny", num_classes=3, drop_path_rate=0.1)
        reference = create_model("recnext_seq_tiny", num_classes=3, drop_path_rate=0.1)
        reference.load_state_dict(model.state_dict())
        ddp = DistributedDataParallel(
            model
        )  # find_unused_parameters=False: every parameter must get a gradient
        x, y = torch.randn(4, 1, 96), torch.tensor([0, 1, 2, 0])
        for step in range(2):
            torch.manual_seed(step)
            F.cross_entropy(ddp(x), y).backward()
            torch.manual_seed(step)
            F.cross_entropy(reference(x), y).backward()
        for p, q in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_average_to_the_full_batch_gradient(tmp_path):
    torch.manual_seed(1)
    x, y = torch.randn(4, 1, 96), torch.tensor([0, 1, 2, 0])
    torch.save((x, y), tmp_path / "batch.pt")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    torch.manual_seed(0)
    model = create_model("recnext_seq_tiny", num_classes=3).eval()
    # Each rank holds two samples, so the mean over ranks of per-rank mean losses is the full-batch mean.
    F.cross_entropy(model(x[0::2]), y[0::2]).add(F.cross_entropy(model(x[1::2]), y[1::2])).div(2).backward()
    for ddp_grad, p in zip(torch.load(tmp_path / "grads.pt"), model.parameters()):
        torch.testing.assert_close(ddp_grad, p.grad, rtol=1e-5, atol=1e-7)


def test_timm_registration():
    timm = pytest.importorskip("timm")
    registered = register_timm_models()
    assert "recnext_audio_tiny" in registered or timm.is_model("recnext_audio_tiny")
    assert register_timm_models() == []  # names timm already has are left alone
    model = timm.create_model("recnext_audio_tiny", num_classes=5, drop_path_rate=0.1)
    assert model.head.head.linear.out_features == 5
    backbone = timm.create_model("recnext_m0", features_only=True, out_indices=(2, 3))
    assert [info["num_chs"] for info in backbone.feature_info] == [160, 320]
    with pytest.raises(ValueError, match="downloads nothing"):
        timm.create_model("recnext_m0", pretrained=True)
