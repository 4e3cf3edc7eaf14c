"""Speed and memory of RecConv against the paper's plain formula and plain depthwise convs.

Run: ``python benchmarks/bench_recconv.py [--cases 2d 1d 3d 3d-video] [--repeats 15] [--write-docs]``

Every variant of a case runs in the same process, interleaved repeat by repeat, and the table reports
medians. Variants:

* ``paper``: ``benchmarks/paper_reference.py``, the paper's formula with nn.ConvNd + F.interpolate;
* ``ours``: ``recconv.RecConvNd`` with the same weights (outputs checked against ``paper`` in float64), with
  its defaults: in eager training it stores the recursion's intermediates for backward;
* ``recompute``: ``ours`` with ``recompute=True``: in training it keeps only its input for backward and
  runs the recursion again there;
* ``base``: one depthwise k-kernel ``nn.ConvNd`` (the FLOPs floor);
* ``dense``: one depthwise ``nn.ConvNd`` as wide as the effective kernel ``k * factor**level`` (next odd);
* ``compiled``: ``torch.compile(ours)``, one compiled module for both modes, as a training loop with
  validation uses it;
* ``copies``: only the layout conversions ``ours`` makes for this input (to channels-last and back on
  contiguous input, none on channels-last input), to show what they cost on their own.

"forward" runs under ``torch.no_grad``; "train" is forward + backward of ``out.square().mean()`` with the
input requiring grad. Memory is the bytes autograd saves for backward (all tensors packed by
``saved_tensors_hooks``, counted once per storage), which is what a training step keeps alive.

The goals table checks issue 16's goals per rank on contiguous input: a ratio is the median over the
rounds of the per-round ratio (variants interleaved within a round), and ``spread`` is the range of the
middle half of those per-round ratios, how much one measurement moves.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_reference import PaperRecConv  # noqa: E402
from precision import precision_table  # noqa: E402

import recconv  # noqa: E402
from recconv._util import count_flops  # noqa: E402
from recconv.ops import dense_depthwise_conv, per_rank  # noqa: E402

CASES = {
    "2d": {"dims": 2, "batch": 8, "channels": 64, "size": (56, 56), "kernel": 5, "level": 3, "factor": 2},
    "1d": {"dims": 1, "batch": 8, "channels": 64, "size": (4096,), "kernel": 5, "level": 5, "factor": 2},
    "3d": {"dims": 3, "batch": 2, "channels": 32, "size": (16, 56, 56), "kernel": 5, "level": 2, "factor": 2},
    "3d-video": {
        "dims": 3, "batch": 2, "channels": 32, "size": (16, 56, 56), "kernel": 5, "level": 2, "factor": (1, 2, 2),
    },
}  # fmt: skip
LAYOUTS = {2: torch.channels_last, 3: torch.channels_last_3d}
# Issue 8's goals for the 2D case on contiguous input: (goal, mode, column, bound, the bound is a maximum).
GOALS = (
    ("training step, speed-up over the paper's formula", "train", "vs_paper", 2.5, False),
    ("forward, speed-up over the paper's formula", "forward", "vs_paper", 1.5, False),
    ("forward, time over one base conv", "forward", "vs_base", 2.0, True),
    ("training step, time over one base conv", "train", "vs_base", 1.5, True),
)
# Issue 16's goals per rank on contiguous input: (goal, mode, variant, reference variant, bound); all maxima.
RANK_GOALS = (
    ("recompute=True training, saved memory over one base conv", "saved", "recompute", "base", 1.3),
    ("recompute=True training, time over the default", "train", "recompute", "ours", 1.1),
    ("compiled forward, time over one base conv", "forward", "compiled", "base", 1.3),
    ("compiled training, time over eager training", "train", "compiled", "ours", 1.0),
    ("compiled training, time over one base conv", "train", "compiled", "base", 1.5),
)
RANK_CASES = {"1d": "1D", "2d": "2D", "3d": "3D"}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
DOCS_HEADER = (Path(__file__).resolve().parent / "performance_header.md").read_text()


class LayoutCopies(nn.Module):
    """The two full-resolution copies ``RecConvNd`` makes on the CPU for input not in channels-last."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.layout = LAYOUTS[max(dims, 2)]  # 1D runs lifted to (N, C, 1, L)
        self.lift = dims == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lifted = x.unsqueeze(2) if self.lift else x
        if lifted.is_contiguous(memory_format=self.layout):
            return x
        out = lifted.contiguous(memory_format=self.layout).contiguous()
        return out.squeeze(2) if self.lift else out


