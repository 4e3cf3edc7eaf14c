"""Streaming whole networks chunk by chunk: :class:`Streamer`, :class:`CausalConv`, causal presets,
and a step exported to ONNX (:func:`export_onnx_step`, :class:`OnnxStep`).

A layer streams with :meth:`recconv.RecConvNd.step`; :class:`Streamer` streams a network built
from streamable pieces along one spatial axis (time):

* modules that stream themselves (``init_state(batch_size, size)`` and ``step(x, state)``):
  causal RecConv layers, :class:`CausalConv` (strided stems and transitions), user modules;
* pieces that act on each time step alone: ``nn.ConvNd`` with kernel and stride 1 along time,
  BatchNorm in eval mode, activations, dropout in eval mode, elementwise arithmetic (residuals),
  and means over other axes with ``keepdim=True`` (pooling per time step).

Anything else (a centered conv along time, a norm in training mode, pooling over time) is
refused when the :class:`Streamer` is built, naming the first module that cannot stream. The
network is read with ``torch.fx``, so its ``forward`` must be traceable.
"""

from __future__ import annotations

import math
import operator
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ._util import BATCH_NORM, CONV, as_tuple, per_rank
from .core import RecConvNd
from .models.blocks import RecNeXtBlock
from .models.recnext import RecNeXtStage, _fuse_children
from .models.registry import create_model
from .ops import (
    ONE_GRAPH_CONV,
    ConvNorm,
    Window,
    conv_window,
    fold_batch_norm,
    no_samples,
    pad_before,
    shift_in,
    stream_window,
    torch_conv_window,
    window_tail,
    with_length,
)

__all__ = [
    "CausalConv",
    "CausalConvNorm",
    "CausalRecNeXt",
    "LayerStep",
    "OnnxStep",
    "Streamer",
    "export_onnx_step",
    "recnext_audio_causal_tiny",
    "recnext_seq_causal_tiny",
]


_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Identity,
)
_POINTWISE_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
    torch.add,
    torch.sub,
    torch.mul,
    F.relu,
    F.gelu,
    F.silu,
    F.hardswish,
    torch.sigmoid,
    torch.tanh,
}
_POINTWISE_METHODS = {"add", "sub", "mul", "div", "neg", "relu", "sigmoid", "tanh", "contiguous"}
_REDUCTIONS = {"mean", "sum", "amax"}


