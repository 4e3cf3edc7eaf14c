"""What :func:`recconv.swap` changed: one row per replaced conv, one per skipped one, and totals."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SwappedLayer:
    """One changed conv: replaced by a RecConv, or given a RecConv branch (``dense="branch"``).

    Attributes:
        name: Qualified module name (the first one, if the conv is registered several times).
        change: ``"replaced"`` (a depthwise conv became a RecConv) or ``"branch"`` (a dense conv
            became :class:`recconv.branch.RecBranch`, ``conv(x + rec(x))``).
        channels: Channels of the RecConv (the conv's input channels).
        old_kernel: Kernel of the conv.
        new_kernel: Base kernel of the RecConv.
        old_receptive_field: Per-axis receptive field of the conv, ``dilation * (kernel - 1) + 1``.
        receptive_field: Per-axis receptive field after the change: the RecConv's
            (:func:`recconv.receptive_field`), or for a branch the union of the RecConv's windows
            under the conv's taps (from :func:`recconv.receptive_field_window`, at the widest
            phase); ``None`` for ops the theory helpers cannot describe.
        old_params: Parameters of the conv, bias included.
        new_params: Parameters of the RecConv, or of the conv and its RecConv branch.
        old_flops: FLOPs of the conv (2 per multiply-add, as ``FlopCounterMode`` counts)
            summed over its calls in one forward pass of the report's input, or per output
            position when the report has no input size.
        new_flops: The same after the change (the RecConv's from :func:`recconv.conv_flops`);
            ``None`` for ops the theory helpers cannot describe.
    """

    name: str
    change: str
    channels: int
    old_kernel: tuple[int, ...]
    new_kernel: tuple[int, ...]
    old_receptive_field: tuple[int, ...]
    receptive_field: tuple[float, ...] | None
    old_params: int
    new_params: int
    old_flops: float
    new_flops: float | None


@dataclass(frozen=True)
class SkippedLayer:
    """A conv (or an existing RecConv or branch) that :func:`recconv.swap` left in place, and why."""

    name: str
    layer: str
    reason: str


@dataclass
class SwapReport:
    """What :func:`recconv.swap` changed: one row per replaced conv, one per skipped one, and totals.

    FLOPs are counted as ``torch.utils.flop_counter.FlopCounterMode`` counts them: 2 per
    multiply-add of convolutions and matrix products, nothing for elementwise ops, pooling
    and interpolation. With ``input_size`` they are totals for one forward pass of a batch
    of one; without it, a layer's input size is unknown and its FLOPs are per output position
    (for RecConv, the exact average over sizes divisible by ``factor**level``), which do not
    add up across layers, so the FLOP totals are then ``None``.

    Attributes:
        level: The RecConv level used.
        init: ``"preserve"`` or ``"random"``.
        dense: ``"branch"`` if dense convs got a RecConv branch, else ``None``.
        input_size: Shape of one input sample (batch axis excluded) used to count FLOPs, or ``None``.
        swapped: The changed convs.
        skipped: The convs, RecConvs and branches left in place, with the reason.
        params_before: Parameters of the whole model before the swap (uninitialized lazy
            parameters, which have no size yet, are not counted).
        params_after: Parameters of the whole model after the swap.
        flops_before: FLOPs of one forward pass of the whole model on ``input_size`` before the
            swap, or ``None``.
        flops_after: The same after the swap, or ``None`` (also when a custom builder is used).
    """

    level: int
    init: str
    input_size: tuple[int, ...] | None
    dense: str | None = None
    swapped: list[SwappedLayer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    flops_before: int | None = None
    flops_after: int | None = None

    @property
    def swapped_params(self) -> tuple[int, int]:
        """Parameters of the changed convs before, and of what took their place after."""
        return sum(r.old_params for r in self.swapped), sum(r.new_params for r in self.swapped)

    @property
    def swapped_flops(self) -> tuple[float, float] | None:
        """Conv FLOPs of the changed convs before and after, or ``None`` without an input size."""
        if self.input_size is None or any(r.new_flops is None for r in self.swapped):
            return None
        return sum(r.old_flops for r in self.swapped), sum(r.new_flops or 0 for r in self.swapped)

    def to_markdown(self) -> str:
        """The report as markdown tables: changed layers, totals, skipped layers."""
        dense = f", dense {self.dense!r}" if self.dense else ""
        where = f"input {self.input_size}" if self.input_size else "no input size: FLOPs per output position"
        flops = "FLOPs" if self.input_size else "FLOPs / position"
        lines = [
            f"recconv.swap: {len(self.swapped)} swapped, {len(self.skipped)} skipped "
            f"(level {self.level}, init {self.init!r}{dense}, {where})",
            "",
            f"| module | change | channels | kernel | base kernel | receptive field | params | {flops} |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.swapped:
            lines.append(
                f"| {r.name} | {r.change} | {r.channels} | {format_axes(r.old_kernel)} | {format_axes(r.new_kernel)} | "
                f"{format_axes(r.old_receptive_field)} → {format_axes(r.receptive_field)} | "
                f"{_arrow(r.old_params, r.new_params)} | {_arrow(r.old_flops, r.new_flops)} |"
            )
        lines += ["", "| total | before | after | after / before |", "|---|---|---|---|"]
        totals = [
            ("params of the swapped layers", self.swapped_params),
            ("FLOPs of the swapped layers", self.swapped_flops),
            ("params of the model", (self.params_before, self.params_after)),
            ("FLOPs of the model", (self.flops_before, self.flops_after)),
        ]
        for label, pair in totals:
            before, after = pair if pair is not None else (None, None)
            ratio = f"{after / before:.3f}" if before and after is not None else "-"
            lines.append(f"| {label} | {_number(before)} | {_number(after)} | {ratio} |")
        if self.skipped:
            lines += ["", "| skipped | layer | reason |", "|---|---|---|"]
            lines += [f"| {s.name} | {s.layer} | {s.reason} |" for s in self.skipped]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def format_axes(size: tuple[float, ...] | None) -> str:
    return "-" if size is None else "x".join(map(str, size))


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}"


def _arrow(before: float, after: float | None) -> str:
    return f"{_number(before)} → {_number(after)}"
