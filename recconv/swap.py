"""Module surgery: RecConv in place of the depthwise convs of a network, or beside its dense convs.

:func:`swap` walks a model through its child modules and, for every conv it meets, either
changes it or says in its :class:`~recconv.swap_report.SwapReport` why not:

* a depthwise ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` that RecConv can stand in for becomes
  a :class:`~recconv.RecConv1d`/:class:`~recconv.RecConv2d`/:class:`~recconv.RecConv3d`:
  ``groups == in_channels == out_channels``, stride 1, dilation 1, an odd kernel and zero
  padding that keeps the size (``k // 2`` or ``"same"``). A RecConv returns its input size,
  looks at a dense window and pads with zeros, so other convs would change the network's
  shapes or its function. Among those, 1x1 kernels (no spatial mixing to enlarge),
  single-channel convs (as dense as depthwise) and subclasses of ``nn.ConvNd`` (whose
  ``forward`` may differ) are left alone unless a predicate selects them;
* with ``dense="branch"``, a conv that is not depthwise becomes a :class:`~recconv.branch.RecBranch`,
  ``conv(x + rec(x))``, whose RecConv ``rec`` starts with a zero output. By default only
  stride-1 convs with a kernel larger than 1x1 get one; a predicate can select the others.

:func:`swapped` does the same for the duration of a ``with`` block. :mod:`recconv.swap_plan`
decides what changes and why, without changing anything; this module builds every new layer
and only then puts them in place, so an error leaves the model as it was.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import EllipsisType
from typing import Any, TypeGuard, cast

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from ._util import CHANNELS_LAST, CONV_FN, check_int, count_flops, is_int, look_up, num_params, per_rank
from .branch import RecBranch
from .core import RECCONV, RecConvNd
from .ops import DepthwiseConv, OpProtocolError
from .swap_plan import ConvNd, Predicate, Target, describe, plan
from .swap_report import SwappedLayer, SwapReport
from .theory import conv_flops, receptive_field

# swap sets these per replaced conv; every other keyword-only RecConvNd option passes through,
# except the conv ops: the inits and the cost report assume RecConv's depthwise convs.
_PER_LAYER = ("bias", "device", "dtype")
_CONV_OPS = ("conv", "coarse")
_OPTIONS = tuple(
    name
    for name, p in inspect.signature(RecConvNd.__init__).parameters.items()
    if p.kind is p.KEYWORD_ONLY and name not in _PER_LAYER + _CONV_OPS
)
_DENSE = ("branch",)
# The theory helpers raise ops.OpProtocolError (a TypeError) for an op that cannot answer;
# before the op protocol lands they raise ValueError.


def _preserve(old: ConvNd, layer: RecConvNd) -> None:
    """Old kernel centered in ``convs[-1]``; ``convs[-2]`` zero, so the coarse path adds nothing yet."""
    with torch.no_grad():
        final = layer.convs[-1]
        weight = final.get_parameter("weight")
        weight.zero_()
        window: tuple[EllipsisType | slice, ...] = (
            ...,
            *(slice((n - o) // 2, (n + o) // 2) for n, o in zip(layer.kernel_size, old.kernel_size)),
        )
        weight[window] = old.weight
        if old.bias is not None:
            final.get_parameter("bias").copy_(old.bias)
        if layer.level > 0:
            layer.convs[-2].get_parameter("weight").zero_()


def _random(old: ConvNd, layer: RecConvNd) -> None:
    """Default initialization; the bias that replaces the old one is drawn as ``nn.ConvNd`` draws it."""
    # swap leaves the conv ops at their default, "depthwise"; a ModuleList types its items as Module
    cast(DepthwiseConv, layer.convs[-1]).reset_parameters()


_INITS: dict[str, Callable[[ConvNd, RecConvNd], None]] = {"preserve": _preserve, "random": _random}


def _memory_format(weight: Tensor) -> torch.memory_format:
    """channels_last when the old weight has its strides (a depthwise weight is contiguous either way)."""
    fmt = CHANNELS_LAST.get(weight.dim())
    if fmt is None:
        return torch.contiguous_format
    channels_last = torch.empty(weight.shape, device="meta", memory_format=fmt).stride()
    contiguous = torch.empty(weight.shape, device="meta").stride()
    return fmt if weight.stride() == channels_last != contiguous else torch.contiguous_format


def _build(
    owner: str, target: Target, level: int, init: str, options: dict[str, Any]
) -> RecConvNd | RecBranch:
    """The module that takes the target's place; the model is not touched."""
    old = target.conv
    weight = old.weight
    moved_bias = old.bias if target.change == "replaced" else None
    layer_class = per_rank(RECCONV, len(old.kernel_size), owner)
    try:
        layer = layer_class(
            old.in_channels, target.kernel, level, device=weight.device, dtype=weight.dtype, **options
        )
    except (TypeError, ValueError) as error:
        raise type(error)(f"{owner} at {target.name!r}: {error}") from error
    if moved_bias is not None:  # the bias moves to the full-resolution conv, the layer's last op
        layer.convs[-1].bias = nn.Parameter(torch.empty_like(moved_bias))
    if target.change == "replaced":
        _INITS[init](old, layer)
    elif init == "preserve":  # a zero last conv: the branch adds nothing yet, and learns from step one
        with torch.no_grad():
            layer.convs[-1].get_parameter("weight").zero_()
    layer.to(memory_format=_memory_format(weight))
    layer.requires_grad_(weight.requires_grad)
    if moved_bias is not None:
        layer.convs[-1].get_parameter("bias").requires_grad_(moved_bias.requires_grad)
    layer.train(old.training)
    return layer if target.change == "replaced" else RecBranch(old, layer).train(old.training)


