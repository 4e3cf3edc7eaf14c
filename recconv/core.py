"""The recursive core of RecConv, written once for every rank.

For an input ``x`` the layer computes (Zhao, Luo, Ouyang, 2024, arXiv 2412.19628)::

    f_0 = x;  f_i = down(f_{i-1})                      for i = 1..level
    h = 0;    h = up(convs[level - i](f_i + h), size(f_{i-1}))   for i = level..1
    out = convs[level](x + h)

``convs[0]`` works at the coarsest scale and ``convs[level]`` at full resolution. Every op is
a builder (see :mod:`recconv.ops`): ``conv`` builds the op of every level and ``coarse``, if
given, replaces ``convs[0]``, the op at the coarsest scale; :class:`recconv.RecAttn2d` puts
linear attention there.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import torch
from torch import Tensor, nn
from torch.fx import _symbolic_trace
from torch.utils.checkpoint import checkpoint

from ._util import CHANNELS_LAST, LAYOUTS, as_tuple, check_int, is_int
from .ops import (
    CONV_OPS,
    DOWNSAMPLE_OPS,
    UPSAMPLE_OPS,
    Builder,
    Window,
    ask,
    build_op,
    convs_run_as_op,
    resolve_builder,
    with_length,
)


def _name_of(op: str | Builder) -> str:
    return repr(op) if isinstance(op, str) else getattr(op, "__qualname__", repr(op))


_T = TypeVar("_T")
OpStateKeys = dict[str, list[tuple[str, str]]]
"""For each op that :meth:`RecConvNd.step` runs, its keys in the layer's state and in its own."""

# The state each layer's last step returned, with its chunk's shape, keys, tensors and the ops' keys:
# handed back unchanged, it needs no check. Beside the layers, not in them, so that copying a layer
# copies no state.
_LAST_STATES: weakref.WeakKeyDictionary[
    nn.Module, tuple[torch.Size, dict[str, Tensor], tuple[str, ...], tuple[Tensor, ...], OpStateKeys]
] = weakref.WeakKeyDictionary()