class CausalConv(nn.Module):
    """An ``nn.ConvNd`` (``conv``) padded only before its start along ``causal_axis``: strided
    causal stems and transitions. Other axes are padded ``k // 2`` per side.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel per axis (an int or one per axis).
        stride: Stride per axis; along the causal axis the output has ``ceil(size / stride)`` samples.
        causal_axis: The spatial axis (time) along which no output reads later inputs.
        groups: Convolution groups.
        bias: Learn a bias.
        spatial_dims: 1, 2 or 3.
        device: Where to create the parameters.
        dtype: Parameter dtype.

    Example:
        >>> import torch
        >>> conv = CausalConv(1, 8, 3, stride=(2, 2), causal_axis=1, spatial_dims=2)
        >>> conv(torch.randn(1, 1, 40, 101)).shape
        torch.Size([1, 8, 20, 51])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        *,
        causal_axis: int,
        groups: int = 1,
        bias: bool = True,
        spatial_dims: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kernel = as_tuple(kernel_size, spatial_dims, "kernel_size", "CausalConv", minimum=1)
        if not 0 <= causal_axis < spatial_dims:
            raise ValueError(f"CausalConv: causal_axis must be in [0, {spatial_dims - 1}], got {causal_axis}")
        self.causal_axis = causal_axis
        padding = tuple(0 if axis == causal_axis else k // 2 for axis, k in enumerate(kernel))
        conv_class: Callable[..., nn.modules.conv._ConvNd] = per_rank(ONE_GRAPH_CONV, spatial_dims)
        self.conv = conv_class(
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            groups=groups,
            bias=bias,
            device=device,
            dtype=dtype,
        )

    def forward(self, x: Tensor) -> Tensor:
        axis = self.causal_axis
        return self.conv(pad_before(x, axis, self.conv.kernel_size[axis] - 1))

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        """Input indices along ``axis`` that outputs ``lo..hi`` read (op protocol)."""
        if axis != self.causal_axis:
            return torch_conv_window(self.conv, axis, lo, hi)
        kernel = self.conv.kernel_size[axis]
        return conv_window(lo, hi, kernel, self.conv.stride[axis], kernel - 1)

    def init_state(
        self,
        batch_size: int,
        size: Sequence[int] = (),
        *,
        fixed_shape: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """The zero padding before the stream; ``size``: the input's other spatial sizes. A fixed-shape
        state (for :meth:`step_sample`) keeps the last ``kernel - 1`` inputs and a clock of the stride."""
        axis, weight = self.causal_axis, self.conv.weight
        kernel, stride = self.conv.kernel_size[axis], self.conv.stride[axis]
        shape = (batch_size, self.conv.in_channels, *size[:axis], 0, *size[axis:])
        tail = window_tail(
            shape,
            axis,
            kernel,
            stride,
            fixed_shape,
            device=device or weight.device,
            dtype=dtype or weight.dtype,
        )
        state = {"tail": tail}
        if fixed_shape:
            state["clock"] = torch.zeros((), dtype=torch.int64, device=device or weight.device)
        return state

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The outputs that the new samples ``x`` complete, and the next state."""
        if "clock" in state:
            raise ValueError(
                "CausalConv: a fixed-shape state streams with step_sample(), one sample at a time"
            )
        axis, conv = self.causal_axis, self.conv
        window, count, tail = stream_window(state["tail"], x, axis, conv.kernel_size[axis], conv.stride[axis])
        if not count:
            empty = no_samples(x, axis, conv.stride)
            return empty.new_zeros(empty.shape[0], conv.out_channels, *empty.shape[2:]), {"tail": tail}
        return conv(window), {"tail": tail}

    def step_sample(
        self, x: Tensor, arrived: Tensor, state: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One input sample ``x``, taken only if ``arrived``: the output of the window ending at it,
        whether that output is due (a new one every ``stride`` inputs taken), and the next state."""
        axis, stride = self.causal_axis, self.conv.stride[self.causal_axis]
        window, tail = shift_in(state["tail"], x, arrived, axis + 2)
        clock = state["clock"]  # inputs taken, modulo the stride
        due = arrived & (clock % stride == 0)  # output j's window ends at input j * stride
        return self.conv(window), due, {"tail": tail, "clock": (clock + arrived) % stride}

    def extra_repr(self) -> str:
        return f"causal_axis={self.causal_axis}"


StepSample = Callable[[Tensor, Tensor, dict[str, Tensor]], tuple[Tensor, Tensor, dict[str, Tensor]]]
"""``module.step_sample(x, arrived, state)``: one sample of a fixed-shape stream (see :class:`Streamer`)."""


class _Tracer(fx.Tracer):
    """Keeps modules that stream themselves whole (their forward may check shapes), and the library's
    ``nn.ConvNd`` subclasses, which stream as the convs they are."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        leaf = _streams_itself(module) or isinstance(module, ONE_GRAPH_CONV)
        return leaf or super().is_leaf_module(module, qualified_name)


def _streams_itself(module: nn.Module) -> bool:
    return callable(getattr(module, "init_state", None)) and callable(getattr(module, "step", None))


class Streamer(nn.Module):
    """Streams ``model`` chunk by chunk along spatial ``axis``: ``out, state = streamer(chunk, state)``.

    Concatenating the outputs of any chunking along ``axis`` equals ``model`` on the whole
    stream (the model must be causal along it). ``state`` is a flat dict of tensors keyed
    ``"<module>.<name>"``, never changed in place; as for a layer, nothing waits for later input,
    so there is nothing to flush. A strided stage may get no new sample from a short chunk; its
    output for that chunk is then empty along ``axis``.

    Args:
        model: The network; its ``forward`` must be traceable by ``torch.fx``.
        axis: The spatial axis to stream along (default: that of the first causal layer).

    Raises:
        ValueError: Naming the first module or operation that cannot stream, and why.

    Example:
        >>> import torch
        >>> from recconv import RecConv1d
        >>> model = torch.nn.Sequential(RecConv1d(4, level=2, causal=True), torch.nn.GELU()).eval()
        >>> streamer = Streamer(model)
        >>> x = torch.randn(1, 4, 30)
        >>> state = streamer.init_state(1)
        >>> outs = []
        >>> for chunk in x.split([3, 1, 26], dim=2):
        ...     out, state = streamer(chunk, state)
        ...     outs.append(out)
        >>> torch.allclose(torch.cat(outs, 2), model(x), atol=1e-6)
        True
    """

    def __init__(self, model: nn.Module, axis: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # so that exporting a streamer of a model in eval mode does not warn
        self.graph = _Tracer().trace(model)
        self.axis = self._find_axis() if axis is None else axis
        for node in self.graph.nodes:
            self._check(node)
        # Looked up once, not on every step: each module called, and whether it streams itself. Keyed
        # by node name, which a copy of the streamer (and of its graph) keeps.
        self._called = {
            node.name: self.model.get_submodule(cast(str, node.target))  # a call_module target is a name
            for node in self.graph.nodes
            if node.op == "call_module"
        }
        self._self_streaming = {name for name, module in self._called.items() if _streams_itself(module)}
        # Set by init_state, for the batch and sizes it was given: what a chunk must be, each
        # module's state keys (full key, the module's own key) and its output for a chunk with
        # no new sample along time.
        self._chunk_shape: tuple[int, ...] = ()
        self._state_keys: frozenset[str] = frozenset()
        self._own_keys: dict[str, list[tuple[str, str]]] = {}
        self._no_output: dict[str, Tensor] = {}
        self._fixed = False  # whether the state is fixed-shape (see init_state)
        self._program: Callable[[Tensor, dict[str, Tensor], dict[str, Tensor]], Tensor]  # see _make_program
        # With a fixed-shape state: the shape and dtype of each node's output for one sample, and the
        # program for exported graphs (see _make_gated_program).
        self._sample_outputs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self._gated_program: Callable[[Tensor, dict[str, Tensor], dict[str, Tensor]], Tensor]

    def _find_axis(self) -> int:
        for module in self.model.modules():
            if _streams_itself(module) and (causal := getattr(module, "causal_axis", None)) is not None:
                return causal
        raise ValueError(f"Streamer: {type(self.model).__name__} has no causal layer; pass axis=")

    def _refuse(self, node: fx.Node, what: str, why: str) -> ValueError:
        return ValueError(f"Streamer: cannot stream {node.target!r} ({what}): {why}")

    def _check(self, node: fx.Node) -> None:
        dim = self.axis + 2
        if node.op == "call_module":
            module = self.model.get_submodule(cast(str, node.target))  # a call_module target is a name
            what = type(module).__name__
            if _streams_itself(module):
                causal = getattr(module, "causal_axis", self.axis)
                if causal != self.axis:
                    raise self._refuse(
                        node, what, f"it is not causal along spatial axis {self.axis} (causal={causal})"
                    )
            elif isinstance(module, CONV):
                axis = self.axis
                if (module.kernel_size[axis], module.stride[axis], module.padding[axis]) != (1, 1, 0):
                    raise self._refuse(
                        node,
                        what,
                        f"it mixes along spatial axis {axis} (kernel {module.kernel_size[axis]}, stride "
                        f"{module.stride[axis]}, padding {module.padding[axis]}); use CausalConv",
                    )
            elif isinstance(module, nn.modules.batchnorm._BatchNorm | nn.Dropout) and module.training:
                raise self._refuse(node, what, "it is in training mode; call model.eval() first")
            elif not isinstance(module, _ACTIVATIONS + (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
                raise self._refuse(node, what, "it is neither causal nor applied to each time step alone")
        elif node.op == "call_function" and node.target not in _POINTWISE_FUNCTIONS:
            raise self._refuse(node, "function", "only elementwise functions stream")
        elif node.op == "call_method" and node.target in _REDUCTIONS:
            dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            dims = (dims,) if isinstance(dims, int) else dims
            if (
                not isinstance(dims, Sequence)
                or not node.kwargs.get("keepdim", False)
                or any(d in (dim, -1) for d in dims)
            ):
                raise self._refuse(
                    node,
                    "method",
                    f"a reduction must name its dims, keep them, and leave dim {dim} (time) alone",
                )
        elif node.op == "call_method" and node.target not in _POINTWISE_METHODS | _REDUCTIONS:
            raise self._refuse(node, "method", "only elementwise methods and per-step reductions stream")

    def init_state(
        self,
        batch_size: int,
        size: Sequence[int] = (),
        *,
        in_channels: int | None = None,
        fixed_shape: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """The state of a new stream of ``batch_size`` inputs whose other spatial sizes are ``size``.

        ``in_channels`` defaults to that of the model's first layer with an ``in_channels``. With
        ``fixed_shape``, every module that streams itself gets a fixed-shape state and runs on every
        input sample through ``step_sample(x, arrived, state)`` (strided stages say whether their
        output is new, and the modules after them take it only then), so one compiled or exported
        graph serves every step of a chunk length. The output then has one sample per input sample:
        the model's latest output, held in the state (key ``"output"``) between new ones; a new one
        comes at every input sample ``t`` with ``t % stride == 0`` (``stride``: the product of the
        strides along the axis, counting ``t`` from the stream's start).
        """
        if in_channels is None:
            # nn.Module's stubs type an unknown attribute as Tensor | Module
            in_channels = next(
                cast(int, m.in_channels) for m in self.model.modules() if hasattr(m, "in_channels")
            )
        reference = next(self.model.parameters())
        device = reference.device if device is None else device
        dtype = reference.dtype if dtype is None else dtype
        # One step on a zero chunk shows each module the input size it will see.
        chunk = torch.zeros(
            (batch_size, in_channels, *size[: self.axis], 1, *size[self.axis :]), device=device, dtype=dtype
        )
        state: dict[str, Tensor] = {}
        self._fixed = fixed_shape
        out = self._run(chunk, state, (device, dtype))
        if fixed_shape:
            if not isinstance(out, Tensor):
                raise ValueError(
                    f"Streamer: a fixed-shape state holds the model's output, which must be one tensor, "
                    f"got {type(out).__name__}"
                )
            state["output"] = torch.zeros_like(out)  # nothing came out yet
        self._program = self._make_program()
        if fixed_shape:
            self._gated_program = self._make_gated_program()
        self._chunk_shape = with_length(chunk.shape, self.axis + 2, -1)
        self._state_keys = frozenset(state)
        return state

    def forward(self, chunk: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Stream the next chunk: its output and the next state."""
        expected = self._chunk_shape
        if tuple(with_length(chunk.shape, self.axis + 2, -1)) != expected or not chunk.shape[self.axis + 2]:
            layout = ", ".join("T" if size == -1 else str(size) for size in expected)
            raise ValueError(
                f"Streamer: expected a chunk ({layout}) with T >= 1, as set by the last init_state(), "
                f"got {tuple(chunk.shape)}"
            )
        if not isinstance(state, dict) or state.keys() != self._state_keys:
            raise ValueError(
                "Streamer: this state belongs to another model: expected the dict from init_state() or a "
                f"step, with keys {sorted(self._state_keys)}"
            )
        if not self._fixed:
            new_state: dict[str, Tensor] = {}
            return self._program(chunk, state, new_state), new_state
        dim, outs = self.axis + 2, []
        program = self._gated_program if torch.compiler.is_exporting() else self._program
        for t in range(chunk.shape[dim]):  # the program takes one sample (see init_state)
            new_state = {}
            outs.append(program(chunk.narrow(dim, t, 1), state, new_state))
            state = new_state
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim), state

    step = forward

    def __getstate__(self) -> dict[str, Any]:
        # The program's functions hold this streamer's modules: a copy makes its own from its copies.
        return {
            key: value for key, value in self.__dict__.items() if key not in ("_program", "_gated_program")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if self._own_keys:  # init_state has run
            self._program = self._make_program()
            if self._fixed:
                self._gated_program = self._make_gated_program()

    def _make_program(self) -> Callable[[Tensor, dict[str, Tensor], dict[str, Tensor]], Tensor]:
        """The graph as straight-line Python: ``program(chunk, state, new_state)`` returns the output
        and fills ``new_state``. Each module call is bound once to its step, state keys and output
        for no new sample, and ``torch.fx`` writes the code, so that a chunk runs without
        interpreting the graph: on small chunks the interpretation took a large part of a step. With
        a fixed-shape state the program takes one sample, and next to each value it carries whether
        that value is a new sample, from the ``step_sample`` of the strided stages before it."""
        graph = fx.Graph()
        chunk, state, new_state = (graph.placeholder(name) for name in ("chunk", "state", "new_state"))
        values: dict[fx.Node, fx.Node] = {}
        # With a fixed-shape state: whether each value is a new sample, from the strided stages before it.
        arrived: dict[fx.Node, fx.Node] = {}
        for node in self.graph.nodes:
            if node.op == "placeholder":
                values[node] = chunk
                if self._fixed:
                    arrived[node] = graph.call_function(_true_like, (chunk,))
            elif node.op == "output":
                out = fx.node.map_arg(node.args[0], values.__getitem__)
                if self._fixed:  # a Tensor, checked by init_state
                    out = graph.call_function(
                        _hold, (out, arrived[cast(fx.Node, node.args[0])], state, new_state)
                    )
                graph.output(out)
            elif node.op == "get_attr":
                values[node] = graph.call_function(_constant(_fetch(self.model, cast(str, node.target))))
            elif node.op in ("call_function", "call_method"):
                values[node] = graph.node_copy(node, values.__getitem__)
            elif node.name in self._self_streaming and self._fixed:
                module, keys = self._called[node.name], self._own_keys[node.name]
                source = cast(fx.Node, node.args[0])
                sampled = graph.create_node(
                    "call_function",
                    _sampled(cast(StepSample, module.step_sample), keys),
                    (values[source], arrived[source], state, new_state),
                    name=node.name,
                )
                values[node] = graph.call_function(operator.getitem, (sampled, 0))
                arrived[node] = graph.call_function(operator.getitem, (sampled, 1))
            else:
                args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
                module, no_output = self._called[node.name], self._no_output[node.name]
                if node.name in self._self_streaming:
                    step = cast(Callable[..., tuple[Tensor, dict[str, Tensor]]], module.step)
                    work = _streamed(step, self._own_keys[node.name], no_output, self.axis + 2)
                    args, kwargs = (args[0], state, new_state), {}
                else:
                    work = _per_step(module, no_output, self.axis + 2)
                values[node] = graph.create_node("call_function", work, args, kwargs, name=node.name)
            flags = [arrived[source] for source in node.all_input_nodes if source in arrived]
            if flags and node not in arrived:  # an op on samples: new where its first streamed input is
                arrived[node] = flags[0]
        return fx.GraphModule(nn.Module(), graph, class_name="StreamingStep").forward

    def _make_gated_program(self) -> Callable[[Tensor, dict[str, Tensor], dict[str, Tensor]], Tensor]:
        """The program of a fixed-shape state for exported graphs: the nodes each module that streams
        itself gates (those that take its output, up to the next such module) run under one
        ``torch.cond`` on whether its output is new (an ONNX ``If``), so an exported step runs each
        strided stage only on its samples instead of on every input sample. The other branch gives
        zeros, a false flag and the unchanged states. Compiled and eager streams keep the flat program:
        Inductor mislays the strides of tensors passed into cond subgraphs (torch 2.14)."""
        nodes = [node for node in self.graph.nodes if node.op not in ("placeholder", "get_attr", "output")]
        position = {node: i for i, node in enumerate(self.graph.nodes)}
        gate: dict[fx.Node, fx.Node | None] = {}  # the module whose new output a node waits for
        flag: dict[fx.Node, fx.Node | None] = {}  # whose new output says a node's output is new
        for node in nodes:
            flags = [flag[source] for source in node.all_input_nodes if flag.get(source) is not None]
            # The latest: a residual sum joins the segment of its branch, which is nested in its own.
            gate[node] = max(flags, key=position.__getitem__) if flags else None
            flag[node] = node if node.name in self._self_streaming else gate[node]
        segments: dict[fx.Node | None, list[fx.Node]] = {None: []}
        for node in sorted(nodes, key=lambda node: position[gate[node]] if gate[node] else -1):
            segments.setdefault(gate[node], []).append(node)
        final = cast(fx.Node, next(iter(reversed(self.graph.nodes))).args[0])
        steps = [self._segment(members, final) for members in segments.values()]
        gate_names = [None if key is None else key.name for key in segments]
        final_flag = flag[final]

        def gated(chunk: Tensor, state: dict[str, Tensor], new_state: dict[str, Tensor]) -> Tensor:
            values: dict[str, Tensor] = {"": chunk}  # the placeholder's value, by a name no node has
            flags: dict[str, Tensor] = {}
            collected: dict[str, Tensor] = {}
            for name, step in zip(gate_names, steps):
                step(values, flags, state, collected, None if name is None else flags[name])
            out = values[final.name]
            new = _true_like(out) if final_flag is None else flags[final_flag.name]
            held = _hold(out, new, state, collected)
            new_state.update((key, collected[key]) for key in state)
            return held

        return gated

    def _segment(self, members: list[fx.Node], final: fx.Node) -> Callable[..., None]:
        """One segment of the gated program: runs ``members`` (under ``torch.cond`` on ``gate`` unless
        it is ``None``), reading earlier values and filling in its outputs, flags and states."""
        inside = set(members)
        inputs = list(
            dict.fromkeys(
                _value_name(source)
                for m in members
                for source in m.all_input_nodes
                if source not in inside and source.op != "get_attr"
            )
        )
        outputs = [m.name for m in members if m is final or any(u not in inside for u in m.users)]
        streaming = [m.name for m in members if m.name in self._self_streaming]
        keys = [key for name in streaming for key, _ in self._own_keys[name]]
        calls = [self._call_of(m) for m in members]
        empty = [self._sample_outputs[name] for name in outputs]  # the outputs' shapes and dtypes

        def take(*operands: Tensor) -> tuple[Tensor, ...]:
            values = dict(zip(inputs, operands))
            state = dict(zip(keys, operands[len(inputs) :]))
            flags: dict[str, Tensor] = {}
            new_state: dict[str, Tensor] = {}
            for name, call in zip((m.name for m in members), calls):
                values[name] = call(values, flags, state, new_state)
            return (
                *(values[name].contiguous() for name in outputs),
                *(flags[name] for name in streaming),
                *(new_state[key].contiguous() for key in keys),
            )

        def skip(*operands: Tensor) -> tuple[Tensor, ...]:
            no = torch.zeros((), dtype=torch.bool, device=operands[0].device)
            return (
                *(torch.zeros(shape, dtype=dtype, device=no.device) for shape, dtype in empty),
                *(no for _ in streaming),
                *(t.clone(memory_format=torch.contiguous_format) for t in operands[len(inputs) :]),
            )

        def segment(
            values: dict[str, Tensor],
            flags: dict[str, Tensor],
            state: dict[str, Tensor],
            collected: dict[str, Tensor],
            gate: Tensor | None,
        ) -> None:
            operands = (*(values[name] for name in inputs), *(state[key] for key in keys))
            results = take(*operands) if gate is None else torch.cond(gate, take, skip, operands)
            values.update(zip(outputs, results))
            flags.update(zip(streaming, results[len(outputs) :]))
            collected.update(zip(keys, results[len(outputs) + len(streaming) :]))

        return segment

    def _call_of(self, node: fx.Node) -> Callable[..., Tensor]:
        """``node`` as a call on the values computed so far, for a segment of the gated program; a
        module that streams itself takes a new sample, records its flag and fills in its state."""
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda source: cast(Any, _Value(source)))
        if node.op == "call_module" and node.name in self._self_streaming:
            step_sample = cast(StepSample, self._called[node.name].step_sample)
            sample, name = _sampled(step_sample, self._own_keys[node.name]), node.name

            def sampled(values: dict, flags: dict, state: dict, new_state: dict) -> Tensor:
                x = _resolve(args, values, self.model)[0]
                out, flags[name] = sample(x, _true_like(x), state, new_state)
                return out

            return sampled
        if node.op == "call_module":
            target: Callable[..., Tensor] = self._called[node.name]
        elif node.op == "call_method":
            method = cast(str, node.target)
            target = lambda x, *rest, **options: getattr(x, method)(*rest, **options)  # noqa: E731
        else:
            target = cast(Callable[..., Tensor], node.target)

        def called(values: dict, flags: dict, state: dict, new_state: dict) -> Tensor:
            return target(*_resolve(args, values, self.model), **_resolve(kwargs, values, self.model))

        return called

    def _run(self, chunk: Tensor, new_state: dict[str, Tensor], init: tuple[Any, torch.dtype]) -> Tensor:
        """The first chunk of a new stream, interpreting the graph: learns each module's state keys
        and its output for a chunk that gives it no new sample."""
        values: dict[fx.Node, Any] = {}
        for node in self.graph.nodes:
            if node.op == "placeholder":
                values[node] = chunk
                continue
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
            if node.op == "output":
                return args[0]
            if node.op == "get_attr":
                out = _fetch(self.model, node.target)
            elif node.op == "call_function":
                out = node.target(*args, **kwargs)
            elif node.op == "call_method":
                out = getattr(args[0], node.target)(*args[1:], **kwargs)
            else:
                out = self._first_call(node, args, kwargs, new_state, init)
            values[node] = out
            if self._fixed and isinstance(out, Tensor):
                self._sample_outputs[node.name] = (tuple(out.shape), out.dtype)
        raise AssertionError("unreachable: an fx graph ends with its output node")

    def _first_call(
        self,
        node: fx.Node,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        new_state: dict[str, Tensor],
        init: tuple[Any, torch.dtype],
    ) -> Tensor:
        """A module's output for the first chunk from a new state, learning its state keys and output shape."""
        module, x = self._called[node.name], args[0]
        if node.name in self._self_streaming:
            other = [s for i, s in enumerate(x.shape[2:]) if i != self.axis]
            # nn.Module's stubs type an unknown attribute as Tensor | Module
            init_state = cast(Callable[..., dict[str, Tensor]], module.init_state)
            if self._fixed and not callable(getattr(module, "step_sample", None)):
                raise self._refuse(
                    node,
                    type(module).__name__,
                    "it has no step_sample(x, arrived, state) for a fixed-shape state",
                )
            fixed = {"fixed_shape": True} if self._fixed else {}
            own = init_state(x.shape[0], other, **fixed, device=init[0], dtype=init[1])
            self._own_keys[node.name] = [(f"{node.target}.{name}", name) for name in own]
            new_state.update({f"{node.target}.{name}": value for name, value in own.items()})
            if self._fixed:
                out, _, _ = cast(StepSample, module.step_sample)(x, _true_like(x), own)
            else:
                step = cast(Callable[..., tuple[Tensor, dict[str, Tensor]]], module.step)
                out, _ = step(x, own)
        else:
            out = module(*args, **kwargs)
        self._no_output[node.name] = out.new_zeros(with_length(out.shape, self.axis + 2, 0))
        return out


class _Value:
    """A reference to a node's value in a segment of the gated program (see ``Streamer._call_of``): a
    value computed before it, or a model attribute, fetched where it is used so that an exported
    branch reads the model's parameter rather than a copy."""

    def __init__(self, node: fx.Node) -> None:
        self.name = _value_name(node)
        self.attribute = cast(str, node.target) if node.op == "get_attr" else None


def _value_name(node: fx.Node) -> str:
    """The key of ``node``'s value in the gated program: its name, or ``""`` for the chunk."""
    return "" if node.op == "placeholder" else node.name


def _resolve(args: Any, values: dict[str, Tensor], model: nn.Module) -> Any:
    """``args`` with each :class:`_Value` replaced by its value (or ``model``'s attribute)."""
    if isinstance(args, _Value):
        return values[args.name] if args.attribute is None else _fetch(model, args.attribute)
    if isinstance(args, tuple | list):
        return type(args)(_resolve(arg, values, model) for arg in args)
    if isinstance(args, dict):
        return {key: _resolve(value, values, model) for key, value in args.items()}
    return args


def _fetch(model: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(model.get_submodule(owner), name)


def _constant(value: Any) -> Callable[[], Any]:
    def constant() -> Any:
        return value

    return constant


def _streamed(
    step: Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]],
    keys: list[tuple[str, str]],
    no_output: Tensor,
    dim: int,
) -> Callable[[Tensor, dict[str, Tensor], dict[str, Tensor]], Tensor]:
    """A module that streams itself, as a step of a program: its keys (full, its own) of the state."""

    def streamed(x: Tensor, state: dict[str, Tensor], new_state: dict[str, Tensor]) -> Tensor:
        if not x.shape[dim]:  # a strided stage before it gave no new sample: nothing changes
            for key, _ in keys:
                new_state[key] = state[key]
            return no_output
        out, own = step(x, {name: state[key] for key, name in keys})
        for key, name in keys:
            new_state[key] = own[name]
        return out

    return streamed


def _sampled(
    step_sample: StepSample, keys: list[tuple[str, str]]
) -> Callable[[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]], tuple[Tensor, Tensor]]:
    """A module that streams itself, as a step of a program on a fixed-shape state: one sample, taken
    only if it ``arrived``; returns the output and whether it is new."""

    def sampled(
        x: Tensor, arrived: Tensor, state: dict[str, Tensor], new_state: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        out, new, own = step_sample(x, arrived, {name: state[key] for key, name in keys})
        for key, name in keys:
            new_state[key] = own[name]
        return out, new

    return sampled


def _true_like(x: Tensor) -> Tensor:
    """A boolean ``True`` on ``x``'s device: the input's samples are all new."""
    return torch.ones((), dtype=torch.bool, device=x.device)


def _hold(out: Tensor, arrived: Tensor, state: dict[str, Tensor], new_state: dict[str, Tensor]) -> Tensor:
    """The model's latest output: ``out`` if it is new, else the one held in the state."""
    held = torch.where(arrived, out, state["output"])
    new_state["output"] = held
    return held


def _per_step(module: nn.Module, no_output: Tensor, dim: int) -> Callable[..., Tensor]:
    """A module applied to each time step alone, as a step of a program: skipped on no new sample."""

    def per_step(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return module(x, *args, **kwargs) if x.shape[dim] else no_output

    return per_step


class LayerStep(nn.Module):
    """``layer.step`` as a module's ``forward(chunk, state)``: the form ``torch.export.export`` and
    ``torch.onnx.export`` take. A :class:`Streamer` is already one."""

    def __init__(self, layer: nn.Module) -> None:
        if not callable(getattr(layer, "step", None)):
            raise TypeError(f"LayerStep: {type(layer).__name__} has no step(chunk, state)")
        super().__init__()
        self.layer = layer
        self.training = layer.training  # so that exporting a layer in eval mode does not warn

    def forward(self, chunk: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return cast(Callable[..., tuple[Tensor, dict[str, Tensor]]], self.layer.step)(chunk, state)


def export_onnx_step(
    module: nn.Module, chunk: Tensor, state: dict[str, Tensor], path: str | os.PathLike[str]
) -> None:
    """Export one streaming step of ``module`` (a :class:`Streamer`, or a layer with
    ``step(chunk, state)``) to one ONNX file at ``path``, its weights inside.

    The file's inputs are ``chunk`` and ``state.<key>``, its outputs ``output`` and
    ``next_state.<key>``, for every key of ``state``: feed each ``next_state.<key>`` back as
    ``state.<key>`` (:class:`OnnxStep` does). The graph keeps the shapes of ``chunk`` and ``state``,
    so the state must keep its shapes from step to step: a fixed-shape state
    (``init_state(..., fixed_shape=True)``) for any chunk length, or the default state for a chunk
    length that is a multiple of every stride of the stream.

    Raises:
        TypeError: If ``module`` cannot step.
        ValueError: If one step does not return a state with the keys (in order) and shapes of ``state``.
    """
    step = module if isinstance(module, Streamer) else LayerStep(module)
    with torch.no_grad():
        _, next_state = step(chunk, state)
    changed = [key for key in state if key in next_state and next_state[key].shape != state[key].shape]
    if list(next_state) != list(state) or changed:
        raise ValueError(
            f"export_onnx_step: {type(module).__name__}'s state does not keep its shapes for chunks of shape "
            f"{tuple(chunk.shape)} (changed: {changed or 'its keys'}): use init_state(..., fixed_shape=True), "
            "or a chunk length that is a multiple of every stride of the stream"
        )
    keys = list(state)
    torch.onnx.export(
        step,
        (chunk,),
        path,
        kwargs={"state": state},  # a trailing dict in args would be read as keyword arguments
        input_names=["chunk", *(f"state.{key}" for key in keys)],
        output_names=["output", *(f"next_state.{key}" for key in keys)],
        dynamo=True,
        external_data=False,
        verbose=False,
    )


class OnnxStep:
    """A step exported by :func:`export_onnx_step`, run in onnxruntime: ``out, state = step(chunk,
    state)``, tensors in and out as with ``layer.step``, so a stream can go on in either.

    Args:
        path: The ONNX file (or its bytes).
        session_options: onnxruntime's ``SessionOptions`` (threads, spinning, optimization level).
        providers: onnxruntime's execution providers.

    Raises:
        ImportError: Without onnxruntime.
        ValueError: If the file's inputs and outputs are not those :func:`export_onnx_step` writes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | bytes,
        session_options: Any = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        try:
            import onnxruntime
        except ImportError as err:
            raise ImportError("OnnxStep needs onnxruntime: pip install 'recconv[onnx]'") from err
        self.session = onnxruntime.InferenceSession(
            path if isinstance(path, bytes) else os.fspath(path), session_options, providers=list(providers)
        )
        inputs = self._inputs = [node.name for node in self.session.get_inputs()]
        self.keys = [name.removeprefix("state.") for name in inputs[1:]]
        self._outputs = ["output", *(f"next_state.{key}" for key in self.keys)]
        outputs = [node.name for node in self.session.get_outputs()]
        named = inputs[:1] == ["chunk"] and all(name.startswith("state.") for name in inputs[1:])
        if not named or sorted(outputs) != sorted(self._outputs):
            raise ValueError(
                f"OnnxStep: {path if not isinstance(path, bytes) else 'the model'} was not written by "
                f"export_onnx_step: inputs {inputs}, outputs {outputs}"
            )

    def __call__(self, chunk: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Stream the next chunk: its output and the next state (``state`` is not changed)."""
        try:
            arrays = [chunk.numpy(force=True), *(state[key].numpy(force=True) for key in self.keys)]
        except KeyError:
            missing = [key for key in self.keys if key not in state]
            raise ValueError(f"OnnxStep: the state lacks {missing}; expected the keys {self.keys}") from None
        out, *values = self.session.run(self._outputs, dict(zip(self._inputs, arrays)))
        return torch.from_numpy(out), dict(zip(self.keys, map(torch.from_numpy, values)))


class MeanOver(nn.Module):
    """Mean over the given dims, kept as size 1: per-time-step pooling of the other axes."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=self.dims, keepdim=True)

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        """The whole of a pooled axis, the same positions of the others (op protocol)."""
        return (0, input_size - 1) if axis + 2 in self.dims else (lo, hi)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class CausalConvNorm(nn.Sequential):
    """A bias-free 3-wide :class:`CausalConv` (``conv``) then BatchNorm (``norm``): the stems and stage
    transitions of the causal presets.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride per axis (its length is the rank).
        causal_axis: The spatial axis (time) along which no output reads later inputs.
        groups: Convolution groups.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: tuple[int, ...], causal_axis: int, groups: int = 1
    ) -> None:
        dims = len(stride)
        conv = CausalConv(
            in_channels,
            out_channels,
            3,
            stride,
            causal_axis=causal_axis,
            groups=groups,
            bias=False,
            spatial_dims=dims,
        )
        super().__init__(OrderedDict(conv=conv, norm=per_rank(BATCH_NORM, dims)(out_channels)))

    @torch.no_grad()
    def fuse(self) -> CausalConv:
        """The conv, given a bias and rescaled in place, computing ``norm(conv(x))`` with the running
        statistics."""
        causal, norm = cast(CausalConv, self.conv), cast(nn.modules.batchnorm._BatchNorm, self.norm)
        weight, bias = fold_batch_norm(causal.conv.weight, causal.conv.bias, norm)
        causal.conv.weight.copy_(weight)
        causal.conv.bias = nn.Parameter(bias)
        return causal


class CausalRecNeXt(nn.Sequential):
    """The network of the causal presets: ``stem``, ``stage0`` .. ``stage3`` and a per-time-step ``head``."""

    @torch.no_grad()
    def fuse(self) -> CausalRecNeXt:
        """Fold every BatchNorm into the conv before it, for inference, as :meth:`RecNeXt.fuse
        <recconv.models.RecNeXt.fuse>` does: the model switches to eval mode and computes the same
        outputs up to float rounding, with fewer ops per streamed chunk.

        Example:
            >>> import torch
            >>> model = recnext_seq_causal_tiny().eval()
            >>> x = torch.randn(1, 1, 320)
            >>> expected = model(x)
            >>> torch.allclose(model.fuse()(x), expected, atol=1e-5)
            True
        """
        self.eval()
        _fuse_children(self)
        return self


def _causal_recnext(name: str, axis: int, num_classes: int, in_chans: int) -> CausalRecNeXt:
    """Model ``name`` of :data:`~recconv.models.PRESETS` made causal along ``axis``.

    Its widths, depths, stem and transition strides and RecConv settings are read from the preset
    (built on the meta device), so the two cannot drift apart. Stem and transitions become causal
    3-wide convs, every RecConv becomes causal, and the head works per time step (mean over the
    other axes, then a 1x1 conv), giving ``(N, classes, ..., T')``."""
    preset = create_model(name, device="meta")
    dims, widths = preset.spatial_dims, preset.widths
    first, second = (module.conv.stride for module in preset.stem.stem if isinstance(module, ConvNorm))
    layers: dict[str, nn.Module] = {
        "stem": nn.Sequential(
            CausalConvNorm(in_chans, widths[0] // 2, first, axis),
            nn.GELU(),
            CausalConvNorm(widths[0] // 2, widths[0], second, axis),
        )
    }
    strides = [info["stride"] for info in preset.feature_info]  # each stage's, from the input
    for i, (width, preset_stage) in enumerate(zip(widths, cast(Sequence[RecNeXtStage], preset.stages))):
        stage: list[nn.Module] = []
        if i:
            stride = tuple(now // before for now, before in zip(strides[i], strides[i - 1]))
            stage.append(
                CausalConvNorm(widths[i - 1], width, stride, axis, groups=math.gcd(widths[i - 1], width))
            )
        for block in cast(Sequence[RecNeXtBlock], preset_stage.blocks):
            recconv = cast(RecConvNd, block.token_mixer)
            mixer = type(recconv)(
                width,
                recconv.kernel_size,
                recconv.level,
                upsample=recconv.upsample,
                downsample=recconv.downsample,
                factor=recconv.factor,
                causal=axis,
            )
            stage.append(
                RecNeXtBlock(
                    width,
                    mixer,
                    norm=True,
                    mlp_ratio=cast(ConvNorm, block.channel_mixer[0]).conv.out_channels / width,
                    act_layer=nn.GELU,
                    drop_path=0.0,
                    spatial_dims=dims,
                )
            )
        layers[f"stage{i}"] = nn.Sequential(*stage)
    others = [d + 2 for d in range(dims) if d != axis]
    layers["head"] = nn.Sequential(
        *([MeanOver(others)] if others else []), per_rank(ONE_GRAPH_CONV, dims)(widths[-1], num_classes, 1)
    )
    return CausalRecNeXt(OrderedDict(layers))


def recnext_audio_causal_tiny(num_classes: int = 12, in_chans: int = 1) -> CausalRecNeXt:
    """``recnext_audio_tiny`` made causal in time, for streaming log-mels ``(N, 1, mels, frames)``.

    Returns per-frame logits ``(N, classes, 1, ceil(frames / 16))``.

    Example:
        >>> import torch
        >>> model = recnext_audio_causal_tiny().eval()
        >>> model(torch.randn(2, 1, 40, 100)).shape
        torch.Size([2, 12, 1, 7])
    """
    return _causal_recnext("recnext_audio_tiny", 1, num_classes, in_chans)


def recnext_seq_causal_tiny(num_classes: int = 10, in_chans: int = 1) -> CausalRecNeXt:
    """``recnext_seq_tiny`` made causal, for streaming sequences ``(N, C, L)``.

    Returns per-step logits ``(N, classes, ceil(L / 32))``.

    Example:
        >>> import torch
        >>> model = recnext_seq_causal_tiny(in_chans=3).eval()
        >>> model(torch.randn(2, 3, 320)).shape
        torch.Size([2, 10, 10])
    """
    return _causal_recnext("recnext_seq_tiny", 0, num_classes, in_chans)
