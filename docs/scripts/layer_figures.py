"""Rebuild the figures of docs/layer.md: ``python docs/scripts/layer_figures.py``.

1. ``receptive_field_2d.png``: |d out[center] / d x| of a RecConv2d (k = 5) for levels 0-3,
   log scale, with the theoretical window of ``recconv.receptive_field_window`` drawn on top.
2. ``flop_ratio.png``: conv FLOPs over one k-kernel conv, counted with FlopCounterMode at
   64 samples per axis, against the paper's bound 1 + 2 / (2^d - 1), for ranks 1-3.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import recconv  # noqa: E402

FIGURES = Path(__file__).resolve().parents[1] / "figures"
LAYERS = {1: recconv.RecConv1d, 2: recconv.RecConv2d, 3: recconv.RecConv3d}


def gradient_maps(size: int = 128, levels: range = range(4)) -> None:
    torch.manual_seed(0)
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.4))
    center = size // 2
    for ax, level in zip(axes, levels):
        layer = recconv.RecConv2d(1, 5, level, dtype=torch.float64)
        x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        layer(x)[0, 0, center, center].backward()
        magnitude = x.grad[0, 0].abs()
        ax.imshow(torch.log10(magnitude + 1e-12).clamp(min=-8), cmap="magma")
        rows, cols = recconv.receptive_field_window(layer, (size, size), (center, center))
        ax.add_patch(
            Rectangle((cols.start - 0.5, rows.start - 0.5), len(cols), len(rows), fill=False, ec="cyan", lw=1)
        )
        ax.set_title(f"level {level}: window {len(rows)}x{len(cols)}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("log10 |d out[center] / d x| of RecConv2d(k=5); cyan: receptive_field_window")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(FIGURES / "receptive_field_2d.png", dpi=110)
    plt.close(fig)


def counted_ratio(spatial_dims: int, level: int, size: int = 64) -> float:
    def flops(layer: torch.nn.Module) -> int:
        with FlopCounterMode(display=False) as counter:
            layer(torch.empty(1, 8, *(size,) * spatial_dims, device="meta"))
        return counter.get_total_flops()

    layer_class = LAYERS[spatial_dims]
    return flops(layer_class(8, 5, level, device="meta")) / flops(layer_class(8, 5, 0, device="meta"))


def flop_ratios(levels: range = range(0, 7)) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for spatial_dims, color in zip((1, 2, 3), ("tab:blue", "tab:orange", "tab:green")):
        ax.plot(
            levels,
            [counted_ratio(spatial_dims, lv) for lv in levels],
            "o-",
            color=color,
            label=f"{spatial_dims}D",
        )
        ax.axhline(recconv.flop_ratio_limit(spatial_dims), color=color, ls="--", lw=1)
    ax.set_xlabel("level")
    ax.set_ylabel("conv FLOPs / one k-kernel conv")
    ax.set_title("Counted FLOPs (64 per axis) and the bound 1 + 2/(2^d - 1)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(FIGURES / "flop_ratio.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    FIGURES.mkdir(parents=True, exist_ok=True)
    gradient_maps()
    flop_ratios()
    print(f"wrote {FIGURES / 'receptive_field_2d.png'} and {FIGURES / 'flop_ratio.png'}")
