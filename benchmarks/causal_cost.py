"""What being causal costs: causal RecConv layers over centered ones of the same size, interleaved.

    python benchmarks/causal_cost.py [--threads 2] [--repeats 12] [--compile]

The layers and inputs of ``compare_commit.py``, causal along the last axis. Prints, per rank, the
median over the rounds of the per-round ratio causal / centered, for the forward (no grad) and a
training step (forward and backward of ``out.square().mean()``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from compare_commit import CASES  # this checkout's recconv on sys.path first

import recconv


def run(layer: torch.nn.Module, x: torch.Tensor, train: bool) -> None:
    if train:
        layer(x).square().mean().backward()
    else:
        with torch.no_grad():
            layer(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--compile", action="store_true", help="time torch.compile of both layers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"causal over centered, {args.threads} threads{', both compiled' if args.compile else ''}, "
        f"medians of {args.repeats - 2} interleaved rounds after 2 warm-up rounds"
    )
    for label, (options, shape) in CASES.items():
        torch.manual_seed(0)
        layer_class = getattr(recconv, f"RecConv{label[0]}d")
        layers = {"centered": layer_class(**options), "causal": layer_class(**options, causal=len(shape) - 3)}
        if args.compile:
            torch.compiler.reset()  # Dynamo's recompile limit counts per code object: a fresh start per rank
            layers = {name: torch.compile(layer) for name, layer in layers.items()}
        x = torch.randn(shape, requires_grad=True)
        ratios = {}
        for train in (False, True):
            times: dict[str, list[float]] = {name: [] for name in layers}
            for _ in range(args.repeats):
                for name, layer in layers.items():
                    start = time.perf_counter()
                    run(layer, x, train)
                    times[name].append(time.perf_counter() - start)
            rounds = list(zip(times["causal"][2:], times["centered"][2:]))
            ratios[train] = statistics.median(causal / centered for causal, centered in rounds)
        print(f"{label} {tuple(shape)}: forward {ratios[False]:.2f}x, training {ratios[True]:.2f}x")


if __name__ == "__main__":
    main()
