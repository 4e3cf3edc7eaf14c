"""RecConv on one CUDA GPU: eager, channels-last, compiled and bf16 autocast, against one base conv.

Run: ``python benchmarks/bench_gpu.py [--repeats 20]`` (prints a Markdown table; needs CUDA).

Every variant of a case runs interleaved round by round; times are medians of CUDA-synchronized
wall-clock times. "forward" runs under ``torch.no_grad``; "train" is forward + backward of
``out.square().mean()``. Each row's base conv (one depthwise k-kernel ``nn.ConvNd``) gets the same
input layout and precision as the variant. "peak MiB" is ``torch.cuda.max_memory_allocated`` during
one training step, minus what was allocated before it.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch import nn

import recconv
from recconv.ops import dense_depthwise_conv, per_rank

CASES = {
    "1D": {"batch": 32, "channels": 64, "size": (16384,), "level": 5},
    "2D": {"batch": 32, "channels": 64, "size": (56, 56), "level": 3},
    "3D": {"batch": 4, "channels": 32, "size": (16, 56, 56), "level": 2},
}
LAYOUTS = {2: torch.channels_last, 3: torch.channels_last_3d}  # by spatial rank
VARIANTS = ("eager", "channels-last", "compiled", "bf16")


def timed(module: nn.Module, x: torch.Tensor, train: bool, bf16: bool) -> float:
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with autocast, torch.set_grad_enabled(train):
        out = module(x)
        if train:
            out.float().square().mean().backward()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_mib(module: nn.Module, x: torch.Tensor, bf16: bool) -> float:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    timed(module, x, True, bf16)
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def run_case(name: str, case: dict, repeats: int) -> list[str]:
    dims = len(case["size"])
    torch.manual_seed(0)
    layer_class = per_rank((recconv.RecConv1d, recconv.RecConv2d, recconv.RecConv3d), dims)
    layer = layer_class(case["channels"], 5, case["level"]).cuda()
    base = dense_depthwise_conv(case["channels"], (5,) * dims).cuda()
    x = torch.randn(case["batch"], case["channels"], *case["size"], device="cuda", requires_grad=True)
    x_cl = x.detach().contiguous(memory_format=LAYOUTS[dims]).requires_grad_() if dims in LAYOUTS else None
    setups = {  # variant: (layer, base, input, bf16)
        "eager": (layer, base, x, False),
        "channels-last": (layer, base, x_cl, False),
        "compiled": (torch.compile(layer), torch.compile(base), x, False),
        "bf16": (layer, base, x, True),
    }
    setups = {variant: setup for variant, setup in setups.items() if setup[2] is not None}
    lines = []
    for train in (False, True):
        times: dict[tuple[str, str], list[float]] = {}
        for round_ in range(repeats + 2):  # two warm-up rounds (compilation included)
            for variant, (ours, conv, inputs, bf16) in setups.items():
                for who, module in (("ours", ours), ("base", conv)):
                    elapsed = timed(module, inputs, train, bf16)
                    if round_ >= 2:
                        times.setdefault((variant, who), []).append(elapsed)
        for variant, (ours, conv, inputs, bf16) in setups.items():
            ours_ms = 1000 * statistics.median(times[variant, "ours"])
            base_ms = 1000 * statistics.median(times[variant, "base"])
            peak = f"{peak_mib(ours, inputs, bf16):.0f} / {peak_mib(conv, inputs, bf16):.0f}" if train else ""
            mode = "train" if train else "forward"
            lines.append(
                f"| {name} | {mode} | {variant} | {ours_ms:.2f} | {base_ms:.2f} | {ours_ms / base_ms:.2f} | {peak} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: needs a CUDA device; none is visible")
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| rank | mode | variant | RecConv ms | base conv ms | RecConv / base | peak MiB, RecConv / base |")
    print("|---|---|---|---|---|---|---|")
    for name in args.cases:
        for line in run_case(name, CASES[name], args.repeats):
            print(line, flush=True)


if __name__ == "__main__":
    main()
