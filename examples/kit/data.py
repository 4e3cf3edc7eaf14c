"""What every example's data loader returns (:class:`Splits`), the error it raises for bad data
(:class:`UsageError`), and the checks every loader shares: skipped files counted and named once,
classes present in every split, and a fingerprint that tells one data set from another."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

SHOWN = 5  # files named in a warning or error; the rest are counted


class UsageError(ValueError):
    """A problem with the command line or the data it points to; examples report it like a bad flag."""


@dataclass
class Splits:
    """Train, validation and test sets of ``(input, label)`` pairs and the class names."""

    train: Dataset
    val: Dataset
    test: Dataset
    classes: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # written to results.json under "data"

    def head(self, count: int) -> Splits:
        """The first ``count`` examples of every split: a few batches of real data for ``--smoke``."""
        subsets = (Subset(d, range(min(count, len(d)))) for d in (self.train, self.val, self.test))
        return Splits(*subsets, self.classes, self.info)


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: ``frame_2`` before ``frame_10``.

    Example:
        >>> sorted(["frame_10.png", "frame_2.png", "frame_1.png"], key=natural_key)
        ['frame_1.png', 'frame_2.png', 'frame_10.png']
    """
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def listed(paths: Sequence[str]) -> str:
    """The first few of ``paths`` and how many more, for a message."""
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(sorted(paths)[:SHOWN]) + more


def warn_skipped(root: str | Path, skipped: Sequence[str], what: str) -> None:
    """One warning for the ``skipped`` files of ``root`` (``what``: why, e.g. "unreadable WAV files")."""
    if skipped:
        warnings.warn(
            f"--data-dir {root}: skipped {len(skipped)} {what} ({listed(skipped)})", UserWarning, stacklevel=3
        )


def check_classes(
    root: str | Path, classes: Sequence[str], labels: dict[str, Sequence[int]]
) -> dict[str, list[str]]:
    """Check the classes of a data set's splits (``labels``: split -> label of each example).

    One class, or a class the training set lacks, is an error: the model could not learn it. A
    class that validation or test lacks is a warning (its accuracy is not measured); the returned
    ``{split: [missing classes]}`` goes into ``results.json``. Loaders split without randomness
    or per class, so the outcome is the same for every seed.

    Raises:
        UsageError: Naming the folder, the split and the missing classes.
    """
    if len(classes) < 2:
        raise UsageError(
            f"--data-dir {root}: found only the class {list(classes)}; a classifier needs two or more"
        )
    missing = {
        split: [classes[i] for i in sorted(set(range(len(classes))) - set(split_labels))]
        for split, split_labels in labels.items()
    }
    if missing.get("train"):
        raise UsageError(
            f"--data-dir {root}: the training set has no example of {missing['train']}; "
            "every class needs training examples"
        )
    missing = {split: names for split, names in missing.items() if names}
    for split, names in missing.items():
        warnings.warn(
            f"--data-dir {root}: the {split} set has no example of {names}; their accuracy is not measured",
            UserWarning,
            stacklevel=3,
        )
    return missing


def stratified_split(labels: Tensor, num_classes: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices ``(held out, kept)`` of ``labels``: ``fraction`` of each class (at least one of a
    class that has two or more), drawn with ``seed``; both sorted. Holding out per class means
    every seed validates on every class it can.

    Example:
        >>> held, kept = stratified_split(torch.tensor([0, 0, 0, 0, 1, 1, 2]), 3, 0.25, seed=0)
        >>> sorted(torch.tensor([0, 0, 0, 0, 1, 1, 2])[held].tolist())
        [0, 1]
    """
    generator = torch.Generator().manual_seed(seed)
    held, kept = [], []
    for label in range(num_classes):
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = max(1, round(fraction * len(members))) if len(members) > 1 else 0
        held.append(members[:count])
        kept.append(members[count:])
    return torch.cat(held).sort().values, torch.cat(kept).sort().values


def fingerprint(splits: Splits, data_dir: Path | None) -> str:
    """A short hash of what defines the data: class names, split sizes, the loader's ``info`` and,
    for a ``--data-dir``, every file's relative path and size (contents are not read: fast on
    large folders, and a changed file almost always changes its size or name)."""
    digest = hashlib.sha256()
    described = {k: v for k, v in splits.info.items() if k != "fingerprint"}
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    digest.update(json.dumps([splits.classes, sizes, described], sort_keys=True, default=str).encode())
    if data_dir is not None:
        for folder, subfolders, files in os.walk(data_dir):
            subfolders.sort()
            for name in sorted(files):
                path = Path(folder, name)
                digest.update(f"{path.relative_to(data_dir)}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]
