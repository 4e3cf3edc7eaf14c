"""Parameters and MACs of the named models, as tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .._util import count_flops, num_params
from ..models import PRESETS, create_model, list_models


class Costs(NamedTuple):
    """Parameters, parameters after :meth:`~recconv.models.RecNeXt.fuse`, and multiply-accumulates of one input."""

    params: int
    fused_params: int
    macs: int


def model_costs(name: str, input_size: Sequence[int] | None = None) -> Costs:
    """Count a named model's parameters and MACs (FlopCounterMode FLOPs / 2: convs and linears) on
    the meta device, for one ``(C, *spatial)`` input (default: the preset's).

    Example:
        >>> model_costs("recnext_audio_tiny").params
        95360
    """
    model = create_model(name, device="meta").eval()
    size = tuple(PRESETS[name].input_size if input_size is None else input_size)
    params = num_params(model)
    flops = count_flops(lambda: model(torch.empty(1, *size, device="meta")))
    return Costs(params, num_params(model.fuse()), flops // 2)


def costs_table(names: Sequence[str] | None = None) -> str:
    """A markdown table of :func:`model_costs` for ``names`` (default: all models)."""
    lines = ["| model | input (C, ...) | params | fused params | MACs | for |", "|---|---|---|---|---|---|"]
    for name in list_models() if names is None else names:
        costs = model_costs(name)
        size = " x ".join(map(str, PRESETS[name].input_size))
        lines.append(
            f"| `{name}` | {size} | {costs.params:,} | {costs.fused_params:,} | "
            f"{costs.macs / 1e6:,.1f} M | {PRESETS[name].summary} |"
        )
    return "\n".join(lines)