def _is_sequence(value: object) -> TypeGuard[Sequence[Any]]:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _check_arguments(
    owner: str,
    model: nn.Module,
    level: int,
    kernel_size: int | Sequence[int] | None,
    init: str,
    dense: str | None,
    predicate: Predicate | None,
    input_size: Sequence[int] | None,
    options: dict[str, Any],
) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{owner}: model must be an nn.Module, got {type(model).__name__}")
    check_int(level, "level", owner, minimum=0)
    if kernel_size is not None:
        sizes: tuple[Any, ...] = tuple(kernel_size) if _is_sequence(kernel_size) else (kernel_size,)
        if not all(is_int(k) for k in sizes):
            raise TypeError(
                f"{owner}: kernel_size must be None, an int or a tuple of ints, got {kernel_size!r}"
            )
        if any(k < 1 or k % 2 == 0 for k in sizes):
            raise ValueError(f"{owner}: kernel_size must be odd and positive, got {kernel_size!r}")
    look_up(init, _INITS, what="init", owner=owner)
    if dense is not None:
        look_up(dense, _DENSE, what="dense", owner=owner)
    if predicate is not None and not callable(predicate):
        raise TypeError(f"{owner}: predicate must be a callable (name, module) -> bool, got {predicate!r}")
    if input_size is not None and (
        not _is_sequence(input_size) or not all(is_int(s) and s > 0 for s in input_size)
    ):
        raise ValueError(
            f"{owner}: input_size must be the shape of one input sample without the batch axis, "
            f"as positive ints like (3, 224, 224), got {input_size!r}"
        )
    fixed = sorted(set(options) & set(_PER_LAYER))
    if fixed:
        raise TypeError(
            f"{owner}: {', '.join(fixed)} cannot be passed: device and dtype follow each replaced "
            "conv, and its bias (if any) moves to the RecConv's full-resolution conv convs[-1]"
        )
    for name in options:
        try:
            look_up(name, _OPTIONS, what="RecConv option", owner=owner)
        except ValueError as error:  # an unknown keyword argument, as Python reports it
            raise TypeError(str(error)) from None


def _run_once(model: nn.Module, input_size: tuple[int, ...], targets: list[Target], owner: str) -> int:
    """Record each target's spatial input size over one eval-mode forward pass; return the model's FLOPs."""
    tensor = next(model.parameters(), None)
    device = tensor.device if tensor is not None else None
    dtype = tensor.dtype if tensor is not None and tensor.is_floating_point() else None
    hooks = [
        t.conv.register_forward_pre_hook(
            lambda _, args, t=t: t.sizes.append(tuple(args[0].shape[-len(t.kernel) :]))
        )
        for t in targets
    ]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    x = torch.zeros(1, *input_size, device=device, dtype=dtype)
    try:
        with torch.no_grad():
            return count_flops(lambda: model(x))
    except Exception as error:
        raise ValueError(
            f"{owner}: the model failed on an input of shape {(1, *input_size)} "
            f"(input_size={input_size}): {error}"
        ) from error
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training


