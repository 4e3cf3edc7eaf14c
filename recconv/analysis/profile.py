"""What RecConv costs next to the convs it replaces: params, FLOPs, latency and memory.

Per rank, :func:`profile` measures three kinds of depthwise layer on one input:

* ``k-conv``: one base ``k``-kernel depthwise conv (the floor RecConv is compared with);
* ``RecConv``: the paper's layer at each requested level;
* ``dense``: a plain depthwise conv as wide as RecConv's effective kernel ``k * 2**level``
  (rounded up to odd for 'same' padding). The paper states RecConv's reach as this effective
  kernel, so this is the conv it claims to replace. The exact receptive field (reported too) is
  wider, because the down and up ops add their own span, yet most of that border contributes
  little (see the ERF page); a dense conv as wide as the full receptive field would cost even more,
  so the comparison is conservative.

Measurements:

* params and forward FLOPs are counted on the meta device (no compute) with
  ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add, convolutions only);
* latency: forward (under ``torch.no_grad``) and forward + backward (input and weight gradients),
  timed with ``time.perf_counter`` (synchronizing CUDA), after ``warmup`` rounds; the layers of one
  rank run interleaved, round by round, and the median over ``repeats`` rounds is reported;
* ``saved_mib``: activation memory, the bytes of the distinct tensors autograd saves for the
  backward pass (parameters excluded), measured with ``torch.autograd.graph.saved_tensors_hooks``
  on the meta device. It is what a layer adds to a network's peak training memory (the saved
  tensors of every layer are alive together at the start of the backward pass), it is exact and
  device independent, and PyTorch offers no peak-memory counter on the CPU;
* ``peak_mib`` (CUDA only): ``torch.cuda.max_memory_allocated`` during one forward + backward,
  minus what was allocated before it.

Latency is measured only for layers whose counted forward FLOPs are at most ``max_timed_flops``:
a depthwise conv as wide as a level-3 effective kernel takes minutes per training step in 3D on a
CPU. Such layers still get their exact params, FLOPs and activation memory; their latency is
``None``.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from .._util import count_flops, num_params, per_rank
from ..core import RECCONV, RecConvNd
from ..ops import dense_depthwise_conv
from ..theory import effective_kernel_size, receptive_field
from .progress import Bar, progress_bar

DEFAULT_SIZES = (1024, 64, 16)
"""Default input size per axis for 1D, 2D and 3D."""

_MIB = 2**20


@dataclass(frozen=True)
class ProfileRow:
    """Costs of one layer on one input.

    Attributes:
        rank: Spatial dimensions (1, 2 or 3).
        layer: ``"k-conv"``, ``"RecConv"`` or ``"dense"``.
        level: RecConv's level (the level a dense conv matches); ``None`` for the k-conv.
        kernel: Kernel size per axis of the layer's convs (RecConv: its base ``k``).
        receptive_field: Receptive field per axis.
        input_shape: ``N x C x spatial sizes``.
        params: Parameter count.
        flops: Forward FLOPs, as FlopCounterMode counts them.
        saved_mib: Activation memory saved for backward, in MiB.
        forward_ms: Median forward latency in ms (``None`` if not timed).
        train_ms: Median forward + backward latency in ms (``None`` if not timed).
        peak_mib: Peak extra CUDA memory of a forward + backward in MiB (``None`` off CUDA or
            if not timed).
    """

    rank: int
    layer: str
    level: int | None
    kernel: int
    receptive_field: int
    input_shape: str
    params: int
    flops: int
    saved_mib: float
    forward_ms: float | None
    train_ms: float | None
    peak_mib: float | None


Builder = Callable[..., nn.Module]


def count_costs(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """Parameters and FlopCounterMode FLOPs of one forward pass, on the meta device (no compute).

    Example:
        >>> from recconv import RecConv2d, conv_flops, num_params
        >>> layer = RecConv2d(8, kernel_size=5, level=2, device="meta")
        >>> count_costs(layer, (1, 8, 32, 32)) == (num_params(layer), conv_flops(layer, (32, 32)))
        True
    """
    x = torch.empty(*input_shape, device="meta")
    return num_params(module), count_flops(lambda: module(x))


def saved_bytes(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves in one forward pass (meta device).

    Example:
        >>> from recconv.ops import dense_depthwise_conv
        >>> conv = dense_depthwise_conv(4, (3, 3), device="meta")
        >>> saved_bytes(conv, (2, 4, 8, 8)) == 2 * 4 * 8 * 8 * 4  # a conv keeps its float32 input
        True
    """
    parameters = {p.untyped_storage()._cdata for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in parameters:  # one entry per storage: views of one tensor count once
            saved[storage._cdata] = storage.nbytes()
        return tensor

    x = torch.empty(*input_shape, device="meta", requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x)
    return sum(saved.values())


def dense_kernel(layer: RecConvNd) -> tuple[int, ...]:
    """The dense baseline's kernel: the effective kernel ``k * factor**level``, rounded up to odd.

    Example:
        >>> from recconv import RecConv2d
        >>> dense_kernel(RecConv2d(8, kernel_size=5, level=3))
        (41, 41)
    """
    return tuple(k + 1 - k % 2 for k in effective_kernel_size(layer))


def cost_rows(
    dims: Sequence[int], levels: Sequence[int], kernel_size: int, size: int, channels: int
) -> list[dict]:
    """Counted costs of RecConv against one k-kernel conv and a dense conv as wide as its effective kernel."""
    rows = []
    for spatial_dims in dims:
        layer_class = per_rank(RECCONV, spatial_dims)
        input_shape = (1, channels, *(size,) * spatial_dims)
        base = dense_depthwise_conv(channels, (kernel_size,) * spatial_dims, device="meta")
        base_params, base_flops = count_costs(base, input_shape)
        for level in levels:
            layer: RecConvNd = layer_class(channels, kernel_size, level, device="meta")
            params, flops = count_costs(layer, input_shape)
            wide = dense_kernel(layer)
            dense_params, dense_flops = count_costs(
                dense_depthwise_conv(channels, wide, device="meta"), input_shape
            )
            rows.append(
                {
                    "rank": f"{spatial_dims}D",
                    "level": level,
                    "receptive_field": receptive_field(layer)[0],
                    "params": params,
                    "params_vs_k": params / base_params,
                    "flops_vs_k": flops / base_flops,
                    "dense_kernel": wide[0],
                    "dense_params_vs_ours": dense_params / params,
                    "dense_flops_vs_ours": dense_flops / flops,
                }
            )
    return rows


def cost_markdown(rows: list[dict]) -> str:
    """The rows of :func:`cost_rows` as a markdown table."""
    header = (
        "| rank | level | receptive field | params | params / k-conv | FLOPs / k-conv "
        "| dense kernel | dense params / ours | dense FLOPs / ours |"
    )
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['rank']} | {r['level']} | {r['receptive_field']} | {r['params']:,} | "
            f"{r['params_vs_k']:.2f} | {r['flops_vs_k']:.3f} | {r['dense_kernel']} | "
            f"{r['dense_params_vs_ours']:.1f} | {r['dense_flops_vs_ours']:.1f} |"
        )
    return "\n".join(lines)


