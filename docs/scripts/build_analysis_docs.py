"""Rebuild the ERF gallery (docs/erf.md) and the cost page (docs/costs.md) from the library.

Run from anywhere (it imports the ``recconv`` of this checkout)::

    python docs/scripts/build_analysis_docs.py              # both pages
    python docs/scripts/build_analysis_docs.py --only erf   # or: --only costs

Figures go to ``docs/figures/``; each table replaces the text between its
``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers in the page, so the prose around it
stays hand-written. The ERF figures and tables are deterministic (fixed seeds); the latency
columns depend on the machine and its load, which the page records.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's recconv, not an installed one

import torch  # noqa: E402

from recconv.analysis import erf, plot_erfs, ratio_table, recconv_erfs  # noqa: E402
from recconv.analysis.profile import cost_markdown, cost_rows, format_rows, profile  # noqa: E402
from recconv.ops import dense_depthwise_conv  # noqa: E402

DOCS = ROOT / "docs"
FIGURES = DOCS / "figures"

# (rank, kernel, levels, figures as (file, log colors)): each is what
# `recconv erf --dims D --kernel-size K --levels ... [--log-color] --out FILE` draws and prints.
ERF_CASES = [
    (1, 5, [0, 1, 2, 3, 4], [("erf_1d.png", True)]),
    (2, 5, [0, 1, 2, 3], [("erf_2d.png", False), ("erf_2d_log.png", True)]),
    (3, 3, [0, 1, 2], [("erf_3d.png", True)]),
]
PROFILE_REPEATS = 15
PROFILE_THREADS = 1
DENSE_KERNEL = 41  # level 3's effective kernel 5 * 2**3 = 40, rounded up to odd


def replace_block(page: pathlib.Path, name: str, text: str) -> None:
    """Put ``text`` between the page's BEGIN/END markers called ``name``."""
    source = page.read_text()
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    if not pattern.search(source):
        raise SystemExit(f"{page}: no <!-- BEGIN {name} --> ... <!-- END {name} --> markers")
    page.write_text(pattern.sub(lambda m: m.group(1) + text.rstrip("\n") + "\n" + m.group(2), source))


def build_erf() -> None:
    page = DOCS / "erf.md"
    by_rank = {}
    for dims, kernel, levels, figures in ERF_CASES:
        print(f"ERF {dims}D ...", flush=True)
        results = by_rank[dims] = recconv_erfs(dims, kernel, levels, progress=True)
        for name, log in figures:
            plot_erfs(results, FIGURES / name, log=log)
        replace_block(page, f"erf-{dims}d", ratio_table(results))

    # Level 3 against a dense depthwise conv as wide as its effective kernel, both at random init.
    print("ERF 2D dense ...", flush=True)
    level_3 = by_rank[2][-1]
    size = level_3[1].scores.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dense = dense_depthwise_conv(8, (DENSE_KERNEL, DENSE_KERNEL))
    dense_result = erf(dense, (1, 8, size, size), seed=0, progress=True)
    pair = [level_3, (f"dense {DENSE_KERNEL} x {DENSE_KERNEL}", dense_result)]
    plot_erfs(pair, FIGURES / "erf_2d_dense.png", log=True)
    replace_block(page, "erf-2d-dense", ratio_table(pair))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0] if names else cpu
    threads = torch.get_num_threads()
    return f"{cpu}, {threads} thread{'s' * (threads != 1)}, torch {torch.__version__}, Python {platform.python_version()}"


def checked_out_commit() -> str:
    """The commit of this checkout, marked ``+changes`` when the working tree differs from it."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return head.stdout.strip() + (" +changes" if dirty.stdout.strip() else "")


def build_costs() -> None:
    page = DOCS / "costs.md"
    print("counted costs ...", flush=True)
    counted = cost_rows([1, 2, 3], [1, 2, 3, 4], kernel_size=5, size=64, channels=64)
    replace_block(page, "costs-counted", cost_markdown(counted))
    print("profile ...", flush=True)
    commit = checked_out_commit()  # before this run writes the page
    # One thread: on a shared machine a second thread waits for a busy core at every parallel region,
    # which buries small ops under scheduling noise.
    torch.set_num_threads(PROFILE_THREADS)
    # More rounds than the CLI default: the docs machine is shared, and medians need a majority of quiet rounds.
    rows = profile(repeats=PROFILE_REPEATS, warmup=3, progress=True)
    source = f"Measured with `python docs/scripts/build_analysis_docs.py --only costs` on {machine()}, at commit {commit}"
    replace_block(page, "costs-profile", f"{source}.\n\n" + format_rows(rows, "md"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["erf", "costs"])
    args = parser.parse_args()
    if args.only in (None, "erf"):
        build_erf()
    if args.only in (None, "costs"):
        build_costs()


if __name__ == "__main__":
    main()