def _count_params(module: nn.Module) -> int:
    """:func:`num_params`, leaving out uninitialized lazy parameters, which have no size yet."""
    return sum(p.numel() for p in module.parameters() if not is_lazy(p))


def _answer(question: Callable[..., Any], layer: nn.Module, *args: Any) -> Any:
    """A theory helper's answer about ``layer``, or ``None`` where its ops cannot answer."""
    try:
        return question(layer, *args)
    except OpProtocolError:
        return None


def _conv_cost(conv: ConvNd, size: tuple[int, ...]) -> int:
    """FLOPs of one call of ``conv`` on a batch of one of this spatial size, counted on the meta device."""
    x = torch.empty(1, conv.in_channels, *size, device="meta")
    weight = torch.empty(conv.weight.shape, device="meta")
    run = per_rank(CONV_FN, len(size))
    return count_flops(lambda: run(x, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups))


def _row(target: Target, new: RecConvNd | RecBranch, input_size: tuple[int, ...] | None) -> SwappedLayer:
    conv = target.conv
    layer = new if isinstance(new, RecConvNd) else new.rec
    if input_size is None:
        # Sizes divisible by factor**level give RecConv's exact average cost per position.
        size = tuple(f**layer.level for f in layer.factor)
        old_flops: float = 2 * conv.out_channels * math.prod(conv.weight.shape[1:])
        rec_flops = _answer(conv_flops, layer, size)
        rec_flops = None if rec_flops is None else rec_flops / math.prod(size)
    else:
        old_flops = sum(_conv_cost(conv, s) for s in target.sizes)
        costs = [_answer(conv_flops, layer, s) for s in target.sizes]
        rec_flops = None if None in costs else sum(costs)
    old_field = tuple(d * (k - 1) + 1 for d, k in zip(conv.dilation, conv.kernel_size))
    if target.change == "replaced":
        new_flops, new_field = rec_flops, _answer(receptive_field, layer)
    else:
        new_flops = None if rec_flops is None else old_flops + rec_flops
        new_field = _answer(receptive_field, new)  # composed through the branch's spatial path
    return SwappedLayer(
        name=target.name,
        change=target.change,
        channels=conv.in_channels,
        old_kernel=tuple(conv.kernel_size),
        new_kernel=target.kernel,
        old_receptive_field=old_field,
        receptive_field=new_field,
        old_params=num_params(conv),
        new_params=num_params(new),
        old_flops=old_flops,
        new_flops=new_flops,
    )


@dataclass
class _Surgery:
    """Everything planned and built: committing it only assigns modules."""

    model: nn.Module
    report: SwapReport
    changes: list[tuple[Target, RecConvNd | RecBranch]]

    def commit(self, done: list[tuple[nn.Module, str, nn.Module]]) -> nn.Module:
        """Put every new module in place, recording each assignment in ``done``; return the model."""
        result = self.model
        for target, new in self.changes:
            for parent, attr in target.slots:
                setattr(parent, attr, new)
                done.append((parent, attr, target.conv))
            if not target.slots:
                result = new
        self.report.params_after = _count_params(result)
        return result


def _undo(done: list[tuple[nn.Module, str, nn.Module]]) -> None:
    for parent, attr, old in reversed(done):
        setattr(parent, attr, old)
    done.clear()


def _prepare(
    owner: str,
    model: nn.Module,
    *,
    level: int,
    kernel_size: int | Sequence[int] | None,
    init: str,
    dense: str | None,
    predicate: Predicate | None,
    input_size: Sequence[int] | None,
    options: dict[str, Any],
    allow_root: bool,
) -> _Surgery:
    """Plan and build everything (the model is not changed) and fill in the report."""
    size = None if input_size is None else tuple(input_size)
    targets, skipped = plan(owner, model, kernel_size, init, dense, predicate, options)
    if not allow_root and any(not t.slots for t in targets):
        raise ValueError(
            f"{owner}: the model itself is a conv ({describe(model)}) and cannot be swapped in "
            "place; use recconv.swap, which returns the replacement"
        )
    report = SwapReport(level, init, size, dense=dense, skipped=skipped, params_before=_count_params(model))
    if size is not None:
        report.flops_before = _run_once(model, size, targets, owner)
    changes = [(target, _build(owner, target, level, init, options)) for target in targets]
    report.swapped = [_row(target, new, size) for target, new in changes]
    flops = report.swapped_flops
    if report.flops_before is not None and flops is not None:
        report.flops_after = report.flops_before - int(flops[0]) + int(flops[1])
    return _Surgery(model, report, changes)