def profile(
    dims: Sequence[int] = (1, 2, 3),
    levels: Sequence[int] = (1, 2, 3),
    *,
    kernel_size: int = 5,
    channels: int = 16,
    size: int | None = None,
    batch: int = 2,
    repeats: int = 7,
    warmup: int = 2,
    max_timed_flops: float = 2e8,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[ProfileRow]:
    """Profile RecConv against one k-kernel depthwise conv and a dense conv of its effective kernel.

    See the module docstring for what is measured and how.

    Args:
        dims: Ranks to profile (1, 2, 3).
        levels: RecConv levels (each gets a RecConv row and a dense row).
        kernel_size: Odd base kernel ``k``.
        channels: Channels of every layer.
        size: Input size per spatial axis; by default 1024, 64 and 16 for 1D, 2D and 3D.
        batch: Batch size.
        repeats: Timed rounds per layer (the median is reported).
        warmup: Untimed rounds first.
        max_timed_flops: Layers with more counted forward FLOPs are not timed.
        device: Where to time (``"cpu"``, ``"cuda"``, ...).
        progress: Show a tqdm bar (only on a terminal).

    Returns:
        Per rank: the k-conv row, then a RecConv and a dense row per level.

    Raises:
        ValueError: For a rank outside 1..3, a negative level, an even kernel or a non-positive
            size, batch, channel count or repeat count.

    Example:
        >>> rows = profile(dims=[1], levels=[2], size=64, channels=4, repeats=1, warmup=0)
        >>> for row in rows:
        ...     print(row.layer, row.level, row.kernel, row.params)
        k-conv None 5 20
        RecConv 2 5 80
        dense 2 21 84
    """
    _check_profile_arguments(dims, levels, kernel_size, channels, size, batch, repeats, warmup)
    device = torch.device(device)
    rows = []
    bar = progress_bar(total=len(dims) * (warmup + repeats), desc="profile", enabled=progress)
    try:
        for spatial_dims in dims:
            rows += _profile_rank(
                spatial_dims,
                levels,
                kernel_size,
                channels,
                size,
                batch,
                repeats,
                warmup,
                max_timed_flops,
                device,
                bar,
            )
    finally:
        bar.close()
    return rows


def format_rows(rows: Sequence[ProfileRow], fmt: str = "md") -> str:
    """Render profile rows as ``"md"`` (markdown table), ``"csv"`` or ``"json"``.

    The markdown table adds two ratios to the same rank's k-conv: FLOPs and forward + backward time.

    Raises:
        ValueError: For an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format_rows: unknown format {fmt!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[fmt](rows)


def _markdown(rows: Sequence[ProfileRow]) -> str:
    base = {r.rank: r for r in rows if r.layer == "k-conv"}
    show_peak = any(r.peak_mib is not None for r in rows)
    header = (
        "| rank | layer | level | kernel | RF | params | MFLOPs | FLOPs / k-conv | fwd ms | fwd+bwd ms "
        "| fwd+bwd / k-conv | saved MiB |" + (" peak MiB |" if show_peak else "")
    )
    lines = [header, "|" + "---|" * (12 + show_peak)]

    def number(value: float | None, digits: str) -> str:
        return "—" if value is None else format(value, digits)

    for r in rows:
        k = base.get(r.rank)
        flops_ratio = r.flops / k.flops if k else None
        train_ratio = r.train_ms / k.train_ms if k and r.train_ms is not None and k.train_ms else None
        cells = [
            f"{r.rank}D",
            r.layer,
            "—" if r.level is None else str(r.level),
            str(r.kernel),
            str(r.receptive_field),
            f"{r.params:,}",
            f"{r.flops / 1e6:,.2f}",
            number(flops_ratio, ".2f"),
            number(r.forward_ms, ".2f"),
            number(r.train_ms, ".2f"),
            number(train_ratio, ".2f"),
            f"{r.saved_mib:.2f}",
        ]
        if show_peak:
            cells.append(number(r.peak_mib, ".2f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv(rows: Sequence[ProfileRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(ProfileRow.__dataclass_fields__), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return out.getvalue().rstrip("\n")


def _json(rows: Sequence[ProfileRow]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2)


FORMATS: dict[str, Callable[[Sequence[ProfileRow]], str]] = {"md": _markdown, "csv": _csv, "json": _json}


def _candidates(
    spatial_dims: int, levels: Sequence[int], kernel_size: int, channels: int
) -> list[tuple[str, int | None, int, int, Builder]]:
    """``(layer, level, kernel, receptive field, builder(device=...))`` per layer to profile."""
    base = (kernel_size,) * spatial_dims
    candidates: list[tuple[str, int | None, int, int, Builder]] = [
        ("k-conv", None, kernel_size, kernel_size, partial(dense_depthwise_conv, channels, base))
    ]
    layer_class = per_rank(RECCONV, spatial_dims)
    for level in levels:
        layer = layer_class(channels, kernel_size, level, device="meta")
        wide = dense_kernel(layer)
        candidates.append(
            (
                "RecConv",
                level,
                kernel_size,
                int(receptive_field(layer)[0]),  # finite for a RecConv
                partial(layer_class, channels, kernel_size, level),
            )
        )
        candidates.append(("dense", level, wide[0], wide[0], partial(dense_depthwise_conv, channels, wide)))
    return candidates


def _profile_rank(
    spatial_dims: int,
    levels: Sequence[int],
    kernel_size: int,
    channels: int,
    size: int | None,
    batch: int,
    repeats: int,
    warmup: int,
    max_timed_flops: float,
    device: torch.device,
    bar: Bar,
) -> list[ProfileRow]:
    input_size = size or per_rank(DEFAULT_SIZES, spatial_dims)
    input_shape = (batch, channels, *(input_size,) * spatial_dims)
    candidates = _candidates(spatial_dims, levels, kernel_size, channels)
    counted = []
    for *_, build in candidates:
        meta = build(device="meta")
        counted.append((*count_costs(meta, input_shape), saved_bytes(meta, input_shape)))
    modules = [
        build(device=device) if flops <= max_timed_flops else None
        for (*_, build), (_, flops, _) in zip(candidates, counted)
    ]
    timings = _time_interleaved(modules, input_shape, device, warmup, repeats, bar)
    rows = []
    for (name, level, kernel, field, _), (params, flops, saved), timing in zip(candidates, counted, timings):
        forward_ms, train_ms, peak = (None, None, None) if timing is None else timing
        rows.append(
            ProfileRow(
                rank=spatial_dims,
                layer=name,
                level=level,
                kernel=kernel,
                receptive_field=field,
                input_shape="x".join(map(str, input_shape)),
                params=params,
                flops=flops,
                saved_mib=saved / _MIB,
                forward_ms=forward_ms,
                train_ms=train_ms,
                peak_mib=peak,
            )
        )
    return rows


def _time_interleaved(
    modules: list[nn.Module | None],
    input_shape: tuple[int, ...],
    device: torch.device,
    warmup: int,
    repeats: int,
    bar: Bar,
) -> list[tuple[float, float, float | None] | None]:
    """Median forward and forward + backward ms per module (round-robin), and CUDA peak memory."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(input_shape, generator=generator).to(device)
    grad = torch.randn(input_shape, generator=generator).to(device)
    forward: list[list[float]] = [[] for _ in modules]
    train: list[list[float]] = [[] for _ in modules]
    for round_index in range(warmup + repeats):
        for index, module in enumerate(modules):
            if module is None:
                continue
            f, t = _forward_ms(module, x, device), _train_ms(module, x, grad, device)
            if round_index >= warmup:
                forward[index].append(f)
                train[index].append(t)
        bar.update()
    results: list[tuple[float, float, float | None] | None] = []
    for index, module in enumerate(modules):
        if module is None:
            results.append(None)
            continue
        peak = _cuda_peak_mib(module, x, grad) if device.type == "cuda" else None
        results.append((statistics.median(forward[index]), statistics.median(train[index]), peak))
    return results


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forward_ms(module: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    with torch.no_grad():
        _synchronize(device)
        start = time.perf_counter()
        module(x)
        _synchronize(device)
    return 1e3 * (time.perf_counter() - start)


def _train_ms(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, device: torch.device) -> float:
    x = x.detach().requires_grad_(True)  # inside a network a layer also passes the gradient on
    module.zero_grad(set_to_none=True)
    _synchronize(device)
    start = time.perf_counter()
    module(x).backward(grad)
    _synchronize(device)
    return 1e3 * (time.perf_counter() - start)


def _cuda_peak_mib(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> float:
    x = x.detach().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    before = torch.cuda.memory_allocated(x.device)
    module(x).backward(grad)
    torch.cuda.synchronize(x.device)
    return (torch.cuda.max_memory_allocated(x.device) - before) / _MIB


def _check_profile_arguments(
    dims: Sequence[int],
    levels: Sequence[int],
    kernel_size: int,
    channels: int,
    size: int | None,
    batch: int,
    repeats: int,
    warmup: int,
) -> None:
    def positive(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if not dims or any(d not in (1, 2, 3) for d in dims):
        raise ValueError(f"profile: dims must be ranks among 1, 2, 3, got {list(dims)}")
    if not levels or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in levels):
        raise ValueError(f"profile: levels must be ints >= 0, got {list(levels)}")
    if not positive(kernel_size) or kernel_size % 2 == 0:
        raise ValueError(f"profile: kernel_size must be odd and positive, got {kernel_size!r}")
    for name, value in {"channels": channels, "batch": batch, "repeats": repeats}.items():
        if not positive(value):
            raise ValueError(f"profile: {name} must be a positive int, got {value!r}")
    if size is not None and not positive(size):
        raise ValueError(f"profile: size must be a positive int or None, got {size!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"profile: warmup must be an int >= 0, got {warmup!r}")
