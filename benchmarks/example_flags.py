"""Epoch time of the audio and video examples per speed flag, interleaved, as a Markdown table.

Run: ``python benchmarks/example_flags.py [--repeats 3] [--threads 2] [--examples audio video]``

Each round runs every example once per flag setting (none, ``--amp bf16``, ``--compile``,
``--channels-last``), in turn, as a separate process with two epochs, and reads the RecConv model's
epoch times from its ``results.json``. The table gives medians over the rounds: the first epoch (with
``--compile`` it includes compilation) and the second (steady state).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {  # real epochs of the RecConv model alone on the embedded data (audio's cut to 60 clips a class)
    "audio": ["examples/audio_keywords.py", "--mixer", "recconv", "--epochs", "2", "--clips-per-class", "60"],
    "video": ["examples/video_actions.py", "--mixer", "recconv", "--epochs", "2"],
}
FLAGS = {
    "none": [],
    "--amp bf16": ["--amp", "bf16"],
    "--compile": ["--compile"],
    "--channels-last": ["--channels-last"],
}


def epoch_seconds(command: list[str], threads: int) -> list[float]:
    """Seconds of each training epoch of the ``recconv`` model in one run of ``command``."""
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [sys.executable, *command, "--device", "cpu", "--out", out],
            cwd=ROOT, env=env, check=True, capture_output=True,
        )  # fmt: skip
        results = json.loads((Path(out) / "results.json").read_text())
    return [epoch["seconds"] for epoch in results["models"]["recconv"]["history"]]


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
    ]
    return names[0] if names else platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", nargs="+", choices=list(EXAMPLES), default=list(EXAMPLES))
    args = parser.parse_args()
    times: dict[tuple[str, str], list[list[float]]] = {
        (example, flag): [] for example in args.examples for flag in FLAGS
    }
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for example in args.examples:
            for flag, extra in FLAGS.items():
                times[example, flag].append(epoch_seconds(EXAMPLES[example] + extra, args.threads))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    print(
        f"`python benchmarks/example_flags.py --repeats {args.repeats} --threads {args.threads} --examples "
        f"{' '.join(args.examples)}` on {machine()}, {args.threads} threads, torch {torch.__version__}, "
        f"commit {commit.stdout.strip()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} "
        f"after. Medians of {args.repeats} interleaved rounds, seconds of the RecConv model's epochs.\n"
    )
    print("| example | flags | epoch 1 (s) | epoch 2 (s) | epoch 2 over no flag |")
    print("|---|---|---|---|---|")
    for example in args.examples:
        baseline = statistics.median(run[1] for run in times[example, "none"])
        for flag in FLAGS:
            first = statistics.median(run[0] for run in times[example, flag])
            second = statistics.median(run[1] for run in times[example, flag])
            command = " ".join(EXAMPLES[example])
            print(f"| {command} | {flag} | {first:.2f} | {second:.2f} | {second / baseline:.2f} |")


if __name__ == "__main__":
    main()
