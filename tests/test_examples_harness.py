"""The shared training harness of the examples, on a tiny task that trains in a fraction of a second."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from examples import registry
from examples.kit import audio_data, cli, harness, run_folder
from examples.kit.data import Splits, UsageError
from recconv.models import load_checkpoint
from recconv.models.blocks import RecNeXtBlock

DEFAULTS = cli.Defaults(
    epochs=3, batch_size=8, lr=0.05, embedded_train=64, smoke_epochs=1, smoke_batch_size=4
)


def _splits() -> Splits:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(96, 2, 6, generator=generator)
    labels = (inputs[:, 0].sum(dim=1) > 0).long() + (inputs[:, 1].sum(dim=1) > 0).long()  # 3 classes
    return Splits(
        TensorDataset(inputs[:64], labels[:64]),
        TensorDataset(inputs[64:80], labels[64:80]),
        TensorDataset(inputs[80:], labels[80:]),
        ["none", "one", "both"],
    )


def _tiny_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.GELU(), nn.Flatten(), nn.Linear(24, 3)
    )


class _Double(nn.Module):
    """A transform with a train/eval difference, standing in for augmentation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (2.0 if self.training else 1.0)


def interrupt_after_first_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next run stop with a KeyboardInterrupt right after it saves its first epoch."""
    save = run_folder.save_atomic

    def save_then_interrupt(state: dict, path: Path) -> None:
        save(state, path)
        if state["state"]["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_folder, "save_atomic", save_then_interrupt)


def _run(tmp_path: Path, *flags: str) -> dict:
    args = cli.ExampleParser("tiny", DEFAULTS, out=str(tmp_path)).parse_args(["--device", "cpu", *flags])
    runtime = harness.Runtime(0, 1, torch.device("cpu"))
    harness.seed_everything(args.seed)
    return harness.run("tiny", args, runtime, _splits(), {"net": _tiny_model}, _Double())


def test_run_writes_results_plots_and_loadable_checkpoints(tmp_path: Path) -> None:
    results = _run(tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    net = written["models"]["net"]
    assert set(net) >= {
        "accuracy",
        "params",
        "flops",
        "train_seconds",
        "examples_per_second",
        "history",
        "confusion",
    }
    assert net["params"] == sum(p.numel() for p in _tiny_model().parameters())
    assert net["flops"] == 2 * (4 * 2 * 3 * 6 + 24 * 3)  # conv and linear multiply-adds, one example
    assert [h["epoch"] for h in net["history"]] == [1, 2, 3]
    assert sum(map(sum, net["confusion"])) == 16  # every test example once
    assert net["accuracy"] == sum(net["confusion"][i][i] for i in range(3)) / 16
    assert net["examples_per_second"] == pytest.approx(3 * 64 / net["train_seconds"])
    assert written["training"]["epochs"] == 3 and written["data"]["classes"] == ["none", "one", "both"]
    for png in ("training_curves.png", "confusion_matrix.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    model = _tiny_model()
    load_checkpoint(model, tmp_path / "net.pt")
    trained = torch.load(tmp_path / "net.pt", weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())


def test_same_seed_same_numbers_and_resume_continues_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = _run(tmp_path / "full")["models"]["net"]
    again = _run(tmp_path / "again")["models"]["net"]
    assert [h["train_loss"] for h in again["history"]] == [h["train_loss"] for h in full["history"]]

    interrupt_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed")
    monkeypatch.undo()
    resumed = _run(tmp_path / "resumed", "--resume")["models"]["net"]
    assert resumed["epochs"] == 3
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    assert resumed["confusion"] == full["confusion"]
    full_state = torch.load(tmp_path / "full" / "net.pt", weights_only=True)
    resumed_state = torch.load(tmp_path / "resumed" / "net.pt", weights_only=True)
    assert all(torch.equal(resumed_state["model"][k], v) for k, v in full_state["model"].items())
    assert resumed_state["state"]["step"] == full_state["state"]["step"] == 3 * 8


def test_resume_of_a_finished_run_only_tests(tmp_path: Path) -> None:
    full = _run(tmp_path)["models"]["net"]
    again = _run(tmp_path, "--resume")["models"]["net"]
    assert again["history"] == full["history"] and again["accuracy"] == full["accuracy"]


def test_resume_refuses_other_classes(tmp_path: Path) -> None:
    _run(tmp_path, "--epochs", "1")
    checkpoint = torch.load(tmp_path / "net.pt", weights_only=True)
    checkpoint["classes"] = ["a", "b", "c"]
    torch.save(checkpoint, tmp_path / "net.pt")
    with pytest.raises(UsageError, match=r"--resume: .*net.pt was trained on classes \['a', 'b', 'c'\]"):
        _run(tmp_path, "--resume", "--epochs", "1")


def test_too_small_training_set_and_indivisible_batch(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match="64 examples per process, fewer than one batch of 100; lower --batch-size"
    ):
        _run(tmp_path, "--batch-size", "100")
    args = cli.ExampleParser("tiny", DEFAULTS, out=str(tmp_path)).parse_args(["--batch-size", "5"])
    with pytest.raises(UsageError, match="--batch-size 5 must be divisible by the 2 processes"):
        harness.run("tiny", args, harness.Runtime(0, 2, torch.device("cpu")), _splits(), {"net": _tiny_model})


def test_warmup_cosine_schedule() -> None:
    schedule = harness.WarmupCosine(total_steps=10, warmup_steps=2)
    factors = [schedule(step) for step in range(10)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[3:] == sorted(factors[3:], reverse=True) and factors[-1] == pytest.approx(
        0.0380602, abs=1e-6
    )


def test_smoke_and_explicit_budget() -> None:
    parser = cli.ExampleParser("tiny", DEFAULTS, out="runs/tiny")
    full = parser.parse_args([])
    assert (full.epochs, full.batch_size, full.out) == (3, 8, Path("runs/tiny"))
    smoke = parser.parse_args(["--smoke"])
    assert (smoke.epochs, smoke.batch_size) == (1, 4)
    explicit = parser.parse_args(["--smoke", "--epochs", "5", "--batch-size", "2"])
    assert (explicit.epochs, explicit.batch_size) == (5, 2)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "argument --epochs: expected an int > 0, got '0'"),
        (["--batch-size", "many"], "argument --batch-size: expected an int > 0, got 'many'"),
        (["--lr", "nan"], "argument --lr: expected a float > 0, got 'nan'"),
        (["--workers", "-1"], "argument --workers: expected an int >= 0, got '-1'"),
        (["--device", "tpu:x"], "argument --device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu:x'"),
        (["--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (
            ["--mixer", "recconv,conv"],
            "argument --mixer: expected distinct comma-separated token mixers from recconv, small, recattn, "
            "dense, dilated, wavelet, fft; unknown 'conv' in 'recconv,conv'",
        ),
        (["--mixer", "fft,fft"], "argument --mixer: expected distinct comma-separated token mixers from"),
    ],
)
def test_bad_flags_are_argparse_errors(flags: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.ExampleParser("tiny", DEFAULTS, out="runs/tiny").parse_args(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_cuda_is_an_argparse_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.ExampleParser("tiny", DEFAULTS, out="runs/tiny").parse_args(["--device", "cuda"])
    assert "--device cuda: CUDA is not available here; use --device cpu" in capsys.readouterr().err


def test_splits_head_keeps_the_first_examples_of_every_split() -> None:
    data = [TensorDataset(torch.arange(n).float()[:, None], torch.arange(n) % 2) for n in (10, 3, 5)]
    splits = Splits(*data, classes=["a", "b"], info={"source": "test"})
    head = splits.head(4)
    assert [len(d) for d in (head.train, head.val, head.test)] == [4, 3, 4]
    assert [head.train[i][0].item() for i in range(4)] == [0.0, 1.0, 2.0, 3.0]
    assert (head.classes, head.info) == (["a", "b"], {"source": "test"})


@pytest.mark.parametrize("module", ["cli", "data", "harness", "run_folder"])
def test_kit_docstring_examples_run(module: str) -> None:
    failures, tried = doctest.testmod(importlib.import_module(f"examples.kit.{module}"))
    assert failures == 0


# Today's default budgets (epochs, batch size) on the embedded data: the README's numbers came from them.
EMBEDDED_BUDGETS = {
    "audio_keywords": (8, 64),
    "image_pathfinder": (10, 32),
    "sequence_long_range": (6, 32),
    "video_actions": (10, 16),
}


@pytest.mark.parametrize("name", sorted(registry()))
def test_embedded_data_keep_the_default_budget(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def silence(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(len(labels), audio_data.CLIP_SAMPLES)  # the sizes without a minute of synthesis

    monkeypatch.setattr(audio_data, "synthesize_keywords", silence)
    example = registry()[name]
    train = len(example.embedded(example.parser().parse_args([])).train)
    assert train == example.defaults.embedded_train
    for world_size in (1, 2):
        args = example.parser().parse_args([])
        assert cli.choose_budget(example.defaults, args, train, world_size) is None
        assert (args.epochs, args.batch_size) == EMBEDDED_BUDGETS[name]


def test_a_small_data_dir_gets_the_default_number_of_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    generator = torch.Generator().manual_seed(0)
    for split, count in (("TRAIN", 50), ("TEST", 20)):  # a small two-class UCR set, as a new user has
        labels = torch.arange(count) % 2
        rows = [
            f"{label}\t" + "\t".join(f"{v:.3f}" for v in torch.randn(24, generator=generator).tolist())
            for label in labels
        ]
        (tmp_path / f"Toy_{split}.tsv").write_text("\n".join(rows) + "\n")
    seen = {}

    def capture(example: str, args, *rest) -> dict:
        seen["args"] = args
        return {}

    monkeypatch.setattr(harness, "run", capture)
    with pytest.warns(
        UserWarning, match=r"only 46 training examples for 2 classes \(23 per class\) and 4 for validation"
    ):
        registry()["sequence_long_range"].main(
            ["--device", "cpu", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]
        )
    assert (seen["args"].epochs, seen["args"].batch_size) == (192, 32)  # 192 steps, as 6 epochs x 32 steps
    assert (
        "budget: 192 epochs of 1 step: at least 192 optimizer steps, as the default run on the embedded data "
        "(6 epochs x 32 steps) (--epochs and --batch-size set it yourself)"
    ) in capsys.readouterr().out
    registry()["sequence_long_range"].main(
        ["--device", "cpu", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out"), "--epochs", "3"]
    )
    assert seen["args"].epochs == 3


def _tiny_2d_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.GELU(), nn.Flatten(), nn.Linear(24, 3)
    )


def _run_2d(tmp_path: Path, *flags: str) -> dict:
    """The tiny task as 2x3 images, so that channels-last has something to do."""
    splits = _splits()
    for data in (splits.train, splits.val, splits.test):
        data.tensors = (data.tensors[0].view(-1, 2, 2, 3), data.tensors[1])
    args = cli.ExampleParser("tiny", DEFAULTS, out=str(tmp_path)).parse_args(["--device", "cpu", *flags])
    harness.seed_everything(args.seed)
    return harness.run(
        "tiny", args, harness.Runtime(0, 1, torch.device("cpu")), splits, {"net": _tiny_2d_model}
    )


def test_amp_bf16_trains_under_autocast(tmp_path: Path) -> None:
    plain = _run_2d(tmp_path / "fp32")["models"]["net"]
    amp = _run_2d(tmp_path / "bf16", "--amp", "bf16")
    assert amp["training"]["amp"] == "bf16" and amp["run"]["amp"] == "bf16"
    losses = [h["train_loss"] for h in amp["models"]["net"]["history"]]
    reference = [h["train_loss"] for h in plain["history"]]
    assert losses != reference  # bf16 rounding: autocast was on
    assert losses == pytest.approx(reference, rel=0.1) and losses[-1] < losses[0]  # and it trains


def test_channels_last_keeps_the_numbers(tmp_path: Path) -> None:
    plain = _run_2d(tmp_path / "plain")["models"]["net"]
    last = _run_2d(tmp_path / "last", "--channels-last")
    assert last["training"]["channels_last"] is True
    weight = torch.load(tmp_path / "last" / "net.pt", weights_only=True)["model"]["0.weight"]
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    losses = [h["train_loss"] for h in last["models"]["net"]["history"]]
    assert losses == pytest.approx([h["train_loss"] for h in plain["history"]], rel=1e-4)


def test_compile_trains_the_compiled_model(tmp_path: Path) -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    plain = _run(tmp_path / "eager")["models"]["net"]
    compiled = _run(tmp_path / "compiled", "--compile")
    assert compiled["training"]["compile"] is True
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the training steps ran compiled
    losses = [h["train_loss"] for h in compiled["models"]["net"]["history"]]
    assert losses == pytest.approx([h["train_loss"] for h in plain["history"]], rel=1e-4)
    model = _tiny_model()
    load_checkpoint(model, tmp_path / "compiled" / "net.pt")  # the plain module's keys, no _orig_mod


def test_fp16_on_the_cpu_is_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.ExampleParser("tiny", DEFAULTS, out="runs/tiny").parse_args(["--device", "cpu", "--amp", "fp16"])
    assert "--amp fp16: float16 autocast and its GradScaler need CUDA; use --amp bf16 on the CPU" in (
        capsys.readouterr().err
    )


def test_speed_flags_reach_the_harness_from_every_example(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = []

    def capture(example: str, args, *rest) -> dict:
        seen.append(harness.Speed.from_args(args))
        return {}

    monkeypatch.setattr(harness, "run", capture)
    for name, example in registry().items():
        example.main(
            [
                "--smoke",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / name),
                "--amp",
                "bf16",
                "--compile",
                "--channels-last",
            ]
        )
    assert seen == [harness.Speed("bf16", compile=True, channels_last=True)] * len(registry())


def test_every_mixer_reaches_the_models_of_every_example(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = {}

    def capture(example: str, args, runtime, splits, models, *rest) -> dict:
        seen[example] = models
        return {}

    monkeypatch.setattr(harness, "run", capture)
    for name, example in registry().items():
        example.main(
            ["--smoke", "--device", "cpu", "--out", str(tmp_path / name), "--mixer", ",".join(harness.MIXERS)]
        )
    assert len(seen) == len(registry())
    for models in seen.values():
        assert list(models) == list(harness.MIXERS)
        built = {name: spec() for name, spec in models.items()}
        mixers = {name: type(next(m for m in model.modules() if isinstance(m, RecNeXtBlock)).token_mixer).__name__
                  for name, model in built.items()}  # fmt: skip
        assert mixers["recconv"] == mixers["small"] == mixers["wavelet"]  # wavelet: RecConv with Haar ops
        assert len({mixers[n] for n in ("recconv", "dense", "dilated", "fft", "recattn")}) == 5
        assert built["small"].levels == (0,) * len(built["small"].levels)
        assert all(built[n].widths == built["recconv"].widths for n in built)


@pytest.mark.parametrize("form", ["script", "module"])
def test_examples_run_as_scripts_and_as_modules(form: str) -> None:
    root = Path(__file__).resolve().parents[1]
    command = (
        [sys.executable, "examples/sequence_long_range.py", "--help"]
        if form == "script"
        else [sys.executable, "-m", "examples.sequence_long_range", "--help"]
    )
    # The script form finds the kit beside it (``kit``); the module form finds ``examples`` in the
    # working folder. PYTHONPATH only picks this checkout's recconv over an installed one.
    environment = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Long-range sequence classification" in done.stdout and "--overwrite" in done.stdout