class RecConvNd(nn.Module):
    """Recursive depthwise convolution; use :class:`RecConv1d`, :class:`RecConv2d` or :class:`RecConv3d`.

    Args:
        in_channels: Channels of the input and the output (the layer is depthwise).
        kernel_size: Odd base kernel ``k`` of every conv, an int or one per spatial axis.
        level: Number of recursive levels ``l``; the effective kernel is ``k * factor**l``.
            ``level=0`` is a single depthwise conv.
        bias: Learn a bias in every conv (off by default, as in the paper).
        upsample: ``"linear"`` (linear/bilinear/trilinear by rank, the paper's choice),
            ``"nearest"``, ``"transposed"`` (learned, any input size), ``"haar"`` or an upsample builder
            following the protocol in :mod:`recconv.ops`.
        downsample: ``"conv"`` (a depthwise stride-``factor`` conv, the paper's choice),
            ``"avgpool"``, ``"maxpool"``, ``"haar"`` (the Haar wavelet's low-pass band) or a
            downsample builder.
        factor: Downsampling factor per level, an int or one per axis; ``1`` leaves that axis
            at full resolution (for example ``(1, 2, 2)`` keeps the time axis of a video).
        shared_down: One down op for all levels (the paper's choice) instead of one per level.
        conv: ``"depthwise"`` (a bias-free depthwise conv, the paper's choice) or a conv
            builder: the op of every level, ``convs[0..level]``.
        coarse: ``None`` (the ``conv`` op) or a builder of a different op for the coarsest
            level, ``convs[0]`` (with ``level=0`` it is the whole layer).
        causal: ``False``; ``True`` for causality along the first spatial axis; or the index
            of the spatial axis along which an output never depends on later inputs.
        recompute: In training, keep only the input for backward and run the recursion again
            there (activation memory of one base conv instead of 2-4x). ``None`` (default): where
            it is also the faster, under ``torch.compile`` except for float32 layers on the CPU
            (their convs run as recconv's own op there, see docs/performance.md), and not
            in eager mode, where it costs about a tenth of a training step on the CPU; ``True`` or
            ``False``: always or never. Only layers whose ops are all ``recomputable`` (the
            built-in ones) recompute.
        device: Where to create the parameters.
        dtype: Parameter dtype.

    Raises:
        ValueError: For an even kernel, a negative level, non-positive channels or factors,
            per-axis tuples of the wrong length, an unknown op name or an invalid causal axis.
        TypeError: For arguments of the wrong type.
    """

    spatial_dims: int

    def __init__(
        self,
        in_channels: int,
        kernel_size: int | Sequence[int] = 5,
        level: int = 2,
        *,
        bias: bool = False,
        upsample: str | Builder = "linear",
        downsample: str | Builder = "conv",
        factor: int | Sequence[int] = 2,
        shared_down: bool = True,
        conv: str | Builder = "depthwise",
        coarse: str | Builder | None = None,
        causal: bool | int = False,
        recompute: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if not hasattr(self, "spatial_dims"):
            raise TypeError("RecConvNd is abstract: use RecConv1d, RecConv2d or RecConv3d")
        dims = self.spatial_dims
        if not (is_int(in_channels) and in_channels >= 1):
            raise ValueError(f"{owner}: in_channels must be a positive int, got {in_channels!r}")
        self.in_channels = in_channels
        self.level = check_int(level, "level", owner, minimum=0)
        self.kernel_size = as_tuple(kernel_size, dims, "kernel_size", owner)
        if any(k < 1 or k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"{owner}: kernel_size must be odd and positive, got {kernel_size!r}")
        self.factor = as_tuple(factor, dims, "factor", owner, minimum=1)
        self.causal_axis = self._causal_axis(causal, owner)
        self.has_bias = bias
        self.shared_down = shared_down
        self._label = f"{owner}({in_channels}, level={level})"
        self.downsample, down_builder = resolve_builder(downsample, DOWNSAMPLE_OPS, "downsample", owner)
        self.upsample, up_builder = resolve_builder(upsample, UPSAMPLE_OPS, "upsample", owner)
        self.conv_op, conv_builder = resolve_builder(conv, CONV_OPS, "conv", owner)
        self.coarse_op: str | Builder | None
        self.coarse_op, coarse_builder = (
            (None, conv_builder) if coarse is None else resolve_builder(coarse, CONV_OPS, "coarse", owner)
        )
        op_kwargs = {"bias": bias, "causal_axis": self.causal_axis, "device": device, "dtype": dtype}

        def build(builder: Builder, role: str) -> nn.Module:
            return build_op(builder, role, owner, in_channels, self.kernel_size, self.factor, **op_kwargs)

        def build_conv(builder: Builder, role: str) -> nn.Module:
            return build_op(builder, role, owner, in_channels, self.kernel_size, **op_kwargs)

        levels = range(level)
        self.down = build(down_builder, "downsample") if shared_down and level > 0 else None
        self.downs = None if shared_down else nn.ModuleList(build(down_builder, "downsample") for _ in levels)
        self.ups = nn.ModuleList(build(up_builder, "upsample") for _ in levels)
        self.convs = nn.ModuleList(
            build_conv(coarse_builder, "coarse")
            if i == 0 and coarse is not None
            else build_conv(conv_builder, "conv")
            for i in range(level + 1)
        )
        # The ops say how the layer may run them (see the op protocol in recconv.ops): a 1D layer
        # runs lifted to (N, C, 1, L) only if every op accepts it, and sums go into up outputs
        # in place only if every up op returns a fresh tensor.
        self._liftable = dims == 1 and all(getattr(op, "liftable", False) for op in self._ops())
        self._sum_in_place = all(getattr(up, "fresh_output", False) for up in self.ups)
        # Training may run the recursion twice to save memory only if every op is a pure function
        # of its input and parameters (no running statistics, no randomness): see _recurse.
        self._recompute = all(getattr(op, "recomputable", False) for op in self._ops())
        if recompute not in (None, True, False):
            raise TypeError(f"{owner}: recompute must be None, True or False, got {recompute!r}")
        self.recompute = recompute

    def _ops(self) -> list[nn.Module]:
        downs = [] if self.down is None else [self.down]
        return [*downs, *(self.downs or []), *self.ups, *self.convs]

    def down_op(self, level: int) -> nn.Module:
        """The down op that makes level ``level`` (1..``self.level``) from the level above."""
        # Without per-level downs the shared one exists (built whenever level > 0).
        return cast(nn.Module, self.down) if self.downs is None else self.downs[level - 1]

    def level_sizes(self, input_size: Sequence[int]) -> list[tuple[int, ...]]:
        """Spatial size of every level, from the input (level 0) to the coarsest: ``ceil(size / factor)``."""
        sizes = [tuple(input_size)]
        for _ in range(self.level):
            sizes.append(tuple(-(-s // f) for s, f in zip(sizes[-1], self.factor)))
        return sizes

    def flops(self, input_size: Sequence[int], output_size: Sequence[int] | None = None) -> int:
        """FLOPs of one forward pass on one sample of spatial size ``input_size``, as
        ``FlopCounterMode`` counts them: the sum of what every op reports (op protocol)."""
        sizes = self.level_sizes(input_size)
        total = 0
        for i in range(1, self.level + 1):
            total += ask(self.down_op(i), "flops", self._label)(sizes[i - 1], sizes[i])
            total += ask(self.ups[self.level - i], "flops", self._label)(sizes[i], sizes[i - 1])
        for conv, size in zip(self.convs, reversed(sizes)):
            total += ask(conv, "flops", self._label)(size, size)
        return total

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        """Input indices along ``axis`` that outputs ``lo..hi`` may depend on (inclusive, clipped
        to the input), walking the recursion back through what every op reports."""
        sizes = [s[axis] for s in self.level_sizes([input_size] * self.spatial_dims)]

        def through(op: nn.Module, lo: int, hi: int, source: int, target: int) -> Window:
            lo, hi = ask(op, "input_window", self._label)(axis, lo, hi, sizes[source], sizes[target], exact)
            return max(lo, 0), min(hi, sizes[source] - 1)

        # Level 0 reads convs[-1]'s window of x; level i adds the path up from the coarse conv.
        lo, hi = through(self.convs[-1], lo, hi, 0, 0)
        first, last = lo, hi
        for level in range(1, self.level + 1):
            a, b = through(self.ups[self.level - level], lo, hi, level, level - 1)
            lo, hi = through(self.convs[self.level - level], a, b, level, level)
            a, b = lo, hi
            for coarse in range(level, 0, -1):
                a, b = through(self.down_op(coarse), a, b, coarse - 1, coarse)
            first, last = min(first, a), max(last, b)
        return first, last

    def init_state(
        self,
        batch_size: int,
        size: Sequence[int] = (),
        *,
        fixed_shape: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """The state of a new stream for :meth:`step`: a flat dict of tensors, keyed
        ``"<op>.<name>"`` with ``<op>`` one of ``downs.i`` (one per level, also when the down op
        is shared), ``ups.i`` and ``convs.i``.

        Args:
            batch_size: Streams run side by side.
            size: Sizes of the spatial axes other than the causal one, in order (``()`` in 1D).
            fixed_shape: Make a state whose tensors keep their shapes from step to step, plus a
                ``"clock"`` (the stream's position in the cycle of its strides): :meth:`step` then
                runs every level on every sample and keeps what each level's phase allows, so a
                compiled or exported step is one graph for every step of a chunk length (even a
                single sample). Eager steps of such a state are slower; the default state keeps
                only what the stream needs and skips the levels that get no sample.
            device: Where the state lives (default: the parameters').
            dtype: State dtype (default: the parameters').

        Raises:
            ValueError: If the layer is not causal or ``size`` has the wrong length.
        """
        axis = self._streaming_axis("init_state")
        check_int(batch_size, "batch_size", self._label, minimum=1)
        if len(size) != self.spatial_dims - 1:
            raise ValueError(
                f"{self._label}: init_state needs the sizes of the {self.spatial_dims - 1} spatial axes "
                f"other than the causal axis {axis}, got size={tuple(size)}"
            )
        reference = next(self.parameters(), None)
        device = device if device is not None or reference is None else reference.device
        dtype = dtype if dtype is not None or reference is None else reference.dtype
        sizes = self.level_sizes((*size[:axis], 0, *size[axis:]))  # no samples yet
        state = {"clock": torch.zeros((), dtype=torch.int64, device=device)} if fixed_shape else {}
        for name, op, source, target in self._streamed_ops():
            shapes = (
                (batch_size, self.in_channels, *sizes[source]),
                (batch_size, self.in_channels, *sizes[target]),
            )
            init = ask(op, "init_fixed_state" if fixed_shape else "init_state", self._label)
            own = init(*shapes, device=device, dtype=dtype)
            state.update({f"{name}.{key}": value for key, value in own.items()})
        return state

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Stream the next chunk ``x`` (``(N, C, *spatial)``, any length >= 1 along the causal axis).

        Returns the output for exactly these samples and the next state; concatenating the
        outputs of any chunking along the causal axis gives ``forward`` of the whole stream. No
        output waits for later input, so there is nothing to flush: the stream may end after any
        step. ``state`` is not changed, so it can be reused to branch or retry. A state from
        ``init_state(..., fixed_shape=True)`` is streamed one sample at a time into tensors of
        fixed shapes (see :meth:`init_state`).

        Example:
            >>> import torch
            >>> from recconv import RecConv1d
            >>> layer = RecConv1d(4, kernel_size=3, level=3, causal=True)
            >>> x = torch.randn(2, 4, 50)
            >>> state = layer.init_state(2)
            >>> outs = []
            >>> for chunk in x.split([7, 1, 30, 12], dim=2):
            ...     out, state = layer.step(chunk, state)
            ...     outs.append(out)
            >>> torch.allclose(torch.cat(outs, 2), layer(x), atol=1e-6)
            True

        Raises:
            ValueError: If the layer is not causal, ``x`` has the wrong shape, or ``state`` is not
                one of this layer's states for this batch size and size (see :meth:`init_state`).
        """
        axis = self._streaming_axis("step")
        keys = self._check_step(x, state, axis)
        if "clock" in state:
            out, new_state = self._fixed_step(x, state, keys, axis)
        else:
            out, new_state = self._chunk_step(x, state, keys, axis)
        return out, self._as_last_state(x, state, new_state, keys)

    def step_sample(
        self, x: Tensor, arrived: Tensor, state: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Stream one sample ``x`` with a fixed-shape state (see :meth:`init_state`), taken only if
        ``arrived`` (a boolean tensor). Returns the output sample (meaningful only if ``x`` arrived),
        ``arrived`` (the layer keeps its input's rate) and the next state, which equals ``state`` if
        nothing arrived. :class:`~recconv.Streamer` runs a layer behind a strided stage this way on
        every sample, so that one graph serves every step.

        Raises:
            ValueError: As :meth:`step`, and if ``x`` is not one sample long or ``state`` not fixed-shape.
        """
        axis = self._streaming_axis("step_sample")
        keys = self._check_step(x, state, axis)
        if "clock" not in state or x.shape[axis + 2] != 1:
            raise ValueError(
                f"{self._label}: step_sample() takes one sample along the causal axis {axis} and a state from "
                f"init_state(..., fixed_shape=True), got a chunk of shape {tuple(x.shape)} and "
                f"{'a fixed-shape' if 'clock' in state else 'a default'} state"
            )
        out, new_state = self._sample(x, arrived, state, keys, axis)
        return out, arrived, self._as_last_state(x, state, new_state, keys)

    def _as_last_state(
        self, x: Tensor, state: dict[str, Tensor], new_state: dict[str, Tensor], keys: OpStateKeys
    ) -> dict[str, Tensor]:
        """``new_state`` in the caller's order (stable export outputs), remembered as the layer's last."""
        new_state = {key: new_state[key] for key in state}
        if not torch.compiler.is_compiling():  # a traced state must not outlive its trace
            _LAST_STATES[self] = (x.shape, new_state, tuple(new_state), tuple(new_state.values()), keys)
        return new_state

    def _chunk_step(
        self, x: Tensor, state: dict[str, Tensor], keys: OpStateKeys, axis: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """:meth:`step` of a default state: each op gets the samples new at its level, if any."""
        new_state: dict[str, Tensor] = {}

        def run(name: str, op: nn.Module, *args: object) -> Tensor:
            own_keys = keys[name]
            out, own = ask(op, "step", self._label)(*args, {short: state[key] for key, short in own_keys})
            for key, short in own_keys:
                new_state[key] = own[short]
            return out

        def keep(name: str) -> None:  # an op with no new sample and none due: its step would change nothing
            for key, _ in keys[name]:
                new_state[key] = state[key]

        # The new samples of each level, down to the first level that has none (a strided down op
        # gets a sample from a short chunk only every so often): the ops below it are skipped.
        dim = axis + 2
        features = [x]
        while len(features) <= self.level and features[-1].shape[dim]:
            i = len(features)
            features.append(run(f"downs.{i - 1}", self.down_op(i), features[-1]))
        for i in range(len(features), self.level + 1):
            keep(f"downs.{i - 1}")
        hidden = None
        for j, (conv, up) in enumerate(zip(self.convs, self.ups)):
            level = self.level - j
            if level >= len(features):  # no new sample at the level above either
                keep(f"convs.{j}")
                keep(f"ups.{j}")
                continue
            coarse = features[level]
            if coarse.shape[dim]:
                mixed = run(f"convs.{j}", conv, coarse if hidden is None else hidden + coarse)
            else:
                keep(f"convs.{j}")
                mixed = coarse
            hidden = run(f"ups.{j}", up, mixed, features[level - 1].shape[2:])
        out = run(f"convs.{self.level}", self.convs[-1], x if hidden is None else hidden + x)
        return out, new_state

    def _fixed_step(
        self, x: Tensor, state: dict[str, Tensor], keys: OpStateKeys, axis: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """:meth:`step` of a fixed-shape state: sample by sample."""
        dim = axis + 2
        outs = []
        for t in range(x.shape[dim]):
            out, state = self._sample(x.narrow(dim, t, 1), None, state, keys, axis)
            outs.append(out)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim), state

    def _sample(
        self, sample: Tensor, arrived: Tensor | None, state: dict[str, Tensor], keys: OpStateKeys, axis: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One sample through a fixed-shape state, taken only if ``arrived`` (``None``: surely). Every
        op runs; those of a level that gets no sample leave their state as it was, and their outputs
        are not used."""
        new_state = dict(state)

        def run(name: str, op: nn.Module, *args: object) -> Tensor:
            own_keys = keys[name]
            out, own = ask(op, "fixed_step", self._label)(
                *args, {short: new_state[key] for key, short in own_keys}
            )
            for key, short in own_keys:
                new_state[key] = own[short]
            return out

        factor = self.factor[axis]
        clock = state["clock"]  # samples taken, modulo factor**level
        # Level i gets a sample at every factor**i-th (its down op's window ends there).
        due = [clock % factor**i == 0 for i in range(self.level + 1)]
        if arrived is not None:
            due = [arrived & level_due for level_due in due]
        features = [sample]
        for i in range(1, self.level + 1):
            features.append(run(f"downs.{i - 1}", self.down_op(i), features[-1], due[i - 1]))
        hidden = None
        for j, (conv, up) in enumerate(zip(self.convs, self.ups)):
            level = self.level - j
            coarse = features[level]
            mixed = run(f"convs.{j}", conv, coarse if hidden is None else hidden + coarse, due[level])
            position = clock // factor ** (level - 1) % factor  # of the fine sample in its block
            hidden = run(f"ups.{j}", up, mixed, features[level - 1].shape[2:], due[level], position)
        mixed = sample if hidden is None else hidden + sample
        out = run(f"convs.{self.level}", self.convs[-1], mixed, due[0])
        new_state["clock"] = (clock + (1 if arrived is None else arrived)) % factor**self.level
        return out, new_state

    def _streamed_ops(self) -> list[tuple[str, nn.Module, int, int]]:
        """Every op run by :meth:`step`: state name, op, and its input and output level."""
        downs = [(f"downs.{i - 1}", self.down_op(i), i - 1, i) for i in range(1, self.level + 1)]
        ups = [(f"ups.{j}", up, self.level - j, self.level - j - 1) for j, up in enumerate(self.ups)]
        convs = [(f"convs.{j}", conv, self.level - j, self.level - j) for j, conv in enumerate(self.convs)]
        return downs + ups + convs

    def _streaming_axis(self, method: str) -> int:
        if self.causal_axis is None:
            raise ValueError(
                f"{self._label}: {method}() streams along the causal axis, but this layer is not causal; "
                f"build it with causal=True (or causal=<index of the time axis>)"
            )
        return self.causal_axis

    def _check_step(self, x: Tensor, state: dict[str, Tensor], axis: int) -> OpStateKeys:
        """Refuse a chunk or state that does not fit; return each op's state keys, full and its own."""
        dims = self.spatial_dims
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{self._label}: step() expects a floating-point tensor, got {type(x).__name__}")
        if x.dim() != dims + 2 or x.shape[1] != self.in_channels or x.shape[axis + 2] < 1:
            raise ValueError(
                f"{self._label}: step() expects a chunk (N, {self.in_channels}, {LAYOUTS[dims - 1]}) with "
                f">= 1 sample along the causal axis {axis}, got {tuple(x.shape)}"
            )
        if not isinstance(state, dict):
            raise TypeError(
                f"{self._label}: the state must be the dict from init_state() or step(), got {type(state).__name__}"
            )
        keys = self._last_state_keys(x, state, axis)
        if keys is not None:  # checked when it was made: a stream's usual next step
            return keys
        other = tuple(s for i, s in enumerate(x.shape[2:]) if i != axis)
        fixed = "clock" in state
        expected = self._state_shapes(x.shape[0], other, axis, fixed)
        if state.keys() != expected.keys():
            raise ValueError(
                f"{self._label}: this state belongs to another layer: expected keys {sorted(expected)}, "
                f"got {sorted(state)}; start a stream with init_state()"
            )
        for key, want in expected.items():
            have = state[key]
            if not isinstance(have, Tensor):
                raise TypeError(f"{self._label}: state[{key!r}] must be a tensor, got {type(have).__name__}")
            shape = tuple(have.shape)
            if len(shape) >= 3 and not fixed:
                shape = with_length(shape, axis + 2, -1)
            if shape != want:
                shown = ", ".join("T" if size == -1 else str(size) for size in want)
                anywhere = "" if fixed else f" (T: any length at dim {axis + 2})"
                raise ValueError(
                    f"{self._label}: state[{key!r}] has shape {tuple(have.shape)}, expected ({shown}){anywhere} "
                    f"for a chunk of shape {tuple(x.shape)}: a state from another layer, batch size or input "
                    f"size; start a stream with init_state({x.shape[0]}, {tuple(other)}"
                    f"{', fixed_shape=True' if fixed else ''})"
                )
        return self._state_keys(expected, fixed)

    def _last_state_keys(self, x: Tensor, state: dict[str, Tensor], axis: int) -> OpStateKeys | None:
        """The ops' keys if ``state`` is the one the last step returned, unchanged, for a chunk of
        ``x``'s shape (any length along the causal axis), else ``None``. Its tensors are kept, so their
        ids cannot be reused."""
        if torch.compiler.is_compiling():  # first: a traced read of the dict would guard on its contents
            return None
        last = _LAST_STATES.get(self)
        if last is None:
            return None
        shape, last_state, keys, values, op_keys = last
        dim = axis + 2
        unchanged = (
            state is last_state
            and shape[:dim] == x.shape[:dim]
            and shape[dim + 1 :] == x.shape[dim + 1 :]
            and tuple(state) == keys
            and all(map(operator.is_, state.values(), values))
        )
        return op_keys if unchanged else None

    def _state_shapes(
        self, batch_size: int, other: tuple[int, ...], axis: int, fixed: bool
    ) -> dict[str, tuple[int, ...]]:
        """The shape of each state tensor for this batch and these other sizes, in a default state
        ``-1`` along the causal axis (its length depends on where the stream is)."""

        def work_out() -> dict[str, tuple[int, ...]]:
            state = self.init_state(batch_size, other, fixed_shape=fixed, device="meta")
            return {
                key: with_length(value.shape, axis + 2, -1)
                if value.dim() >= 3 and not fixed
                else tuple(value.shape)
                for key, value in state.items()
            }

        return self._remembered("_known_state_shapes", (batch_size, other, fixed), work_out)

    def _state_keys(self, shapes: dict[str, tuple[int, ...]], fixed: bool) -> OpStateKeys:
        """For each op of :meth:`step`, its keys in the layer's state and in its own."""

        def work_out() -> OpStateKeys:
            return {
                name: [(key, key[len(name) + 1 :]) for key in shapes if key.startswith(f"{name}.")]
                for name, *_ in self._streamed_ops()
            }

        return self._remembered("_op_state_keys", fixed, work_out)

    def _remembered(self, cache: str, key: object, work_out: Callable[[], _T]) -> _T:
        """``work_out()``, remembered per ``key`` in eager mode. Traced code works it out afresh: a
        traced read of the cache would guard on its contents, and each new entry would recompile."""
        if torch.compiler.is_compiling():
            return work_out()
        known = self.__dict__.setdefault(cache, {})
        if key not in known:
            known[key] = work_out()
        return known[key]

    def _causal_axis(self, causal: bool | int, owner: str) -> int | None:
        if isinstance(causal, bool):
            return 0 if causal else None
        if not isinstance(causal, int):
            raise TypeError(f"{owner}: causal must be a bool or a spatial axis index, got {causal!r}")
        if not -self.spatial_dims <= causal < self.spatial_dims:
            raise ValueError(
                f"{owner}: causal axis must be in [{-self.spatial_dims}, {self.spatial_dims - 1}] "
                f"(spatial axes, batch and channel excluded), got {causal}"
            )
        return causal % self.spatial_dims

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer to ``(N, C, *spatial)`` or unbatched ``(C, *spatial)`` input."""
        dtype = next((p.dtype for p in self.parameters()), None)
        work = _working_layout(x, self._label, self.in_channels, self.spatial_dims, self._liftable, dtype)
        if _recomputes(self, work):
            # Keep only the input for backward and run the recursion again there: see _recurse.
            out = checkpoint(_recurse, self, work, use_reentrant=False, preserve_rng_state=False)
        else:
            out = _recurse(self, work)
        return _caller_layout(out, x, self.spatial_dims, self._liftable)

    def _add(self, upsampled: Tensor, features: Tensor) -> Tensor:
        """``features + upsampled``, written into ``upsampled`` where that is safe: one full-size
        buffer less per level, which on the CPU saves its allocation (page faults) and a pass.
        A forward hook on a built-in up op therefore sees its output before the sum only if it
        copies it."""
        return _sum(upsampled, features, self._sum_in_place)

    def extra_repr(self) -> str:
        k = self.kernel_size
        args = [
            str(self.in_channels),
            f"kernel_size={k[0] if len(set(k)) == 1 else k}",
            f"level={self.level}",
        ]
        f = self.factor
        options = {
            "bias": (self.has_bias, False),
            "upsample": (self.upsample, "linear"),
            "downsample": (self.downsample, "conv"),
            "factor": (f[0] if len(set(f)) == 1 else f, 2),
            "shared_down": (self.shared_down, True),
            "conv": (self.conv_op, "depthwise"),
            "coarse": (self.coarse_op, None),
            "causal": (self.causal_axis, None),
            "recompute": (self.recompute, None),
        }
        for name, (value, default) in options.items():
            if value != default:
                # Only the op options hold a name or a builder; the others are numbers and flags.
                shown = _name_of(value) if isinstance(value, str) or callable(value) else value
                args.append(f"{name}={shown}")
        return ", ".join(args)


# torch.fx's symbolic tracer (not torch.export or torch.compile, which recompute fine); newer torch
# names it is_fx_symbolic_tracing and warns on every use of the older is_fx_tracing.
_symbolic_tracing = getattr(_symbolic_trace, "is_fx_symbolic_tracing", None) or _symbolic_trace.is_fx_tracing


def _recomputes(layer: RecConvNd, work: Tensor) -> bool:
    """Whether this forward on ``work`` (the input in the layout it runs in) keeps only its input and
    recomputes in backward (see :func:`_recurse`)."""
    if not (layer._recompute and layer.training and torch.is_grad_enabled()) or _symbolic_tracing():
        return False
    if torch.compiler.is_compiling():
        if torch.compiler.is_exporting() or layer.recompute is False:
            return False
        # By default, store where the convs run as recconv's op (ops._conv), which keeps their layout.
        return layer.recompute is True or not convs_run_as_op(work)
    # torch.func's transforms (grad, vjp, jacrev) refuse the saved-tensor hooks that checkpointing uses.
    return layer.recompute is True and torch._C._functorch.peek_interpreter_stack() is None


def _recurse(layer: RecConvNd, x: Tensor) -> Tensor:
    """The recursion of ``layer`` on a batched input already in the layout it runs in.

    In training, :meth:`RecConvNd.forward` runs this under activation checkpointing: autograd keeps
    only ``x`` (which a single base conv keeps too) and the backward pass runs the recursion again
    to rebuild the sums ``f_i + up(h)`` and the coarse tensors, instead of storing them all (2.65x
    one base conv's saved memory for a 2D layer at level 3). The forward is cheap next to the
    backward, so a training step costs little more. Under ``torch.compile`` the recomputed convs
    also sit in the backward graph, which makes Inductor choose channels-last there too where they
    do not run as recconv's own op (see docs/performance.md).
    """
    label = layer._label
    features = [x]
    for i in range(1, layer.level + 1):
        down = layer.down_op(i)
        features.append(
            _checked(down(features[-1]), features[-1], layer.factor, "downsample", _name(down), label)
        )
    hidden = None
    for conv, up, coarse, fine in zip(
        layer.convs, layer.ups, reversed(features[1:]), reversed(features[:-1])
    ):
        mixed = coarse if hidden is None else layer._add(hidden, coarse)
        mixed = _checked(conv(mixed), mixed, None, "conv", _name(conv), label)
        hidden = _checked(up(mixed, fine.shape[2:]), fine, None, "upsample", _name(up), label)
    last = layer.convs[-1]
    mixed = x if hidden is None else layer._add(hidden, x)
    return _checked(last(mixed), mixed, None, "conv", _name(last), label)


class RecConv1d(RecConvNd):
    """RecConv over sequences: input ``(N, C, L)`` or ``(C, L)``, output of the same shape.

    Example:
        >>> import torch
        >>> from recconv import RecConv1d
        >>> layer = RecConv1d(16, kernel_size=5, level=3)
        >>> layer(torch.randn(2, 16, 100)).shape
        torch.Size([2, 16, 100])
        >>> sum(p.numel() for p in layer.parameters()) == (3 + 2) * 16 * 5
        True
    """

    spatial_dims = 1


class RecConv2d(RecConvNd):
    """RecConv over images: input ``(N, C, H, W)`` or ``(C, H, W)``, output of the same shape.

    The default layer is the paper's: state_dict keys ``down.weight`` and ``convs.{0..level}.weight``.

    Example:
        >>> import torch
        >>> from recconv import RecConv2d
        >>> layer = RecConv2d(64, kernel_size=5, level=3)
        >>> layer(torch.randn(1, 64, 56, 56)).shape
        torch.Size([1, 64, 56, 56])
        >>> sorted(layer.state_dict())
        ['convs.0.weight', 'convs.1.weight', 'convs.2.weight', 'convs.3.weight', 'down.weight']
    """

    spatial_dims = 2


class RecConv3d(RecConvNd):
    """RecConv over volumes or video: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Example:
        >>> import torch
        >>> from recconv import RecConv3d
        >>> layer = RecConv3d(8, kernel_size=3, level=2, factor=(1, 2, 2), causal=True)
        >>> layer(torch.randn(1, 8, 16, 32, 32)).shape
        torch.Size([1, 8, 16, 32, 32])
    """

    spatial_dims = 3


RECCONV: tuple[type[RecConvNd], ...] = (RecConv1d, RecConv2d, RecConv3d)
"""The RecConv class of each rank, 1 to 3 (pick with ``recconv._util.per_rank``)."""


# The shape-dependent steps of the forward pass, which torch.fx records as single calls
# (torch.fx.wrap): symbolic tracing sees through every layer, and the traced graph still checks
# its input at run time.


def _working_layout(
    x: Tensor, label: str, channels: int, spatial_dims: int, liftable: bool, dtype: torch.dtype | None
) -> Tensor:
    """Check the input and bring it into the layout the recursion runs in.

    The input's dtype must be the parameters' (``dtype``), as for ``nn.ConvNd``, except under
    autocast, where the ops choose their dtypes.

    On the CPU, depthwise convs (their weight gradients most of all) and interpolation run several
    times faster on channels-last tensors, which a 1D input reaches as (N, C, 1, L): recurse in
    that layout, answer in the caller's (see :func:`_caller_layout`). Same ops, same math, up to
    float rounding.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{label}: expected a tensor, got {type(x).__name__}")
    layout = LAYOUTS[spatial_dims - 1]
    if x.dim() not in (spatial_dims + 1, spatial_dims + 2) or x.shape[-spatial_dims - 1] != channels:
        raise ValueError(
            f"{label}: expected (N, {channels}, {layout}) or ({channels}, {layout}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{label}: expected a floating-point input, got {x.dtype}")
    device = x.device.type
    autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
    if dtype is not None and x.dtype != dtype and not autocast:
        raise TypeError(
            f"{label}: expected a {dtype} input (the dtype of its parameters), got {x.dtype}; convert "
            f"one to the other (x.to({dtype}) or layer.to({x.dtype})) or run under torch.autocast"
        )
    if min(x.shape[-spatial_dims:]) < 1:
        raise ValueError(f"{label}: spatial sizes must be >= 1, got {tuple(x.shape[-spatial_dims:])}")
    work, memory_format = _layout_of(x, spatial_dims, liftable)
    return work if memory_format is None else work.contiguous(memory_format=memory_format)


def _caller_layout(out: Tensor, x: Tensor, spatial_dims: int, liftable: bool) -> Tensor:
    """The output in the shape and memory layout of the caller's input ``x``."""
    work, memory_format = _layout_of(x, spatial_dims, liftable)
    if work.dim() > x.dim() + (x.dim() == spatial_dims + 1):  # lifted
        out = out.squeeze(2)
    if memory_format is not None:
        out = out.contiguous()
    return out.squeeze(0) if x.dim() == spatial_dims + 1 else out


def _layout_of(x: Tensor, spatial_dims: int, liftable: bool) -> tuple[Tensor, torch.memory_format | None]:
    """``x`` batched (and lifted, for a 1D layer on the CPU), and the memory format to convert it to
    (``None`` if it already has it or none applies)."""
    work = x.unsqueeze(0) if x.dim() == spatial_dims + 1 else x
    on_cpu = x.device.type == "cpu"
    if on_cpu and spatial_dims == 1 and liftable:
        work = work.unsqueeze(2)
    memory_format = CHANNELS_LAST.get(work.dim()) if on_cpu else None
    if memory_format is not None and work.is_contiguous(memory_format=memory_format):
        memory_format = None
    return work, memory_format


def _name(op: nn.Module) -> str:
    return type(op).__name__


def _checked(
    out: Tensor, reference: Tensor, factor: tuple[int, ...] | None, role: str, op_name: str, label: str
) -> Tensor:
    """``out`` if its shape is what the op protocol asks of a ``role`` op: ``reference``'s, or for a
    down op ``reference``'s spatial sizes divided by ``factor``, rounded up (checked in eager mode;
    compiled and exported graphs trust the ops)."""
    if torch.compiler.is_compiling():
        return out
    expected = tuple(reference.shape)
    if factor is not None:
        lift = reference.dim() - 2 - len(factor)  # a 1D layer running lifted to (N, C, 1, L)
        sizes = expected[2 + lift :]
        expected = expected[: 2 + lift] + tuple(-(-s // f) for s, f in zip(sizes, factor))
    if not isinstance(out, Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{label}: the {role} op {op_name} returned {got}, but the op protocol asks for "
            f"{expected} (see recconv.ops)"
        )
    return out


def _sum(upsampled: Tensor, features: Tensor, in_place: bool) -> Tensor:
    # Not into a view (a crop) that autograd records: it would copy the whole base in backward
    # (CopySlices). Compiled graphs are functional, and Dynamo cannot ask.
    recorded_view = torch.is_grad_enabled() and not torch.compiler.is_compiling() and upsampled._is_view()
    if in_place and upsampled.dtype == features.dtype and not recorded_view:
        return upsampled.add_(features)
    return features + upsampled


for _function in ("_working_layout", "_caller_layout", "_checked", "_sum"):
    torch.fx.wrap(_function)
