"""Time this checkout's RecConv layers against an earlier commit's, interleaved in one process.

The earlier ``recconv`` package is unpacked with ``git archive`` into a temporary folder and imported
under another name; both layers get the same weights and inputs. Prints the medians of forward (no
grad) and training (forward + backward) time, new over old, per rank:

    python benchmarks/compare_commit.py 1aea55e --threads 2
    python benchmarks/compare_commit.py 1aea55e --recompute   # the new layers with recompute=True
    python benchmarks/compare_commit.py a4e568a --compile [--stored]   # torch.compile of both layers
    python benchmarks/compare_commit.py e7c5169 --causal   # both layers causal along their last axis
    python benchmarks/compare_commit.py e7c5169 --bfloat16   # both under CPU autocast to bfloat16
    python benchmarks/compare_commit.py fbdbd6a --upsample transposed   # another up op in both
    python benchmarks/compare_commit.py d5f9b75 --downsample avgpool   # another down op in both
    python benchmarks/compare_commit.py 2ebc501 --compile --retain-freed-memory   # glibc keeps freed memory
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's recconv, also when run from elsewhere
from bench_recconv import retain_freed_memory  # noqa: E402

import recconv  # noqa: E402

CASES = {  # rank: (layer arguments, input shape)
    "1D": ({"in_channels": 64, "kernel_size": 5, "level": 3}, (8, 64, 4096)),
    "2D": ({"in_channels": 64, "kernel_size": 5, "level": 3}, (8, 64, 56, 56)),
    "3D": ({"in_channels": 32, "kernel_size": 3, "level": 2, "factor": (1, 2, 2)}, (2, 32, 8, 32, 32)),
}


def earlier_package(commit: str, folder: Path):
    """The ``recconv`` package of ``commit``, imported as ``recconv_<commit>``."""
    archive = subprocess.run(["git", "archive", commit, "recconv"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    name = f"recconv_{commit}"
    (folder / "recconv").rename(folder / name)
    sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the earlier commit, e.g. 1aea55e")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=12)
    storing = parser.add_mutually_exclusive_group()
    storing.add_argument("--recompute", action="store_true", help="build the new layers with recompute=True")
    storing.add_argument("--stored", action="store_true", help="build both layers with recompute=False")
    parser.add_argument("--compile", action="store_true", help="time torch.compile of both layers")
    parser.add_argument(
        "--causal", action="store_true", help="build both layers causal along their last axis"
    )
    parser.add_argument("--bfloat16", action="store_true", help="run both under CPU autocast to bfloat16")
    parser.add_argument("--upsample", help="the up op of both layers (default: the layers' default)")
    parser.add_argument("--downsample", help="the down op of both layers (default: the layers' default)")
    parser.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="make glibc keep freed memory for reuse (as bench_recconv.py's last table): fewer page faults, less noise",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.retain_freed_memory and not retain_freed_memory():
        parser.error("--retain-freed-memory needs glibc")
    with tempfile.TemporaryDirectory() as folder:
        old_package = earlier_package(args.commit, Path(folder))
        setting = (
            (", both causal" if args.causal else "")
            + (", both compiled" if args.compile else "")
            + (", bfloat16 autocast" if args.bfloat16 else "")
            + (f", upsample={args.upsample!r}" if args.upsample else "")
            + (f", downsample={args.downsample!r}" if args.downsample else "")
            + (", glibc keeping freed memory" if args.retain_freed_memory else "")
        )
        print(f"recconv at {args.commit} against this checkout{setting}, {args.threads} threads, medians of "
              f"{args.repeats - 2} interleaved rounds after 2 warm-up rounds")  # fmt: skip
        for label, (options, shape) in CASES.items():
            layer_class = f"RecConv{label[0]}d"
            stored = {"recompute": False} if args.stored else {}
            if args.causal:
                options = {**options, "causal": len(shape) - 3}
            if args.upsample:
                options = {**options, "upsample": args.upsample}
            if args.downsample:
                options = {**options, "downsample": args.downsample}
            new = getattr(recconv, layer_class)(
                **options, **({"recompute": True} if args.recompute else stored)
            )
            old = getattr(old_package, layer_class)(**options, **stored)
            old.load_state_dict(new.state_dict())
            if args.compile:
                torch.compiler.reset()  # Dynamo's recompile limit counts per code object: a fresh start per rank
                new, old = torch.compile(new), torch.compile(old)
            x = torch.randn(shape, requires_grad=True)
            times: dict[str, list[float]] = {
                key: [] for key in ("old fwd", "new fwd", "old train", "new train")
            }
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bfloat16)
            for _ in range(args.repeats):
                for name, layer in (("old", old), ("new", new)):
                    with torch.no_grad(), autocast:
                        start = time.perf_counter()
                        layer(x)
                        times[f"{name} fwd"].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    with autocast:
                        out = layer(x)
                    out.float().sum().backward()
                    times[f"{name} train"].append(time.perf_counter() - start)
            median = {key: statistics.median(values[2:]) for key, values in times.items()}
            print(
                f"{label} {tuple(shape)}: forward new/old {median['new fwd'] / median['old fwd']:.3f}, "
                f"training new/old {median['new train'] / median['old train']:.3f} "
                f"(old: forward {1e3 * median['old fwd']:.1f} ms, training {1e3 * median['old train']:.1f} ms)"
            )


if __name__ == "__main__":
    main()