def build_variants(case: dict) -> dict[str, nn.Module]:
    dims, channels, kernel, level, factor = (
        case[k] for k in ("dims", "channels", "kernel", "level", "factor")
    )
    torch.manual_seed(0)
    paper = PaperRecConv(channels, kernel, level, dims, factor)
    ours = per_rank((recconv.RecConv1d, recconv.RecConv2d, recconv.RecConv3d), dims)(
        channels, kernel, level, factor=factor
    )
    ours.load_state_dict(paper.state_dict())
    recompute = copy.deepcopy(ours)
    recompute.recompute = True
    wide = tuple(k + 1 - k % 2 for k in recconv.effective_kernel_size(ours))
    # Dynamo's recompile limit (8 graphs) counts per code object, and every RecConvNd shares one
    # forward: without a reset, the cases before would push this one's compiled variant back to eager.
    torch.compiler.reset()
    return {
        "paper": paper,
        "ours": ours,
        "recompute": recompute,
        "base": dense_depthwise_conv(channels, (kernel,) * dims),
        "dense": dense_depthwise_conv(channels, wide),
        "compiled": torch.compile(ours),
        "copies": LayoutCopies(dims),
    }


def check_numerics(case: dict, variants: dict[str, nn.Module]) -> float:
    """Largest float64 difference between ours and the paper's formula, forward and input gradient."""
    x = torch.randn(2, case["channels"], *case["size"], dtype=torch.float64, requires_grad=True)
    outputs = []
    for name in ("paper", "ours"):
        module = variants[name].double()
        out = module(x)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        outputs.append((out.detach(), grad))
        module.float()
    return max((a - b).abs().max().item() for a, b in zip(*outputs))


def step(module: nn.Module, x: torch.Tensor, train: bool) -> None:
    if train:
        module(x).square().mean().backward()
    else:
        with torch.no_grad():
            module(x)


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    out.square().mean().backward()
    return sum(storages.values())


def measure(
    case: dict, variants: dict[str, nn.Module], layout: torch.memory_format, repeats: dict[str, int]
) -> list[dict]:
    rows = []
    x = torch.randn(case["batch"], case["channels"], *case["size"]).contiguous(memory_format=layout)
    for train in (False, True):
        inputs = x.detach().requires_grad_(train)
        for module in variants.values():  # warm-up (and compilation) outside the timed runs
            step(module, inputs, train)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(max(repeats.values())):
            for name, module in variants.items():
                if round_ < repeats[name]:
                    start = time.perf_counter()
                    step(module, inputs, train)
                    times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, median in medians.items():
            rows.append({
                "mode": "train" if train else "forward",
                "variant": name,
                "ms": 1000 * median,
                "vs_paper": medians["paper"] / median,
                "vs_base": median / medians["base"],
                "times": times[name],
            })  # fmt: skip
    for name in ("paper", "ours", "recompute", "base", "compiled"):
        train_inputs = x.detach().requires_grad_(True)
        next(r for r in rows if r["mode"] == "train" and r["variant"] == name)["saved_mb"] = (
            saved_bytes(variants[name], train_inputs) / 2**20
        )
    return rows


def dense_gflops(case: dict, dense: nn.Module) -> float:
    """Forward GFLOPs of the dense conv (2 per multiply-add)."""
    outputs = case["batch"] * case["channels"] * math.prod(case["size"])
    return 2 * outputs * math.prod(dense.kernel_size) / 1e9


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        cpu = names[0] if names else cpu
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, Python {platform.python_version()}"


