"""Effective receptive fields, cost profiles and their ``recconv erf`` / ``recconv profile`` commands."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import pytest
import torch
from torch import nn

from recconv import RecConv1d, RecConv2d, RecConv3d, conv_flops, num_params, receptive_field
from recconv.analysis import (
    THRESHOLDS,
    erf,
    format_rows,
    model_erf,
    plot_erfs,
    profile,
    ratio_table,
    recconv_erfs,
    saved_bytes,
)
from recconv.cli import main

RECCONV = (RecConv1d, RecConv2d, RecConv3d)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def ones_conv(spatial_dims: int, channels: int, kernel_size: int, **kwargs) -> nn.Module:
    conv = CONV[spatial_dims - 1](
        channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False, **kwargs
    )
    nn.init.ones_(conv.weight)
    return conv


def hand_box(share_of_side: dict[int, float], threshold: float) -> int:
    """The smallest odd side whose share exceeds ``threshold`` (the hand computation)."""
    return min(side for side, share in share_of_side.items() if share > threshold)


# --- the ERF of a plain k-kernel conv --------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("kind", ["recconv level 0", "nn.Conv"])
def test_plain_conv_erf_has_k_to_the_d_support_and_hand_computed_ratios(spatial_dims, kind):
    k, size, channels = 5, 11, 3
    if kind == "nn.Conv":
        model = ones_conv(spatial_dims, channels, k)
    else:
        model = RECCONV[spatial_dims - 1](channels, k, level=0)
        nn.init.ones_(model.convs[0].weight)
    result = erf(model, (1, channels, *(size,) * spatial_dims), samples=3, seed=1)

    window = tuple(slice(size // 2 - k // 2, size // 2 + k // 2 + 1) for _ in range(spatial_dims))
    assert result.support == k**spatial_dims
    assert bool((result.scores[window] > 0).all())
    # With equal weights every tap gets the same score, so D is 1 on the window and 0 elsewhere.
    expected = torch.zeros((size,) * spatial_dims, dtype=torch.float64)
    expected[window] = 1
    torch.testing.assert_close(result.normalized, expected)
    # By hand: a box of side s holds (min(s, k) / k)**d of sum(D) and covers (s / size)**d of the input.
    shares = {s: (min(s, k) / k) ** spatial_dims for s in range(1, size + 1, 2)}
    for ratio, threshold in zip(result.ratios, THRESHOLDS):
        side = hand_box(shares, threshold)
        assert (ratio.threshold, ratio.side) == (threshold, side)
        assert ratio.area_ratio == pytest.approx((side / size) ** spatial_dims)


def test_unequal_taps_match_a_hand_computation():
    conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 2.0, 3.0]]]))
    result = erf(conv, (1, 1, 9), inputs=[torch.ones(1, 1, 9)], thresholds=(0.3, 0.35, 0.5))
    # y[4] = x[3] + 2 x[4] + 3 x[5] > 0, so M = (1, 2, 3) around the center.
    torch.testing.assert_close(result.scores, torch.tensor([0, 0, 0, 1, 2, 3, 0, 0, 0], dtype=torch.float64))
    d = [math.log10(2) / math.log10(4), math.log10(3) / math.log10(4), 1.0]
    torch.testing.assert_close(result.normalized[3:6], torch.tensor(d, dtype=torch.float64))
    center_share = d[1] / sum(d)  # 0.3457: passes 0.3, not 0.35
    assert 0.3 < center_share < 0.35
    assert [(r.side, r.area_ratio) for r in result.ratios] == [(1, 1 / 9), (3, 3 / 9), (3, 3 / 9)]


def test_an_output_smaller_than_the_input_is_read_at_its_center():
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    result = erf(conv, (1, 1, 9, 9), inputs=[torch.ones(1, 1, 9, 9)])
    # Output 5 x 5, center 2: it reads input rows and columns 3, 4, 5.
    hit = result.scores > 0
    assert hit.sum() == 9 and bool(hit[3:6, 3:6].all())


def test_no_box_passes_the_threshold_for_an_all_zero_map():
    conv = ones_conv(2, 2, 3)
    nn.init.zeros_(conv.weight)
    result = erf(conv, (1, 2, 7, 7), samples=2)
    assert result.support == 0
    assert bool((result.normalized == 0).all())
    assert all(r.side is None and r.area_ratio is None for r in result.ratios)
    assert "| zero | 0 | none | none | none | none |" in ratio_table([("zero", result)])


def test_an_output_independent_of_the_input_has_an_empty_erf():
    result = erf(lambda x: torch.ones(1, 2, 4), (1, 2, 8), samples=1)
    assert result.support == 0


def test_erf_is_deterministic_for_a_seed():
    torch.manual_seed(0)
    layer = RecConv2d(4, 3, level=2)
    first = erf(layer, (1, 4, 24, 24), samples=2, seed=7)
    again = erf(layer, (1, 4, 24, 24), samples=2, seed=7)
    other = erf(layer, (1, 4, 24, 24), samples=2, seed=8)
    assert torch.equal(first.scores, again.scores)
    assert not torch.equal(first.scores, other.scores)
    assert first.samples == 2


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_erf_area_grows_with_level(spatial_dims):
    results = [r for _, r in recconv_erfs(spatial_dims, 3, [0, 1, 2], channels=8, samples=2, seed=0)]
    supports = [r.support for r in results]
    widest = [r.ratios[-1].side for r in results]  # t = 0.99
    assert supports == sorted(set(supports)), supports
    assert widest == sorted(set(widest)), widest


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("level", [0, 1, 2])
def test_erf_support_is_the_receptive_field(spatial_dims, level):
    # Positive weights and a positive input: no contribution cancels, so the ERF's support is the
    # whole receptive field (on a size that is a multiple of 2**level, as on an unbounded input).
    layer = RECCONV[spatial_dims - 1](1, 3, level)
    for parameter in layer.parameters():
        nn.init.constant_(parameter, 0.5)
    field = receptive_field(layer)
    shape = (1, 1, *(4 * (field[0] // 4 + 1),) * spatial_dims)
    assert erf(layer, shape, inputs=[torch.ones(shape)]).support == math.prod(field)


def test_recconv_erfs_labels_and_default_size():
    results = recconv_erfs(1, 5, [0, 2], channels=2, samples=1)
    assert [label for label, _ in results] == ["level 0 (RF 5)", "level 2 (RF 49)"]
    assert results[0][1].scores.shape == (60,)  # 49 + 2 * 5, rounded up to a multiple of 4


def test_erf_of_a_backbone_uses_its_last_feature_map_and_parameters():
    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.head = nn.Linear(4, 10)

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.stem(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.forward_features(x).mean((2, 3)))

    torch.manual_seed(0)
    model = Backbone().double()
    result = erf(model.forward_features, (1, 3, 16, 16), samples=2)
    hit = (result.scores > 0).nonzero()
    assert hit.min() >= 7 and hit.max() <= 9  # output center 4 reads input 7..9
    with pytest.raises(
        ValueError, match=re.escape("got (1, 10); for a classifier pass model.forward_features")
    ):
        erf(model, (1, 3, 16, 16), samples=1)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: erf(nn.Identity(), (1, 2)), ValueError, "erf: input_shape must be (N, C, *spatial) with 1 to 3 spatial axes of positive sizes, got (1, 2)"),
        (lambda: erf(nn.Identity(), (1, 2, 0)), ValueError, "erf: input_shape must be (N, C, *spatial) with 1 to 3 spatial axes of positive sizes, got (1, 2, 0)"),
        (lambda: erf(nn.Identity(), (1, 1, 2, 2, 2, 2)), ValueError, "erf: input_shape must be (N, C, *spatial) with 1 to 3 spatial axes of positive sizes, got (1, 1, 2, 2, 2, 2)"),
        (lambda: erf(nn.Identity(), (1, 1, 4), thresholds=(0.5, 1.0)), ValueError, "erf: thresholds must be numbers in (0, 1), got (0.5, 1.0)"),
        (lambda: erf("conv", (1, 1, 4)), TypeError, "erf: model must be a module or a callable, got str"),
        (lambda: erf(nn.Identity(), (1, 1, 4), samples=2, inputs=[]), ValueError, "erf: pass either samples (random inputs) or inputs, not both"),
        (lambda: erf(nn.Identity(), (1, 1, 4), samples=0), ValueError, "erf: samples must be a positive int, got 0"),
        (lambda: erf(nn.Identity(), (1, 1, 4), inputs=[]), ValueError, "erf: inputs is empty"),
        (lambda: erf(nn.Identity(), (1, 1, 4), inputs=[torch.ones(1, 1, 5)]), ValueError, "erf: input 0 has shape (1, 1, 5), expected (1, 1, 4)"),
        (lambda: erf(lambda x: x / 0, (1, 1, 4), samples=1), ValueError, "erf: the gradient for input 0 is not finite"),
        (lambda: recconv_erfs(2, 5, []), ValueError, "recconv_erfs: levels must name at least one level"),
        (lambda: plot_erfs([], "x.png"), ValueError, "plot_erfs: no results to draw"),
    ],
)  # fmt: skip
def test_erf_errors(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_plot_refuses_mixed_ranks(tmp_path):
    one = erf(ones_conv(1, 1, 3), (1, 1, 5), samples=1)
    two = erf(ones_conv(2, 1, 3), (1, 1, 5, 5), samples=1)
    with pytest.raises(
        ValueError, match=re.escape("plot_erfs: all maps must have the same rank, got ranks [1, 2]")
    ):
        plot_erfs([("a", one), ("b", two)], tmp_path / "x.png")


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("spatial_dims, pixels", [(1, (700, 350)), (2, (700, 300)), (3, (700, 900))])
def test_plots_are_valid_pngs(tmp_path, spatial_dims, pixels, log):
    from PIL import Image

    result = erf(ones_conv(spatial_dims, 1, 3), (1, 1, *(7,) * spatial_dims), samples=1)
    path = tmp_path / "erf.png"
    plot_erfs([("a", result), ("b", result)], path, log=log)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.size == pixels


# --- --model: backbones resolved by name -----------------------------------------------------


def test_model_erf_builds_the_model_by_name():
    name, result = model_erf("recnext_seq_tiny", size=64, samples=1)
    assert name == "recnext_seq_tiny"
    assert result.scores.shape == (64,)  # (1, 1, 64): the preset's channels, 64 along its one axis
    assert result.support > 0


def test_model_erf_loads_a_checkpoint(tmp_path):
    from recconv.models import create_model, save_checkpoint

    path = tmp_path / "zeros.pth"
    model = create_model("recnext_seq_tiny")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    save_checkpoint(model, path)
    # all-zero weights: nothing reaches the output, so no box holds any share of the map
    _, result = model_erf("recnext_seq_tiny", size=32, samples=1, checkpoint=str(path))
    assert result.support == 0
    assert all(r.side is None for r in result.ratios)


def test_model_erf_errors():
    with pytest.raises(ValueError, match=re.escape("unknown model 'recnext_m'; expected one of [")):
        model_erf("recnext_m")
    with pytest.raises(ValueError, match=re.escape("Did you mean 'recnext_audio_tiny'?")):
        model_erf("recnext_audio_tyni")


# --- profile ----------------------------------------------------------------------------------


def test_profile_counts_equal_the_theory_helpers():
    batch, channels, size, k = 2, 3, 8, 3
    limit = 1e6  # time the small layers only, to stay fast
    rows = profile(
        [1, 2, 3],
        [1, 2],
        kernel_size=k,
        channels=channels,
        size=size,
        batch=batch,
        repeats=1,
        warmup=0,
        max_timed_flops=limit,
    )
    assert [(r.rank, r.layer, r.level) for r in rows[:5]] == [
        (1, "k-conv", None),
        (1, "RecConv", 1),
        (1, "dense", 1),
        (1, "RecConv", 2),
        (1, "dense", 2),
    ]
    for row in rows:
        d = row.rank
        positions = size**d
        assert row.input_shape == "x".join(map(str, (batch, channels, *(size,) * d)))
        if row.layer == "RecConv":
            layer = RECCONV[d - 1](channels, k, row.level)
            assert row.params == num_params(layer)
            assert row.flops == conv_flops(layer, (size,) * d, batch_size=batch)
            assert row.receptive_field == receptive_field(layer)[0]
        else:
            width = k if row.layer == "k-conv" else k * 2**row.level + 1
            assert row.kernel == row.receptive_field == width
            assert row.params == channels * width**d
            assert row.flops == 2 * batch * channels * width**d * positions
        if row.flops <= limit:
            assert row.forward_ms > 0 and row.train_ms > 0
        else:
            assert row.forward_ms is None and row.train_ms is None
        assert row.peak_mib is None  # CPU
    input_mib = batch * channels * size**3 * 4 / 2**20
    k_conv_3d = next(r for r in rows if r.rank == 3 and r.layer == "k-conv")
    assert k_conv_3d.saved_mib == pytest.approx(input_mib)  # a conv keeps only its input


def test_saved_bytes_of_recconv_by_hand():
    # RecConv2d level 2 on 8 x 8, float32. The down conv keeps x (8 x 8) and f_1 (4 x 4); convs[0]
    # keeps f_2 (2 x 2), convs[1] keeps f_1 + h (4 x 4), convs[2] keeps x + h (8 x 8); linear up and
    # the additions keep nothing, and the weights are parameters. With recompute=True training keeps
    # only x and recomputes the rest in backward.
    layer = RecConv2d(1, 3, 2, device="meta")
    assert saved_bytes(layer, (1, 1, 8, 8)) == 4 * (64 + 16 + 4 + 16 + 64)
    layer.recompute = True
    assert saved_bytes(layer, (1, 1, 8, 8)) == 4 * 64
    assert saved_bytes(layer.eval(), (1, 1, 8, 8)) == 4 * (64 + 16 + 4 + 16 + 64)


def test_profile_skips_timing_over_the_flop_limit():
    rows = profile(
        [2], [3], kernel_size=3, channels=2, size=8, batch=1, repeats=1, warmup=0, max_timed_flops=3000
    )
    timed = {r.layer: r.train_ms is not None for r in rows}
    assert timed == {"k-conv": True, "RecConv": False, "dense": False}
    dense = rows[-1]
    assert dense.forward_ms is None and dense.flops == 2 * 2 * 25**2 * 64 and dense.saved_mib > 0


def test_profile_formats():
    rows = profile([1], [1], kernel_size=3, channels=2, size=16, batch=1, repeats=1, warmup=0)
    table = format_rows(rows, "md").splitlines()
    assert table[0].startswith("| rank | layer | level | kernel | RF | params | MFLOPs | FLOPs / k-conv |")
    assert table[2].startswith("| 1D | k-conv | — | 3 | 3 | 6 | 0.00 | 1.00 |")
    assert table[4].startswith("| 1D | dense | 1 | 7 | 7 | 14 | 0.00 | 2.33 |")
    records = list(csv.DictReader(io.StringIO(format_rows(rows, "csv"))))
    assert [r["layer"] for r in records] == ["k-conv", "RecConv", "dense"]
    assert records[1]["params"] == str(rows[1].params) and records[0]["level"] == ""
    assert json.loads(format_rows(rows, "json"))[2]["flops"] == rows[2].flops == 2 * 2 * 7 * 16
    with pytest.raises(
        ValueError,
        match=re.escape("format_rows: unknown format 'xml'; expected one of ['csv', 'json', 'md']"),
    ):
        format_rows(rows, "xml")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dims": [4]}, "profile: dims must be ranks among 1, 2, 3, got [4]"),
        ({"levels": [-1]}, "profile: levels must be ints >= 0, got [-1]"),
        ({"kernel_size": 4}, "profile: kernel_size must be odd and positive, got 4"),
        ({"channels": 0}, "profile: channels must be a positive int, got 0"),
        ({"batch": -1}, "profile: batch must be a positive int, got -1"),
        ({"repeats": 0}, "profile: repeats must be a positive int, got 0"),
        ({"size": 0}, "profile: size must be a positive int or None, got 0"),
        ({"warmup": -1}, "profile: warmup must be an int >= 0, got -1"),
    ],
)
def test_profile_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        profile(**kwargs)


# --- the command line ------------------------------------------------------------------------


def test_cli_erf_writes_a_png_and_the_ratio_table(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "erf.png"
    argv = ["erf", "--dims", "2", "--kernel-size", "3", "--levels", "0", "1", "--channels", "2"]
    assert main([*argv, "--samples", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ratio_table(recconv_erfs(2, 3, [0, 1], channels=2, samples=2, seed=0)) in printed
    assert "| level 1 (RF 11) |" in printed
    assert f"wrote {out}" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        assert image.size == (700, 300)  # two 3-inch panels + a colorbar inch, at 100 dpi


def test_cli_erf_with_a_model(tmp_path, capsys):
    out = tmp_path / "model.png"
    argv = ["erf", "--model", "recnext_seq_tiny", "--size", "64", "--samples", "1", "--log-color"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "| recnext_seq_tiny |" in capsys.readouterr().out
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("fmt", ["md", "csv", "json"])
def test_cli_profile_prints_a_table(capsys, fmt):
    argv = ["profile", "--dims", "1", "--levels", "1", "--size", "16", "--channels", "2", "--batch", "1"]
    assert main([*argv, "--repeats", "1", "--warmup", "0", "--format", fmt]) == 0
    printed = capsys.readouterr().out
    if fmt == "md":
        assert "| 1D | RecConv | 1 | 5 | 19 | 30 |" in printed
    elif fmt == "csv":
        assert printed.splitlines()[0].startswith(
            "rank,layer,level,kernel,receptive_field,input_shape,params,flops"
        )
        assert len(printed.splitlines()) == 4
    else:
        assert [r["layer"] for r in json.loads(printed)] == ["k-conv", "RecConv", "dense"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["erf", "--dims", "4"], "argument --dims: invalid choice: 4"),
        (["erf", "--kernel-size", "4"], "argument --kernel-size: expected an odd kernel size, got 4"),
        (["erf", "--samples", "0"], "argument --samples: expected a positive int, got 0"),
        (["erf", "--model", "m0", "--levels", "1"], "--model reads its layout from the model; drop --levels"),
        (
            ["erf", "--model", "m0", "--channels", "4"],
            "--model reads its layout from the model; drop --channels",
        ),
        (
            ["erf", "--checkpoint", "w.pt", "--dims", "1"],
            "--checkpoint reads its layout from the model; drop --dims",
        ),
        (
            ["erf", "--out", "/no/such/folder/erf.png"],
            "cannot save a figure to '/no/such/folder/erf.png': folder '/no/such/folder' does not exist",
        ),
        (
            ["erf", "--out", "erf.txt"],
            "cannot save a figure as 'erf.txt': expected a file ending in one of [",
        ),
        (["profile", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["profile", "--warmup", "-1"], "argument --warmup: expected an int >= 0, got -1"),
        (
            ["profile", "--max-timed-flops", "0"],
            "argument --max-timed-flops: expected a positive number, got 0",
        ),
        (["profile", "--device", "gpu0"], "unknown device 'gpu0'"),
        (["profile", "--levels", "9"], "argument --levels: invalid choice: 9"),
    ],
)
def test_cli_bad_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: recconv {argv[0]}")
    assert message in err


def test_cli_model_errors_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["erf", "--model", "recnext_mm0"])
    assert exit_info.value.code == 2
    assert "recconv erf: error: model_erf: unknown model 'recnext_mm0'" in capsys.readouterr().err
