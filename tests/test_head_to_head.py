"""benchmarks/head_to_head.py: the comparison of token mixers on the example tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import head_to_head
from examples.kit.harness import MIXERS


def test_pareto_keeps_the_points_nothing_beats():
    points = {"a": (1.0, 0.5), "b": (2.0, 0.9), "c": (2.0, 0.8), "d": (3.0, 0.9), "e": (0.5, 0.5)}
    assert head_to_head.pareto(points) == {"b", "e"}


def test_a_third_seed_goes_where_the_spread_is_wide():
    found = {
        "a": {
            "recconv": [{"accuracy": 0.90}, {"accuracy": 0.97}],
            "fft": [{"accuracy": 0.5}, {"accuracy": 0.52}],
        },
        "b": {
            "recconv": [{"accuracy": 0.5}, {"accuracy": 0.9}, {"accuracy": 0.7}],
            "fft": [{"accuracy": 0.6}],
        },
    }
    assert head_to_head.wide_spreads(found, points=5) == [("a", "recconv")]


def test_a_run_folder_is_trained_by_one_process_at_a_time(tmp_path: Path):
    folder = tmp_path / "run"
    with head_to_head.claimed(folder) as first, head_to_head.claimed(folder) as second:
        assert (first, second) == (True, False)
    (folder / ".head_to_head.lock").write_text("999999999")  # a process that no longer runs
    with head_to_head.claimed(folder) as third:
        assert third
    assert not (folder / ".head_to_head.lock").exists()


def test_the_page_keeps_its_prose_around_the_generated_part(tmp_path: Path):
    page = tmp_path / "comparison.md"
    page.write_text(
        f"# Title\n\nprose before\n\n{head_to_head.BEGIN}\nold\n{head_to_head.END}\n\nverdict after\n"
    )
    head_to_head.write_between_markers(page, "new tables")
    assert page.read_text() == (
        f"# Title\n\nprose before\n\n{head_to_head.BEGIN}\nnew tables\n{head_to_head.END}\n\nverdict after\n"
    )
    page.write_text("no markers")
    with pytest.raises(SystemExit, match="expected the markers"):
        head_to_head.write_between_markers(page, "x")


def test_unknown_names_are_refused(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        head_to_head.main(["--mixers", "recconv,conv", "--page-only"])
    assert "--mixers: unknown conv; expected names from recconv, small," in capsys.readouterr().err


def smoke(tmp_path: Path, tasks: list[str]) -> str:
    runs, page = tmp_path / "runs", tmp_path / "comparison.md"
    head_to_head.main(["--smoke", "--tasks", ",".join(tasks), "--runs", str(runs), "--page", str(page)])
    log = [json.loads(line) for line in (runs / "log.jsonl").read_text().splitlines()]
    assert [(e["task"], e["mixer"], e["status"]) for e in log] == [
        (task, mixer, "complete") for mixer in MIXERS for task in tasks
    ]
    text = page.read_text()
    for task in tasks:
        assert f"### {task}" in text and (tmp_path / "figures" / f"comparison_{task}.png").is_file()
        rows = [line for line in text.splitlines() if line.startswith("| `")]
        assert [row.split("`")[1] for row in rows][: len(MIXERS)] == list(MIXERS)
    head_to_head.main(["--smoke", "--tasks", ",".join(tasks), "--runs", str(runs), "--no-page"])
    assert len((runs / "log.jsonl").read_text().splitlines()) == len(log)  # finished runs are not redone
    return text


def test_smoke_compares_every_mixer_on_one_task(tmp_path: Path):
    text = smoke(tmp_path, ["sequence_long_range"])
    fft = next(line for line in text.splitlines() if line.startswith("| `fft`"))
    assert "| ∞ |" in fft  # a global convolution sees the whole series
    found = head_to_head.collect(tmp_path / "runs", ["sequence_long_range"], MIXERS)["sequence_long_range"]
    rows = head_to_head.summarize(found, smoke=True)
    recconv = next(r for r in rows if r["mixer"] == "recconv")
    small = next(r for r in rows if r["mixer"] == "small")
    assert recconv["receptive_field"][0] > small["receptive_field"][0]
    assert all(math.isfinite(r["saved_mib"]) and r["saved_mib"] > 0 for r in rows)


@pytest.mark.slow
def test_smoke_compares_every_mixer_on_every_task(tmp_path: Path):
    smoke(tmp_path, list(head_to_head.TASKS))
