"""Speed and memory of RecConv against the paper's plain formula and plain depthwise convs.

Run: ``python benchmarks/bench_recconv.py [--cases 2d 1d 3d 3d-video] [--repeats 15] [--write-docs]``

Every variant of a case runs in the same process, interleaved repeat by repeat, and the table reports
medians. Variants:

* ``paper``: ``benchmarks/paper_reference.py``, the paper's formula with nn.ConvNd + F.interpolate;
* ``ours``: ``recconv.RecConvNd`` with the same weights (outputs checked against ``paper`` in float64);
* ``base``: one depthwise k-kernel ``nn.ConvNd`` (the FLOPs floor);
* ``dense``: one depthwise ``nn.ConvNd`` as wide as the effective kernel ``k * factor**level`` (next odd);
* ``compiled``: ``torch.compile(ours)``.

"forward" runs under ``torch.no_grad``; "train" is forward + backward of ``out.square().mean()`` with the
input requiring grad. Memory is the bytes autograd saves for backward (all tensors packed by
``saved_tensors_hooks``, counted once per storage), which is what a training step keeps alive.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_reference import PaperRecConv  # noqa: E402
from precision import precision_table  # noqa: E402

import recconv  # noqa: E402
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
DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
DOCS_HEADER = (Path(__file__).resolve().parent / "performance_header.md").read_text()


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
    wide = tuple(k + 1 - k % 2 for k in recconv.effective_kernel_size(ours))
    return {
        "paper": paper,
        "ours": ours,
        "base": dense_depthwise_conv(channels, (kernel,) * dims),
        "dense": dense_depthwise_conv(channels, wide),
        "compiled": torch.compile(ours),
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
            })  # fmt: skip
    for name in ("paper", "ours", "base"):
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
    sections = []
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
            section = f"{table(name, case, layout_name, rows)}\n\n{note}\n"
            print(section, flush=True)
            sections.append(section)
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
            DOCS_HEADER.format(command=command, machine=machine()) + "\n".join(sections) + precision
        )


if __name__ == "__main__":
    main()