def table(name: str, case: dict, layout: str, rows: list[dict]) -> str:
    head = (
        f"**{name}** (N={case['batch']}, C={case['channels']}, size {'x'.join(map(str, case['size']))}, "
        f"k={case['kernel']}, level={case['level']}, factor={case['factor']}), {layout} input\n\n"
        "| mode | variant | median ms | paper / variant | variant / base | saved for backward (MiB) |\n"
        "|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        saved = f"{r['saved_mb']:.1f}" if "saved_mb" in r else ""
        lines.append(
            f"| {r['mode']} | {r['variant']} | {r['ms']:.1f} | {r['vs_paper']:.2f} | {r['vs_base']:.2f} | {saved} |"
        )
    return "\n".join(lines)


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS (False if not glibc).

    By default glibc serves every block above 128 KiB-32 MiB with a fresh ``mmap`` and returns it on
    free, so each large temporary tensor costs page faults on first touch.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(
        libc.mallopt(m_trim_threshold, 2**31 - 1)
    )


def goals_table(rows: list[dict], error: float) -> str:
    """Issue 8's 2D goals against this run's measurements."""
    ours = {r["mode"]: r for r in rows if r["variant"] == "ours"}
    paper_saved = next(r["saved_mb"] for r in rows if r["mode"] == "train" and r["variant"] == "paper")
    results = []
    for goal, mode, column, bound, at_most in GOALS:
        value = ours[mode][column]
        met = value <= bound if at_most else value >= bound
        results.append((goal, f"{'≤' if at_most else '≥'} {bound:g}x", f"{value:.2f}x", met))
    memory = ours["train"]["saved_mb"] / paper_saved
    results.append(("saved-for-backward memory over the paper's", "≤ 1x", f"{memory:.2f}x", memory <= 1))
    results.append(("float64 agreement with the paper's formula", "≤ 1e-10", f"{error:.1e}", error <= 1e-10))
    lines = ["| goal | target | measured | met |", "|---|---|---|---|"]
    lines += [
        f"| {goal} | {target} | {value} | {'yes' if met else 'no'} |" for goal, target, value, met in results
    ]
    ms = {(r["mode"], r["variant"]): r["ms"] for r in rows}
    times = "; ".join(
        f"{mode}: paper {ms[mode, 'paper']:.1f}, ours {ms[mode, 'ours']:.1f}, base {ms[mode, 'base']:.1f}"
        for mode in ("forward", "train")
    )
    return "\n".join(lines) + f"\n\nMedian ms, {times}.\n"


def ratio_and_spread(rows: list[dict], mode: str, variant: str, reference: str) -> tuple[float, float, float]:
    """Median and middle half (25th, 75th percentiles) of the per-round ratios variant / reference."""
    times = {r["variant"]: r["times"] for r in rows if r["mode"] == mode}
    ratios = sorted(a / b for a, b in zip(times[variant], times[reference]))
    low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return statistics.median(ratios), low, high


def flop_ratio(case: dict, variants: dict[str, nn.Module]) -> float:
    """FLOPs of ``ours`` over ``base`` (convolutions; interpolation and sums are free): the least time
    ratio the recursion can reach against one base conv where convolutions take the time."""
    x = torch.empty(1, case["channels"], *case["size"], device="meta")
    ours, base = (copy.deepcopy(variants[name]).to("meta") for name in ("ours", "base"))
    with torch.no_grad():
        return count_flops(lambda: ours(x)) / count_flops(lambda: base(x))


def rank_goals_table(rank_rows: dict[str, list[dict]], flops: dict[str, float]) -> str:
    """Issue 16's goals, one column per rank: the measured ratio, its spread over rounds, met or not;
    then RecConv's FLOPs over one base conv, the floor of the time ratios against it."""
    if not rank_rows:
        return "(no 1d, 2d or 3d case was run)\n"
    lines = [
        f"| goal | target | {' | '.join(rank_rows)} |",
        f"|---|---|{'---|' * len(rank_rows)}",
    ]
    for goal, mode, variant, reference, bound in RANK_GOALS:
        cells = []
        for rows in rank_rows.values():
            if mode == "saved":
                saved = {r["variant"]: r["saved_mb"] for r in rows if "saved_mb" in r}
                value = saved[variant] / saved[reference]
                cells.append(f"{value:.2f}x {'met' if value <= bound else 'not met'}")
            else:
                value, low, high = ratio_and_spread(rows, mode, variant, reference)
                cells.append(f"{value:.2f}x ({low:.2f}-{high:.2f}) {'met' if value <= bound else 'not met'}")
        lines.append(f"| {goal} | ≤ {bound:g}x | {' | '.join(cells)} |")
    floors = " | ".join(f"{flops[rank]:.2f}x" for rank in rank_rows)
    lines.append(f"| for reference: RecConv's FLOPs over one base conv | | {floors} |")
    return "\n".join(lines) + "\n"


def commit() -> str:
    """The checked-out commit, marked ``+changes`` when the working tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return head.stdout.strip() + (" +changes" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dense-repeats", type=int, default=3)
    parser.add_argument("--max-dense-gflops", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true", help=f"write the tables to {DOCS}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    measured_commit = commit()  # before this run writes the page
    sections = []
    goals = {}
    rank_rows: dict[str, list[dict]] = {}
    rank_flops: dict[str, float] = {}
    for name in args.cases:
        case = CASES[name]
        variants = build_variants(case)
        error = check_numerics(case, variants)
        note = f"float64 max |ours - paper| (output and input gradient): {error:.1e}"
        gflops = dense_gflops(case, variants["dense"])
        if gflops > args.max_dense_gflops:
            del variants["dense"]
            note += f"; dense not timed ({gflops:.0f} GFLOPs per forward)"
        repeats = {
            variant: args.dense_repeats if variant == "dense" else args.repeats for variant in variants
        }
        layouts = {"contiguous": torch.contiguous_format}
        if case["dims"] in LAYOUTS:
            layouts["channels_last"] = LAYOUTS[case["dims"]]
        for layout_name, layout in layouts.items():
            rows = measure(case, variants, layout, repeats)
            if name == "2d" and layout_name == "contiguous":
                goals["default"] = goals_table(rows, error)
            if name in RANK_CASES and layout_name == "contiguous":
                rank_rows[RANK_CASES[name]] = rows
                rank_flops[RANK_CASES[name]] = flop_ratio(case, variants)
            section = f"{table(name, case, layout_name, rows)}\n\n{note}\n"
            print(section, flush=True)
            sections.append(section)
    if "2d" in args.cases and retain_freed_memory():
        # Last, because it cannot be undone: the 2D goals again with glibc keeping freed memory.
        case = CASES["2d"]
        variants = build_variants(case)
        variants.pop("dense")
        rows = measure(case, variants, torch.contiguous_format, dict.fromkeys(variants, args.repeats))
        goals["retained"] = goals_table(rows, check_numerics(case, variants))
    for allocator, text in goals.items():
        print(f"2D goals, {allocator} allocator settings:\n{text}", flush=True)
    rank_goals = rank_goals_table(rank_rows, rank_flops)
    print(f"Issue 16's goals, contiguous input:\n{rank_goals}", flush=True)
    if args.write_docs:
        command = "python benchmarks/bench_recconv.py " + " ".join(sys.argv[1:])
        precision = (
            "\n## Mixed precision\n\n"
            "Relative error against float64 of the same layer cast to float16 / bfloat16 (kernel 5, 16 channels; "
            "`python benchmarks/precision.py`, median of 3 seeds). It stays at the dtype's rounding level and "
            "does not grow with the level, so the layer needs no precision remedy; `tests/test_precision.py` "
            "bounds it.\n\n" + precision_table([1, 2, 3, 4, 5], seeds=3) + "\n"
        )
        DOCS.write_text(
            DOCS_HEADER.format(
                command=command,
                machine=machine(),
                goals=goals.get("default", "(the 2d case was not run)\n"),
                goals_retained=goals.get("retained", "(not measured: needs the 2d case and glibc)\n"),
                rank_goals=rank_goals,
                commit=measured_commit,
            )
            + "\n".join(sections)
            + precision
        )


if __name__ == "__main__":
    main()
