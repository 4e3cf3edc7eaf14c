"""Figures of effective receptive fields (matplotlib, imported only when a figure is drawn)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

from .erf import ERFResult

_AXES = ("depth", "height", "width")
LOG_FLOOR = 1e-3


def check_figure_path(path: str | os.PathLike[str]) -> None:
    """Check that a figure can be saved at ``path``: matplotlib, an existing folder, a known format.

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: If the folder does not exist or matplotlib cannot write the suffix.
    """
    _figure_class()
    from matplotlib.backend_bases import FigureCanvasBase

    target = pathlib.Path(path)
    if not target.parent.is_dir():
        raise ValueError(
            f"cannot save a figure to {str(target)!r}: folder {str(target.parent)!r} does not exist"
        )
    formats = FigureCanvasBase.get_supported_filetypes()
    if target.suffix.lstrip(".").lower() not in formats:
        raise ValueError(
            f"cannot save a figure as {target.name!r}: expected a file ending in one of {sorted(formats)}"
        )


def plot_erfs(
    results: Sequence[tuple[str, ERFResult]],
    path: str | os.PathLike[str],
    *,
    log: bool = False,
    dpi: int = 100,
) -> None:
    """Draw normalized ERFs side by side and save the figure (PNG, SVG, PDF: by the file suffix).

    1D maps are curves on one plot; 2D maps are heatmaps in a row; 3D maps are their central
    slices, one row per axis cut through the center. All maps of one figure share a rank.

    Args:
        results: ``(label, result)`` pairs, as returned by :func:`recconv.analysis.recconv_erfs`.
        path: Where to save the figure.
        log: Color (1D: plot) ``D`` on a log scale from ``1e-3`` to show the faint outer reach,
            which a linear scale hides next to the bright center.
        dpi: Resolution of raster formats.

    Raises:
        ValueError: If ``results`` is empty or mixes ranks.
        ImportError: If matplotlib is not installed.

    Example:
        >>> import tempfile, pathlib
        >>> from torch import nn
        >>> from recconv.analysis import erf
        >>> result = erf(nn.Conv1d(2, 2, 3, padding=1), (1, 2, 16), samples=2)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     plot_erfs([("conv", result)], pathlib.Path(folder, "erf.png"))
        ...     pathlib.Path(folder, "erf.png").read_bytes()[:4]
        b'\\x89PNG'
    """
    if not results:
        raise ValueError("plot_erfs: no results to draw")
    ranks = {result.normalized.dim() for _, result in results}
    if len(ranks) != 1:
        raise ValueError(f"plot_erfs: all maps must have the same rank, got ranks {sorted(ranks)}")
    Figure = _figure_class()
    from matplotlib.colors import LogNorm, Normalize

    norm = LogNorm(vmin=LOG_FLOOR, vmax=1, clip=True) if log else Normalize(vmin=0, vmax=1)
    label_d = "D (log scale)" if log else "D"
    (rank,) = ranks
    panels = len(results)
    if rank == 1:
        figure = Figure(figsize=(7, 3.5), layout="constrained")
        axes = figure.add_subplot()
        for label, result in results:
            # On a log axis, values under the floor (zeros included) sit on the floor.
            curve = (result.normalized.clamp(min=LOG_FLOOR) if log else result.normalized).numpy()
            offsets = range(-(curve.size // 2), curve.size - curve.size // 2)
            axes.plot(offsets, curve, label=label)
        if log:
            axes.set_yscale("log")
            axes.set_ylim(LOG_FLOOR, 1.5)
        axes.set_xlabel("input position relative to the center")
        axes.set_ylabel(f"normalized contribution {label_d}")
        axes.legend()
    else:
        rows = 1 if rank == 2 else 3
        figure = Figure(figsize=(3 * panels + 1, 3 * rows), layout="constrained")
        grid = figure.subplots(rows, panels, squeeze=False)
        for column, (label, result) in enumerate(results):
            for row in range(rows):
                axes = grid[row][column]
                # clip=True paints zeros (below the log floor) in the lowest color.
                image = axes.imshow(_central_slice(result, row), cmap="viridis", norm=norm)
                axes.set_xticks([])
                axes.set_yticks([])
                if row == 0:
                    axes.set_title(label)
                if rank == 3 and column == 0:
                    axes.set_ylabel(f"central {_AXES[row]} slice")
        figure.colorbar(image, ax=grid, shrink=0.8, label=label_d)
    figure.savefig(path, dpi=dpi)


def _figure_class() -> type:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("drawing ERFs needs matplotlib: pip install 'recconv[examples]'") from None
    return Figure


def _central_slice(result: ERFResult, axis: int):
    """The 2D map, or the slice of a 3D map through its center across ``axis``."""
    normalized = result.normalized
    if normalized.dim() == 2:
        return normalized.numpy()
    return normalized.select(axis, normalized.shape[axis] // 2).numpy()
