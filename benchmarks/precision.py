"""Low-precision error of RecConv against float64, per rank and level.

Run: ``python benchmarks/precision.py`` (prints a markdown table; CPU, a few seconds).

For each rank and level the layer's float64 output is the reference; the same weights and input cast
to float16 / bfloat16 give the relative error ``||out - ref|| / ||ref||`` (median over seeds). The
paper reports mixed-precision instability; this measures whether error grows with the level.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

import recconv

LAYERS = {1: recconv.RecConv1d, 2: recconv.RecConv2d, 3: recconv.RecConv3d}
SIZES = {1: (4096,), 2: (128, 128), 3: (16, 48, 48)}


def relative_error(spatial_dims: int, level: int, dtype: torch.dtype, seed: int) -> float:
    torch.manual_seed(seed)
    layer = LAYERS[spatial_dims](16, 5, level, dtype=torch.float64)
    x = torch.randn(2, 16, *SIZES[spatial_dims], dtype=torch.float64)
    reference = layer(x)
    out = copy.deepcopy(layer).to(dtype)(x.to(dtype)).double()
    return ((out - reference).norm() / reference.norm()).item()


def precision_table(levels: list[int], seeds: int) -> str:
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    lines = [
        "| rank | level | " + " | ".join(f"{name} rel. error" for name in dtypes) + " |",
        "|---|---|" + "---|" * len(dtypes),
    ]
    with torch.no_grad():
        for spatial_dims in (1, 2, 3):
            for level in levels:
                errors = [
                    statistics.median(relative_error(spatial_dims, level, dtype, s) for s in range(seeds))
                    for dtype in dtypes.values()
                ]
                lines.append(
                    f"| {spatial_dims}D | {level} | " + " | ".join(f"{e:.2e}" for e in errors) + " |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(precision_table(args.levels, args.seeds))


if __name__ == "__main__":
    main()