def swap(
    model: nn.Module,
    *,
    level: int,
    kernel_size: int | Sequence[int] | None = None,
    init: str = "preserve",
    dense: str | None = None,
    predicate: Predicate | None = None,
    inplace: bool = False,
    input_size: Sequence[int] | None = None,
    **recconv_options: Any,
) -> tuple[nn.Module, SwapReport]:
    """Replace the depthwise convs of ``model`` by RecConv layers, and optionally widen its dense convs.

    Every ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` with ``groups == in_channels ==
    out_channels > 1``, stride 1, dilation 1, an odd kernel larger than 1x1 and zero padding
    that keeps the size becomes a ``RecConv1d``/``2d``/``3d`` with the same channels. With
    ``dense="branch"`` every other stride-1 conv with a kernel larger than 1x1 becomes a
    :class:`~recconv.branch.RecBranch`, ``conv(x + rec(x))``. Other convs stay, and the report says why (see
    the module docstring), as it does for scripted modules, uninitialized lazy convs,
    transposed convs and, for a RecConv replacement, parametrized (spectral or weight norm)
    convs and convs with tied weights, which a RecConv would drop or untie. Existing RecConv
    and RecBranch layers are left alone and never looked inside. A conv registered under
    several names (twice in one ``Sequential``, or under two attributes) becomes one new
    module everywhere. A model that is itself such a conv is returned replaced.

    ``init="preserve"`` keeps the network's function at swap time. A replacing RecConv holds
    the old kernel centered in its full-resolution conv ``convs[-1]`` (zeros around it) and
    the old bias as ``convs[-1].bias``, and ``convs[-2]``, the coarse conv whose output is
    upsampled and added to the input of ``convs[-1]``, starts at zero, so the coarse path adds
    exactly nothing. A branch's RecConv has a zero ``convs[-1]``, so it outputs zeros and the
    conv sees ``x + 0``. Everything else (the other convs, the down and up ops) keeps its
    default random init. Zeroing only that one conv is deliberate. Every coarser level
    reaches the output through it, so one zero conv suffices. A conv's weight gradient is its
    input times the gradient at its output: the zero conv sees nonzero features, so the first
    optimizer step moves it, and from the second step on everything before it gets gradients
    through it (a "zero convolution" as in ControlNet). Zeroing all coarse convs would keep
    the function too, but each one's output gradient would pass through the zero convs after
    it: ``convs[i]`` would first move at step ``level - i``, with gradients scaled by products
    of the few learning-rate-sized weights before it. Custom up builders must map zeros to
    zeros for ``"preserve"`` to hold, as the built-in ones do. ``init="random"`` draws every
    weight as RecConv does by default (and a replacing bias as ``nn.ConvNd`` draws one).

    The new layers keep the device, dtype, channels_last memory format, ``requires_grad`` and
    training mode of the convs they replace. Forward hooks registered on a replaced conv do
    not move to its RecConv (a branch keeps the conv, hooks included).

    Nothing is changed before every target is planned and its new module built: on any error
    an ``inplace=True`` model is exactly as it was.

    Args:
        model: The network (left untouched unless ``inplace=True``).
        level: RecConv level ``l`` (the effective kernel is ``k * 2**l`` with the default factor).
        kernel_size: Base kernel of every RecConv, an odd int or one per spatial axis; ``None``
            keeps each conv's own kernel.
        init: ``"preserve"`` or ``"random"``.
        dense: ``None`` (dense convs stay) or ``"branch"`` (they get a RecConv branch).
        predicate: ``predicate(name, conv) -> bool`` decides, for every conv swap could change,
            whether to change it: it can leave convs out (narrow) or select 1x1,
            single-channel or subclassed depthwise convs and strided or 1x1 dense convs
            (widen). It is not asked about convs RecConv cannot stand in for (strided,
            dilated or size-changing depthwise convs, ...).
        inplace: Modify ``model`` itself instead of a deep copy.
        input_size: Shape of one input sample without the batch axis, e.g. ``(3, 224, 224)``.
            The model then runs once, in eval mode without gradients, on zeros of that shape
            to count FLOPs per layer and in total; without it FLOPs are per output position.
        **recconv_options: Further RecConv options: ``upsample``, ``downsample``, ``factor``,
            ``shared_down``, ``causal`` (``bias``, ``device`` and ``dtype`` follow each conv).

    Returns:
        The swapped model (``model`` itself if ``inplace``) and a :class:`SwapReport`.

    Raises:
        ValueError: For a level below 0, an even or non-positive kernel, an unknown init or
            dense mode, a bad ``input_size`` or a model that fails on it, ``"preserve"`` with
            a causal RecConv or with a base kernel smaller than a depthwise conv's own kernel,
            an even kernel to branch without ``kernel_size``, or RecConv options a layer
            refuses (naming the conv). Nothing is modified then.
        TypeError: For a model that is not an ``nn.Module`` (or cannot be deep-copied without
            ``inplace=True``), a non-int level, a non-bool ``inplace``, a non-callable
            predicate, a kernel of the wrong type or length, or an unknown or per-layer
            RecConv option.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import recconv
        >>> net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 5, padding=2, groups=16))
        >>> new, report = recconv.swap(net.eval(), level=2)
        >>> type(new[1]).__name__
        'RecConv2d'
        >>> x = torch.randn(1, 3, 32, 32)
        >>> torch.allclose(new(x), net(x), rtol=1e-6, atol=1e-6)
        True
        >>> row = report.swapped[0]
        >>> row.name, row.receptive_field
        ('1', (49, 49))
        >>> report.skipped[0].reason
        "not depthwise (groups=1, in_channels=3, out_channels=16); dense='branch' adds a RecConv before it"
    """
    owner = "recconv.swap"
    _check_arguments(owner, model, level, kernel_size, init, dense, predicate, input_size, recconv_options)
    if not isinstance(inplace, bool):
        raise TypeError(f"{owner}: inplace must be a bool, got {inplace!r}")
    if not inplace:
        try:
            model = copy.deepcopy(model)
        except Exception as error:
            raise TypeError(f"{owner}: cannot deep-copy the model ({error}); pass inplace=True") from error
    surgery = _prepare(
        owner,
        model,
        level=level,
        kernel_size=kernel_size,
        init=init,
        dense=dense,
        predicate=predicate,
        input_size=input_size,
        options=recconv_options,
        allow_root=True,
    )
    done: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        return surgery.commit(done), surgery.report
    except BaseException:
        _undo(done)
        raise


