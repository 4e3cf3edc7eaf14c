"""Head to head: RecConv against the other routes to a large receptive field, on every example task.

Trains every token mixer the examples accept (``--mixer``: recconv, small, dense, dilated, wavelet,
fft, recattn; see :mod:`recconv.models.mixers`) on every example's embedded default data, with the
example's default network, budget and seed: only the mixer changes. Then measures what does not
depend on the weights (inference latency per example and the time of a training step, the mixers
interleaved; saved-for-backward memory; the exact receptive field) and writes the tables, figures and the facts of the verdict into
``docs/comparison.md`` (between its ``head-to-head`` markers; the prose around them is kept).

Every run is a folder ``RUNS/<task>/<mixer>-seed<N>`` of the example's own format: a stopped
comparison resumes where it stopped (finished runs are skipped, a partial one continues from its
last epoch with the example's ``--resume``), and ``RUNS/log.jsonl`` records each run's wall time.

    python benchmarks/head_to_head.py                      # seeds 0 and 1: train what is missing, write the page
    python benchmarks/head_to_head.py --seeds 1 --no-page  # one seed (run seeds in parallel processes)
    python benchmarks/head_to_head.py --page-only          # the page from the runs so far
    python benchmarks/head_to_head.py --smoke              # every task-mixer pair for a few steps (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # python benchmarks/head_to_head.py from a checkout
    sys.path.insert(0, str(ROOT))

from examples import registry  # noqa: E402
from examples.kit.harness import MIXERS  # noqa: E402
from recconv.analysis.profile import saved_bytes  # noqa: E402
from recconv.models import create_model  # noqa: E402
from recconv.theory import receptive_field  # noqa: E402

TASKS = ("audio_keywords", "video_actions", "image_pathfinder", "sequence_long_range")
BEGIN, END = "<!-- head-to-head:begin -->", "<!-- head-to-head:end -->"
TIMING_ROUNDS = {"full": 7, "smoke": 1}


def run_folder(runs: Path, task: str, mixer: str, seed: int) -> Path:
    return runs / task / f"{mixer}-seed{seed}"


def read_results(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        return None


def _held_by_a_live_process(lock: Path) -> bool:
    try:
        os.kill(int(lock.read_text()), 0)  # signal 0: only asks whether the process exists
    except (OSError, ValueError):
        return False
    return True


def _take(lock: Path) -> bool:
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _held_by_a_live_process(lock):
                return False
            lock.unlink(missing_ok=True)  # left by a stopped process
            continue
        os.write(descriptor, str(os.getpid()).encode())
        os.close(descriptor)
        return True
    return False


@contextlib.contextmanager
def claimed(folder: Path) -> Iterator[bool]:
    """Whether this process may train into ``folder``: it holds the folder's lock file for the block
    unless a live process holds it, so processes side by side never train one run twice."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".head_to_head.lock"
    mine = _take(lock)
    try:
        yield mine
    finally:
        if mine:
            lock.unlink(missing_ok=True)


