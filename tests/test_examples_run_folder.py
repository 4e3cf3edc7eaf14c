"""The examples' ``--out`` folder: never silently overwritten, never mixed with another run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from examples import registry
from examples.kit import run_folder
from examples.kit.data import UsageError

from .test_examples_harness import _run, interrupt_after_first_epoch


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_finished_run_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    _run(tmp_path, "--epochs", "1")
    before = _snapshot(tmp_path)
    with pytest.raises(
        UsageError,
        match=r"holds a finished run \(results.json, net.pt\); continue it with "
        r"--resume, replace it with --overwrite, or choose another --out",
    ):
        _run(tmp_path, "--epochs", "2")
    assert _snapshot(tmp_path) == before


def test_a_partial_run_is_refused_and_results_describe_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path)
    monkeypatch.undo()
    # The interruption came after the checkpoint: results.json does not list epoch 1 yet, and says so.
    results = json.loads((tmp_path / "results.json").read_text())
    checkpoint = torch.load(tmp_path / "net.pt", weights_only=True)
    assert results["status"] == "running" and results["run"] == checkpoint["run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt", "results.json"]  # no .partial files
    with pytest.raises(UsageError, match=r"holds a partial run \(results.json, net.pt\)"):
        _run(tmp_path)
    resumed = _run(tmp_path, "--resume")
    assert resumed["status"] == "complete" and resumed["models"]["net"]["epochs"] == 3


def test_results_are_rewritten_after_every_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    write = run_folder.write_results

    def record(out: Path, results: dict) -> None:
        write(out, results)
        written = json.loads((out / "results.json").read_text())
        net = written["models"].get("net")
        if net is not None:
            saved = torch.load(out / net["checkpoint"], weights_only=True)["state"]["epoch"]
            seen.append((written["status"], net["status"], net["epochs"], saved))

    monkeypatch.setattr(run_folder, "write_results", record)
    _run(tmp_path)
    assert seen == [
        ("running", "training", 1, 1),  # after every epoch's checkpoint
        ("running", "training", 2, 2),
        ("running", "training", 3, 3),
        ("running", "done", 3, 3),  # tested
        ("complete", "done", 3, 3),  # every model done
    ]


def test_overwrite_replaces_the_old_run(tmp_path: Path) -> None:
    _run(tmp_path, "--epochs", "1")
    (tmp_path / "results.json").write_text(json.dumps({"models": {"old": {}}}))
    (tmp_path / "old.pt").write_bytes(b"stale")
    (tmp_path / "notes.txt").write_text("mine")
    results = _run(tmp_path, "--overwrite")
    assert results["models"]["net"]["epochs"] == 3
    assert not (tmp_path / "old.pt").exists()  # the old run's checkpoint goes with it
    assert (tmp_path / "notes.txt").read_text() == "mine"  # files that are not the run's stay


def test_resume_refuses_another_run_listing_the_differences(tmp_path: Path) -> None:
    _run(tmp_path, "--epochs", "1")
    with pytest.raises(
        UsageError,
        match=r"--resume: .*results.json belongs to another run \(seed: saved 0, now 1; lr: saved 0.05, now 0.1; "
        r"batch_size: saved 8, now 4\)",
    ):
        _run(tmp_path, "--resume", "--epochs", "1", "--seed", "1", "--lr", "0.1", "--batch-size", "4")
    (tmp_path / "results.json").unlink()
    with pytest.raises(UsageError, match=r"net.pt belongs to another run \(epochs: saved 1, now 2\)"):
        _run(tmp_path, "--resume", "--epochs", "2")


def test_resume_refuses_a_checkpoint_without_a_run_record(tmp_path: Path) -> None:
    _run(tmp_path, "--epochs", "1")
    checkpoint = torch.load(tmp_path / "net.pt", weights_only=True)
    del checkpoint["run"]
    torch.save(checkpoint, tmp_path / "net.pt")
    (tmp_path / "results.json").unlink()
    with pytest.raises(UsageError, match="net.pt does not say which run wrote it"):
        _run(tmp_path, "--resume", "--epochs", "1")


def test_resume_refuses_an_unreadable_checkpoint(tmp_path: Path) -> None:
    tmp_path.joinpath("net.pt").write_bytes(b"")
    with pytest.raises(UsageError, match=r"net.pt: not a readable checkpoint"):
        _run(tmp_path, "--resume")


def test_identity_names_the_data_fingerprint(tmp_path: Path) -> None:
    results = _run(tmp_path, "--epochs", "1")
    assert set(results["run"]) == {
        "example", "models", "data_source", "data_fingerprint", "seed", "lr", "batch_size", "epochs",
        "processes", "amp",
    }  # fmt: skip
    assert len(results["run"]["data_fingerprint"]) == 16


@pytest.mark.parametrize(
    ("below", "message"),
    [
        ("", r"--out .*file: is a file; expected a folder"),
        ("run", r"--out .*file/run: cannot write there \(.*file is not a writable folder\)"),
        ("/proc/recconv-test/run", r"--out /proc/recconv-test/run: cannot write there"),  # even for root
    ],
)
def test_bad_out_fails_before_training(
    tmp_path: Path, below: str, message: str, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / below  # an absolute ``below`` replaces the path
    example = registry()["sequence_long_range"]
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--smoke", "--device", "cpu", "--out", str(out)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "epoch" not in captured.out  # nothing trained
    assert re.search(message, captured.err), captured.err


def test_resume_and_overwrite_together_are_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        registry()["sequence_long_range"].parser().parse_args(["--resume", "--overwrite"])
    assert (
        "--resume continues the run in --out and --overwrite replaces it; give one" in capsys.readouterr().err
    )