@contextmanager
def swapped(
    model: nn.Module,
    *,
    level: int,
    kernel_size: int | Sequence[int] | None = None,
    init: str = "preserve",
    dense: str | None = None,
    predicate: Predicate | None = None,
    input_size: Sequence[int] | None = None,
    **recconv_options: Any,
) -> Iterator[SwapReport]:
    """Swap RecConv into ``model`` in place for a ``with`` block, then put the original convs back.

    Takes the arguments of :func:`swap` (always in place) and yields its report. Everything is
    checked before the model is touched; on exit, exception or not, every replaced conv object
    is put back where it was, so the model is exactly what it was before (the same module
    objects, with their parameters as they were; an optimizer built inside the block holds
    the RecConv parameters, not these).

    Raises:
        ValueError: As :func:`swap`, and when ``model`` is itself a conv that would be replaced.
        TypeError: As :func:`swap`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import recconv
        >>> net = nn.Sequential(nn.Conv1d(8, 8, 3, padding=1, groups=8))
        >>> conv = net[0]
        >>> with recconv.swapped(net, level=3) as report:
        ...     print(type(net[0]).__name__, len(report.swapped))
        RecConv1d 1
        >>> net[0] is conv
        True
    """
    owner = "recconv.swapped"
    _check_arguments(owner, model, level, kernel_size, init, dense, predicate, input_size, recconv_options)
    surgery = _prepare(
        owner,
        model,
        level=level,
        kernel_size=kernel_size,
        init=init,
        dense=dense,
        predicate=predicate,
        input_size=input_size,
        options=recconv_options,
        allow_root=False,
    )
    done: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        surgery.commit(done)
        yield surgery.report
    finally:
        _undo(done)
