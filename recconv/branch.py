"""``RecBranch``: a conv that sees its input plus a RecConv of it, as ``recconv.swap(dense="branch")`` builds it."""

from __future__ import annotations

from torch import Tensor, nn

from .core import RecConvNd


class RecBranch(nn.Module):
    """A conv that sees its input plus a RecConv of it: ``conv(x + rec(x))``.

    :func:`recconv.swap` builds one for a dense conv with ``dense="branch"``: ``rec`` is a RecConv on
    the conv's input channels, and with ``init="preserve"`` its last conv ``rec.convs[-1]``
    starts at zero, so ``rec(x) == 0`` and the branch computes exactly what the conv did.
    Fine-tuning then widens the conv's window from ``dilation * (k - 1) + 1`` to the union of
    the RecConv's windows under the conv's taps (:class:`~recconv.swap_report.SwappedLayer`
    reports it).

    Why on the input: ``rec`` keeps the size and the channels, so the conv (its weights,
    stride, padding, groups, parametrizations and hooks) is kept as it is, object included,
    and every output channel of the dense conv mixes the widened context. A residual beside
    the conv, ``conv(x) + rec(x)``, would need ``in_channels == out_channels`` and stride 1,
    or a projection with its own parameters.

    Args:
        conv: The conv to widen (any module mapping ``in_channels`` channels).
        rec: A RecConv with ``rec.in_channels`` equal to the conv's input channels.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import recconv
        >>> conv = nn.Conv2d(8, 16, 3, padding=1)
        >>> branch, report = recconv.swap(conv, level=2, dense="branch", inplace=True)
        >>> type(branch).__name__, branch.conv is conv
        ('RecBranch', True)
        >>> x = torch.randn(1, 8, 32, 32)
        >>> torch.equal(branch(x), conv(x))
        True
        >>> report.swapped[0].old_receptive_field, report.swapped[0].receptive_field
        ((3, 3), (31, 31))
    """

    # The input passes rec, then conv: how the theory helpers that compose through modules
    # (recconv.receptive_field_window) walk a branch. rec's window always covers the identity's.
    spatial_path = ("rec", "conv")

    def __init__(self, conv: nn.Module, rec: RecConvNd) -> None:
        super().__init__()
        channels = getattr(conv, "in_channels", None)
        if not isinstance(rec, RecConvNd) or rec.in_channels != channels:
            raise ValueError(
                f"RecBranch: rec must be a RecConv with the conv's {channels} input channels, got {rec!r}"
            )
        self.rec = rec
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x + self.rec(x))