def train_missing(
    runs: Path, tasks: Sequence[str], mixers: Sequence[str], seeds: Sequence[int], smoke: bool
) -> None:
    """Train every (seed, mixer, task) run not complete yet, seed by seed and mixer by mixer (each on
    every task), so a stopped comparison has whole seeds and mixers to show; a failing run is logged
    and the others go on."""
    examples = registry()
    for seed in seeds:
        for mixer in mixers:
            for task in tasks:
                folder = run_folder(runs, task, mixer, seed)
                with claimed(folder) as mine:
                    results = read_results(folder)
                    if not mine or (results is not None and results.get("status") == "complete"):
                        continue  # another process trains it, or it is done
                    argv = ["--mixer", mixer, "--seed", str(seed), "--out", str(folder), "--device", "cpu"]
                    argv += ["--smoke"] * smoke + ["--resume"] * (folder / "results.json").is_file()
                    start, status = time.perf_counter(), "complete"
                    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {task} {mixer} seed {seed}", flush=True)
                    try:
                        examples[task].main(argv)
                    except (Exception, SystemExit) as err:  # an argparse error exits; report it and go on
                        status = f"failed: {type(err).__name__}: {err}"
                        print(f"  {status}", flush=True)
                entry = {
                    "task": task,
                    "mixer": mixer,
                    "seed": seed,
                    "status": status,
                    "seconds": round(time.perf_counter() - start, 1),
                    "threads": torch.get_num_threads(),
                    "commit": commit(),
                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                with open(runs / "log.jsonl", "a") as log:
                    log.write(json.dumps(entry) + "\n")


def wide_spreads(found: dict[str, dict[str, list[dict]]], points: float) -> list[tuple[str, str]]:
    """(task, mixer) pairs with fewer than 3 seeds whose test accuracies spread more than ``points``."""
    return [
        (task, mixer)
        for task, by_mixer in found.items()
        for mixer, runs in by_mixer.items()
        if 1 < len(runs) < 3
        and 100 * (max(r["accuracy"] for r in runs) - min(r["accuracy"] for r in runs)) > points
    ]


def collect(runs: Path, tasks: Sequence[str], mixers: Sequence[str]) -> dict[str, dict[str, list[dict]]]:
    """Per task and mixer, the results of every finished seed."""
    found: dict[str, dict[str, list[dict]]] = {task: {} for task in tasks}
    for task in tasks:
        for folder in sorted((runs / task).glob("*-seed*")):
            mixer, _, seed = folder.name.rpartition("-seed")
            results = read_results(folder)
            if mixer not in mixers or results is None or results.get("status") != "complete":
                continue
            model = results["models"][mixer]
            found[task].setdefault(mixer, []).append(
                {
                    "seed": int(seed),
                    "accuracy": model["accuracy"],
                    "params": model["params"],
                    "flops": model["flops"],
                    "epoch_seconds": model["train_seconds"] / model["epochs"],
                    "input_size": results["data"]["input_size"],
                    "steps": results["training"]["epochs"]
                    * math.ceil(results["data"]["train"] / results["training"]["batch_size"]),
                    "batch_size": results["training"]["batch_size"],
                    "spec": results["run"]["models"][mixer],
                }
            )
    return found


def measure(spec: dict[str, Any], input_size: Sequence[int]) -> dict[str, Any]:
    """What does not depend on the weights: saved-for-backward bytes per example (meta device, batch
    2 for the BatchNorms) and the exact receptive field of the feature map."""
    meta = create_model(spec["preset"], device="meta", **spec["options"]).train()
    return {
        "saved_mib": saved_bytes(meta, (2, *input_size)) / 2 / 2**20,
        "receptive_field": receptive_field(create_model(spec["preset"], **spec["options"])),
    }


def timings(
    specs: dict[str, dict], input_size: Sequence[int], batch_size: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Median ms of one eval forward on one example (``latency_ms``) and of one training forward and
    backward on a batch (``step_ms``), the mixers interleaved round by round, so that a machine's
    load weighs on every mixer alike (the training runs' own clocks do not share their load)."""
    models = {name: create_model(spec["preset"], **spec["options"]) for name, spec in specs.items()}
    generator = torch.Generator().manual_seed(0)
    one, batch = (
        torch.randn(1, *input_size, generator=generator),
        torch.randn(batch_size, *input_size, generator=generator),
    )
    times: dict[str, dict[str, list[float]]] = {name: {"latency_ms": [], "step_ms": []} for name in models}
    for round_index in range(rounds + 1):  # a warm-up round
        for name, model in models.items():
            with torch.no_grad():
                start = time.perf_counter()
                model.eval()(one)
                latency = time.perf_counter() - start
            start = time.perf_counter()
            model.train()(batch).logsumexp(-1).mean().backward()
            step = time.perf_counter() - start
            if round_index:
                times[name]["latency_ms"].append(1e3 * latency)
                times[name]["step_ms"].append(1e3 * step)
    return {name: {k: statistics.median(v) for k, v in kinds.items()} for name, kinds in times.items()}


def pareto(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names no other point beats: at most the cost (first) and at least the accuracy (second),
    better in one."""
    return {
        name
        for name, (cost, accuracy) in points.items()
        if not any(
            c <= cost and a >= accuracy and (c, a) != (cost, accuracy)
            for other, (c, a) in points.items()
            if other != name
        )
    }


def summarize(found: dict[str, list[dict]], smoke: bool) -> list[dict[str, Any]]:
    """One row per mixer of a task: means over seeds, measurements, and where it stands."""
    if not found:
        return []
    first = next(iter(found.values()))[0]
    input_size = first["input_size"]
    speeds = timings({m: runs[0]["spec"] for m, runs in found.items()}, input_size, first["batch_size"],
                     TIMING_ROUNDS["smoke" if smoke else "full"])  # fmt: skip
    rows = []
    for mixer in sorted(found, key=MIXERS.index):
        runs = found[mixer]
        accuracies = [r["accuracy"] for r in runs]
        rows.append(
            {
                "mixer": mixer,
                "seeds": [r["seed"] for r in runs],
                "accuracy": statistics.fmean(accuracies),
                "std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
                "params": runs[0]["params"],
                "flops": runs[0]["flops"],
                "epoch_seconds": statistics.fmean(r["epoch_seconds"] for r in runs),
                **speeds[mixer],
                "train_estimate": speeds[mixer]["step_ms"] * runs[0]["steps"] / 1e3,
                **measure(runs[0]["spec"], input_size),
            }
        )
    time_front = pareto({r["mixer"]: (r["train_estimate"], r["accuracy"]) for r in rows})
    flop_front = pareto({r["mixer"]: (r["flops"], r["accuracy"]) for r in rows})
    best_per_flop = max(rows, key=lambda r: r["accuracy"] / r["flops"])["mixer"]
    for row in rows:
        row["time_front"] = row["mixer"] in time_front
        row["flop_front"] = row["mixer"] in flop_front
        row["best_per_flop"] = row["mixer"] == best_per_flop
    return rows


def _field(values: Sequence[float]) -> str:
    return " × ".join("∞" if math.isinf(v) else f"{v:g}" for v in values)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| mixer | test accuracy | seeds | params | FLOPs / example | training (s) | s / epoch as run | latency (ms) "
        "| saved (MiB) | receptive field | Pareto: time | Pareto: FLOPs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        spread = f" ± {100 * r['std']:.1f}" if r["std"] is not None else ""
        best = "**" if r["accuracy"] == max(x["accuracy"] for x in rows) else ""
        lines.append(
            f"| `{r['mixer']}` | {best}{100 * r['accuracy']:.1f}{spread} %{best} | {len(r['seeds'])} "
            f"| {r['params']:,} | {r['flops'] / 1e6:.1f} M | {r['train_estimate']:.1f} | {r['epoch_seconds']:.1f} "
            f"| {r['latency_ms']:.1f} "
            f"| {r['saved_mib']:.2f} | {_field(r['receptive_field'])} | {'yes' if r['time_front'] else ''} "
            f"| {'yes' if r['flop_front'] else ''} |"
        )
    return "\n".join(lines)


def facts(task: str, rows: list[dict[str, Any]]) -> str:
    """The verdict's facts, from the numbers (the why is the page's prose)."""
    by_accuracy = sorted(rows, key=lambda r: -r["accuracy"])
    recconv = next((r for r in rows if r["mixer"] == "recconv"), None)
    said = [f"most accurate: `{by_accuracy[0]['mixer']}` ({100 * by_accuracy[0]['accuracy']:.1f} %)"]
    if recconv is not None:
        rank = by_accuracy.index(recconv) + 1
        said.append(f"`recconv` ranks {rank} of {len(rows)} by accuracy")
        said.append(
            f"`recconv` is {'' if recconv['time_front'] else 'not '}on the accuracy-vs-training-time front"
        )
    best = next(r for r in rows if r["best_per_flop"])
    said.append(f"highest accuracy per FLOP: `{best['mixer']}`")
    return "; ".join(said) + "."


def figure(task: str, rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for r in rows:
        marker = "o" if r["time_front"] else "x"
        ax.errorbar(
            r["train_estimate"], 100 * r["accuracy"], yerr=100 * (r["std"] or 0), fmt=marker, capsize=3
        )
        ax.annotate(
            r["mixer"], (r["train_estimate"], 100 * r["accuracy"]), textcoords="offset points", xytext=(4, 4)
        )
    front = sorted((r["train_estimate"], 100 * r["accuracy"]) for r in rows if r["time_front"])
    ax.step(*zip(*front), where="post", color="grey", linewidth=1, label="Pareto front")
    ax.set_xlabel("training seconds (interleaved estimate)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(task)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    return "unknown"


def run_commits(runs: Path) -> list[str]:
    try:
        entries = [json.loads(line) for line in (runs / "log.jsonl").read_text().splitlines() if line]
    except OSError:
        return []
    return sorted({e.get("commit", "unknown") for e in entries if e["status"] == "complete"})


def wall_time(runs: Path) -> str:
    try:
        entries = [json.loads(line) for line in (runs / "log.jsonl").read_text().splitlines() if line]
    except OSError:
        return "no log"
    done = [e for e in entries if e["status"] == "complete"]
    hours = sum(e["seconds"] for e in done) / 3600
    return f"{len(done)} runs, {hours:.1f} h of run time in all (processes side by side count each)"


def page(
    runs: Path, tasks: Sequence[str], mixers: Sequence[str], seeds: Sequence[int], smoke: bool, figures: Path
) -> str:
    found = collect(runs, tasks, mixers)
    parts = [
        f"Generated by `python benchmarks/head_to_head.py` at commit `{commit()}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d}, torch {torch.__version__}; {wall_time(runs)}. "
        f"Timed here on {torch.get_num_threads()} thread(s), the mixers interleaved round by round (medians): "
        "*latency* is one eval forward on one example; *training (s)* is one training forward and backward "
        "on a batch times the run's steps, the time axis of the Pareto front (*s / epoch as run* is the runs' "
        "own clock, which also counts the optimizer and data, under whatever load each run met). *Saved*: the "
        "tensors autograd keeps for backward, per example. Runs trained at commit(s) "
        f"{', '.join(f'`{c}`' for c in run_commits(runs)) or 'unknown'}.",
    ]
    for task in tasks:
        parts.append(f"### {task}")
        missing = [f"`{m}` seed {s}" for m in mixers for s in seeds
                   if not any(r["seed"] == s for r in found[task].get(m, []))]  # fmt: skip
        rows = summarize(found[task], smoke)
        if rows:
            figures.mkdir(parents=True, exist_ok=True)
            figure(task, rows, figures / f"comparison_{task}.png")
            image = Path("figures") / f"comparison_{task}.png"
            parts += [
                table(rows),
                f"Facts: {facts(task, rows)}",
                f"![{task}: accuracy against training time]({image})",
            ]
        if missing:
            parts.append(f"Not run yet: {', '.join(missing)}.")
    return "\n\n".join(parts)


def write_between_markers(path: Path, body: str) -> None:
    text = path.read_text() if path.is_file() else f"# Head to head\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: expected the markers {BEGIN} and {END} around the generated part")
    new = re.sub(
        re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{body}\n{END}", text, flags=re.S
    )
    path.write_text(new)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", help="comma-separated seeds (default 0,1; 0 with --smoke)")
    parser.add_argument(
        "--tasks", default=",".join(TASKS), help="comma-separated example names (default all)"
    )
    parser.add_argument("--mixers", default=",".join(MIXERS), help="comma-separated mixers (default all)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "head_to_head", help="the runs' folder")
    parser.add_argument(
        "--page", type=Path, default=ROOT / "docs" / "comparison.md", help="the page to write"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument(
        "--third-seed-above",
        type=float,
        metavar="POINTS",
        help="then train a third seed for every task-mixer pair whose accuracies spread more than this",
    )
    parser.add_argument("--smoke", action="store_true", help="every pair for a few steps")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--page-only", action="store_true", help="write the page from the runs so far")
    group.add_argument("--no-page", action="store_true", help="train only")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in (args.seeds or ("0" if args.smoke else "0,1")).split(",")]
    tasks, mixers = args.tasks.split(","), args.mixers.split(",")
    for name, given, known in (("--tasks", tasks, TASKS), ("--mixers", mixers, MIXERS)):
        if unknown := [g for g in given if g not in known]:
            parser.error(f"{name}: unknown {', '.join(unknown)}; expected names from {', '.join(known)}")
    torch.set_num_threads(args.threads)
    args.runs.mkdir(parents=True, exist_ok=True)
    if not args.page_only:
        with contextlib.redirect_stdout(io.StringIO()) if args.smoke else contextlib.nullcontext():
            train_missing(args.runs, tasks, mixers, seeds, args.smoke)
            if args.third_seed_above is not None:
                third = max(seeds) + 1
                for task, mixer in wide_spreads(collect(args.runs, tasks, mixers), args.third_seed_above):
                    train_missing(args.runs, [task], [mixer], [third], args.smoke)
    if not args.no_page:
        body = page(args.runs, tasks, mixers, seeds, args.smoke, args.page.parent / "figures")
        write_between_markers(args.page, body)
        print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
