"""Data for the long-range sequence example: InceptionTime's pattern-position task, the adding
problem, and UCR-style folders of real time series.

Why long-range context decides the pattern-position task: every series is white noise with one
bump, and the class is only *where* the bump sits, at 10 % or at 65 % of the length. A
convolutional network that pools globally is blind to absolute position; its only clue is the
zero padding at the two ends, so it tells the classes apart only if its receptive field reaches
from the bump to the nearer end. At the default length of 2048 the early bump sits 164-246
samples from the start and the late one 676-758 samples from the end. ``recnext_seq_tiny`` at
``level=0`` reaches 479 samples (about 240 either way): the start is at the edge of its reach
from the early bump, and the end is out of its reach from the late one. With its RecConv levels
the same network reaches 3831 samples, so every position sees the whole series (numbers from
``python docs/scripts/example_figures.py``).

The adding problem (Hochreiter and Schmidhuber, 1997) is the classic memory test of recurrent
networks: channel 0 holds random numbers in [0, 1], channel 1 marks two of them (one in each
half), and the class says whether the marked numbers add up to more than 1. For a network that
pools globally it is *not* long-range: the sum of the two marked values is a sum over positions
of a purely local feature (marker times value), which global average pooling computes with any
receptive field. It is kept as a control: RecConv should have no edge on it (see docs/sequence.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from .data import Splits, UsageError, check_classes, stratified_split
from .synthetic import generated_splits

TASKS = ("position", "adding")
POSITION_CLASSES = ["at 10 %", "at 65 %"]
ADDING_CLASSES = ["sum <= 1", "sum > 1"]
POSITIONS = (0.10, 0.65)  # bump centres as fractions of the length, as in InceptionTime
JITTER = 0.02  # +- this fraction of the length around each centre
UCR_LAYOUT = (
    "DIR/<name>_TRAIN.tsv and DIR/<name>_TEST.tsv (or train.* / test.*; .tsv, .csv or .npy), "
    "one series per row, the label in the first column, as in the UCR archive"
)
UCR_SUFFIXES = (".tsv", ".csv", ".npy")


def pattern_position(labels: Tensor, length: int, generator: torch.Generator) -> Tensor:
    """Series ``(len(labels), 1, length)`` with the bump at 10 % (label 0) or 65 % (label 1).

    Each series is white noise (standard deviation 1) plus one Gaussian bump with a random
    height (2-4), width (standard deviation 0.3-1 % of the length) and a centre within
    +-2 % of the length around its class's position.
    """
    count = len(labels)
    centre = torch.tensor(POSITIONS)[labels] + JITTER * (2 * torch.rand(count, generator=generator) - 1)
    width = length * (0.003 + 0.007 * torch.rand(count, generator=generator))
    height = 2 + 2 * torch.rand(count, generator=generator)
    t = torch.arange(length, dtype=torch.float32)
    bump = height[:, None] * torch.exp(-0.5 * ((t - centre[:, None] * length) / width[:, None]) ** 2)
    return (torch.randn(count, length, generator=generator) + bump).unsqueeze(1)


def adding_problem(labels: Tensor, length: int, generator: torch.Generator) -> Tensor:
    """Two-channel series ``(len(labels), 2, length)`` of the adding problem: numbers and markers.

    Channel 0 holds uniform numbers in [0, 1]; channel 1 is 1 at one random position in each
    half and 0 elsewhere. The two marked numbers add up to more than 1 exactly for label 1:
    they are drawn uniformly from the unit square and mirrored (``a, b -> 1 - a, 1 - b``) where
    they disagree with the label, which keeps them uniform on the label's half.
    """
    count, half = len(labels), length // 2
    values = torch.rand(count, length, generator=generator)
    rows = torch.arange(count)
    first = torch.randint(half, (count,), generator=generator)
    second = half + torch.randint(length - half, (count,), generator=generator)
    pair = values[rows[:, None], torch.stack([first, second], dim=1)]
    wrong = (pair.sum(dim=1) > 1).long() != labels
    values[rows[:, None], torch.stack([first, second], dim=1)] = torch.where(wrong[:, None], 1 - pair, pair)
    markers = torch.zeros(count, length)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return torch.stack([values, markers], dim=1)


_TASKS = {"position": (pattern_position, POSITION_CLASSES), "adding": (adding_problem, ADDING_CLASSES)}


def synthetic_sequences(task: str, sizes: Sequence[int], length: int, seed: int = 0) -> Splits:
    """The embedded task ``task`` (``"position"`` or ``"adding"``): train, validation and test sets
    of ``sizes`` series each, of ``length`` samples (see :func:`synthetic.generated_splits`).

    Raises:
        ValueError: For an unknown task or a length under 64.
    """
    if task not in _TASKS:
        raise ValueError(f"synthetic_sequences: unknown task {task!r}; expected one of {list(_TASKS)}")
    if length < 64:
        raise ValueError(f"synthetic_sequences: length must be at least 64, got {length}")
    generate, classes = _TASKS[task]
    info = {"source": f"embedded {task} task, seed {seed}", "length": length}
    return generated_splits(generate, (length,), sizes, classes, seed, info)


def _find_split_file(root: Path, split: str) -> Path:
    """The one file of ``root`` named ``*_<SPLIT>.<suffix>`` or ``<split>.<suffix>`` (any case)."""
    found = [
        path
        for path in sorted(root.iterdir())
        if path.is_file()
        and path.suffix.lower() in UCR_SUFFIXES
        and (path.stem.lower() == split or path.stem.lower().endswith(f"_{split}"))
    ]
    if not found:
        raise UsageError(f"--data-dir {root}: no {split} file; expected {UCR_LAYOUT}")
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise UsageError(f"--data-dir {root}: several {split} files ({names}); keep one")
    return found[0]


def _label_name(text: str) -> str:
    # UCR files write labels as 1, 1.0 or 1.0000000e+00; all name the class "1".
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else str(value)


def read_table(path: str | Path) -> tuple[list[str], Tensor]:
    """Labels and series of a UCR-style file: one series per row, the label first.

    ``.tsv`` is split on tabs or spaces, ``.csv`` on commas, ``.npy`` is a 2D numeric array.
    Rows may differ in length (the UCR archive's variable-length sets); short rows and missing
    values (``NaN``) come back as ``NaN``.

    Returns:
        The label of each row as text (``"1.0"`` and ``"1"`` both give ``"1"``) and a float32
        tensor ``(rows, longest row - 1)``.

    Raises:
        UsageError: If the file is not UTF-8 text, cannot be parsed, holds no rows, has a row
            without values or an infinite value (naming the line).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        import numpy

        try:
            array = numpy.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise UsageError(f"{path}: not a readable .npy array ({err})") from None
        if array.ndim != 2 or array.shape[1] < 2 or not numpy.issubdtype(array.dtype, numpy.number):
            raise UsageError(
                f"{path}: expected a 2D numeric array (rows, 1 + length) with the label in column 0, "
                f"got shape {array.shape} and dtype {array.dtype}"
            )
        table = torch.from_numpy(array.astype("float32"))
        if table.isinf().any():
            row = int(table.isinf().any(dim=1).nonzero()[0])
            raise UsageError(
                f"{path}, row {row + 1}: values must be finite (NaN marks a missing value), found inf"
            )
        return [_label_name(repr(float(v))) for v in table[:, 0].tolist()], table[:, 1:].contiguous()
    separator = "," if path.suffix.lower() == ".csv" else None
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UsageError(f"{path}, line {line}: not UTF-8 text; expected {UCR_LAYOUT}") from None
    labels, rows = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = [f.strip() for f in line.split(separator)] if line.strip() else []
        if not fields:
            continue
        if len(fields) < 2:
            raise UsageError(f"{path}, line {number}: expected a label and at least one value")
        try:
            rows.append([float(f) if f else math.nan for f in fields[1:]])
        except ValueError:
            raise UsageError(f"{path}, line {number}: values must be numbers, got {line[:60]!r}") from None
        if any(math.isinf(value) for value in rows[-1]):
            raise UsageError(
                f"{path}, line {number}: values must be finite (NaN marks a missing value), found inf"
            )
        labels.append(_label_name(fields[0]))
    if not rows:
        raise UsageError(f"{path}: no series in the file; expected {UCR_LAYOUT}")
    longest = max(map(len, rows))
    table = torch.full((len(rows), longest), math.nan)
    for i, row in enumerate(rows):
        table[i, : len(row)] = torch.tensor(row)
    return labels, table


def _standardize(series: Tensor) -> Tensor:
    """Z-normalize each series over its present values; missing values and padding become 0."""
    present = ~series.isnan()
    count = present.sum(dim=1, keepdim=True).clamp_min(1)
    filled = series.nan_to_num(0.0)
    mean = filled.sum(dim=1, keepdim=True) / count
    std = (((filled - mean) * present) ** 2).sum(dim=1, keepdim=True).div(count).sqrt()
    return torch.where(present, (filled - mean) / std.clamp_min(1e-8), 0.0).unsqueeze(1)


def _class_order(names: set[str]) -> list[str]:
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


def load_ucr(root: str | Path, seed: int = 0, val_fraction: float = 0.1) -> Splits:
    """Train, validation and test sets of a UCR-style folder (see ``UCR_LAYOUT``).

    Each series is z-normalized (missing values and the padding of shorter series become 0
    afterwards), and the test series are padded or cut to the training length. The validation
    set is a ``val_fraction`` of each class's training series drawn with ``seed`` (at least one
    of every class that has two), so every seed validates on every class it can.

    Raises:
        UsageError: For a missing folder, a missing or ambiguous train/test file, unreadable
            files, fewer than two training series, or test labels the training file lacks.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"--data-dir {root}: no such folder; expected {UCR_LAYOUT}")
    train_path, test_path = _find_split_file(root, "train"), _find_split_file(root, "test")
    train_labels, train_series = read_table(train_path)
    test_labels, test_series = read_table(test_path)
    classes = _class_order(set(train_labels))
    unknown = sorted(set(test_labels) - set(classes))
    if unknown:
        raise UsageError(f"{test_path}: labels {unknown} do not occur in {train_path.name} ({classes})")
    if len(train_labels) < 2:
        raise UsageError(f"{train_path}: needs at least two series (one is held out for validation)")
    length = train_series.shape[1]
    test_series = torch.nn.functional.pad(
        test_series, (0, max(length - test_series.shape[1], 0)), value=math.nan
    )
    index = {name: i for i, name in enumerate(classes)}
    train_y = torch.tensor([index[name] for name in train_labels])
    test_y = torch.tensor([index[name] for name in test_labels])
    val_idx, train_idx = stratified_split(train_y, len(classes), val_fraction, seed)
    if len(val_idx) == 0:
        raise UsageError(f"{train_path}: no class has two series, so none can be held out for validation")
    missing = check_classes(
        root,
        classes,
        {"train": train_y[train_idx].tolist(), "val": train_y[val_idx].tolist(), "test": test_y.tolist()},
    )
    train_x, test_x = _standardize(train_series), _standardize(test_series[:, :length])
    info: dict[str, Any] = {
        "source": str(root),
        "files": [train_path.name, test_path.name],
        "length": length,
        "classes_missing": missing,
    }
    return Splits(
        TensorDataset(train_x[train_idx], train_y[train_idx]),
        TensorDataset(train_x[val_idx], train_y[val_idx]),
        TensorDataset(test_x, test_y),
        classes,
        info,
    )


def series_inputs(path: str | Path, info: dict[str, Any]) -> Tensor:
    """The series of a UCR-style file (label column first, ignored) as model inputs
    ``(rows, 1, length)``: z-normalized as in training, padded or cut to the training ``length``."""
    _, series = read_table(path)
    length = info["length"]
    series = torch.nn.functional.pad(series, (0, max(length - series.shape[1], 0)), value=math.nan)
    return _standardize(series[:, :length])
