"""Splits of an embedded task from a generator function, shared by the examples' data modules.

A generator takes labels ``(n,)``, the example shape and a ``torch.Generator`` and returns the
inputs ``(n, ...)`` of those labels. Validation and test sets are drawn once from the seed; the
training set is drawn anew on every access (:class:`FreshDraws`), so a small network cannot
memorize the noise of a few hundred examples and has to learn the rule that makes the class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from .data import Splits

Generate = Callable[..., Tensor]


class FreshDraws(Dataset):
    """``count`` examples drawn anew on every access: example ``i`` has label ``i % num_classes``
    and everything else random.

    The randomness comes from torch's global generator, which the harness seeds per epoch and
    process, so every epoch sees new examples and a rerun sees the same ones.
    """

    def __init__(self, generate: Generate, count: int, num_classes: int, *shape: int) -> None:
        self.generate, self.count, self.num_classes, self.shape = generate, count, num_classes, shape

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(f"FreshDraws: index {index} out of range for {self.count} examples")
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        label = torch.tensor([index % self.num_classes])
        return self.generate(label, *self.shape, generator)[0], label[0]


def drawn_once(
    generate: Generate, count: int, num_classes: int, shape: Sequence[int], seed: int
) -> TensorDataset:
    """``count`` examples with balanced labels, drawn once from ``seed``."""
    labels = torch.arange(count) % num_classes
    return TensorDataset(generate(labels, *shape, torch.Generator().manual_seed(seed)), labels)


def generated_splits(
    generate: Generate,
    shape: Sequence[int],
    sizes: Sequence[int],
    classes: Sequence[str],
    seed: int,
    info: dict[str, Any],
) -> Splits:
    """Train (:class:`FreshDraws`), validation and test sets (drawn once) of ``sizes`` examples."""
    train = FreshDraws(generate, sizes[0], len(classes), *shape)
    val, test = (
        drawn_once(generate, count, len(classes), shape, seed * 1009 + i)
        for i, count in ((1, sizes[1]), (2, sizes[2]))
    )
    return Splits(train, val, test, list(classes), {**info, "sizes": list(sizes)})
