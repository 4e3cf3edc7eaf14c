"""Data for the Pathfinder example: the embedded connectivity task and ImageFolder-style folders.

The embedded task follows Pathfinder (Linsley et al., 2018), one of the Long Range Arena tasks:
an image holds two long, curvy, dashed paths, a few shorter distractor paths and two endpoint
dots. In a *connected* image both dots sit on the two ends of the same long path; otherwise
each long path carries one dot at one end. Path lengths, shapes, dashes and positions are random.

Why long-range context decides: locally both classes look the same. Every image has two dots,
each at the end of a dashed curve, two undotted path ends, the same number of curves and the
same dash pattern; any patch smaller than the distance between the dots looks alike in both
classes. Only following a curve from one dot along its whole length (or at least seeing both
dots and the curves between them) tells whether they are joined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from harness import Splits, UsageError
from synthetic import generated_splits
from torch import Tensor
from torch.utils.data import Subset

CLASSES = ["not connected", "connected"]
SAMPLE_STEP = 0.4
SEGMENTS, TURN = 2, math.radians(15)  # pixels between the points that draw a path
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGE_LAYOUT = "DIR/train/<class>/*.png and DIR/test/<class>/*.png (optionally DIR/val/...), as torchvision's ImageFolder"


def random_paths(
    count: int, segments: int, segment_length: Tensor, max_turn: float, size: int, generator: torch.Generator
) -> Tensor:
    """Points ``(count, points, 2)`` (pixel coordinates) of smooth random paths inside the image.

    Each path is ``segments`` straight pieces of ``segment_length`` pixels (one per path), the
    direction turning by up to ``max_turn`` radians at each joint, drawn at ``SAMPLE_STEP``
    spacing. A path that would leave the image bends back toward the centre instead.
    """
    steps = max(int(segment_length.max().item() / SAMPLE_STEP), 1)
    margin = 3.0
    position = margin + (size - 2 * margin) * torch.rand(count, 2, generator=generator)
    heading = 2 * math.pi * torch.rand(count, generator=generator)
    turn = max_turn * (2 * torch.rand(count, segments, generator=generator) - 1)
    points = [position]
    fraction = (torch.arange(1, steps + 1) / steps)[None, :, None]
    for k in range(segments):
        heading = heading + turn[:, k]
        direction = torch.stack([heading.cos(), heading.sin()], dim=-1)
        end = position + segment_length[:, None] * direction
        outside = ((end < margin) | (end > size - 1 - margin)).any(dim=1)
        # Bend back: aim at the centre, off by up to max_turn.
        to_centre = torch.atan2(size / 2 - position[:, 1], size / 2 - position[:, 0])
        heading = torch.where(outside, to_centre + turn[:, k], heading)
        direction = torch.stack([heading.cos(), heading.sin()], dim=-1)
        end = (position + segment_length[:, None] * direction).clamp(margin, size - 1 - margin)
        points.append(position[:, None] + fraction * (end - position)[:, None])
        position = end
    return torch.cat([points[0][:, None], *points[1:]], dim=1)


def _draw(image: Tensor, points: Tensor, keep: Tensor) -> None:
    """Set the pixels under the kept ``points`` ``(n, p, 2)`` of each image ``(n, size, size)`` to 1."""
    n, size = image.shape[0], image.shape[-1]
    pixel = points.round().long().clamp(0, size - 1)
    rows = torch.arange(n)[:, None].expand_as(keep)
    image[rows[keep], pixel[..., 1][keep], pixel[..., 0][keep]] = 1.0


def render_pathfinder(labels: Tensor, size: int, generator: torch.Generator, distractors: int = 0) -> Tensor:
    """Images ``(len(labels), 1, size, size)`` in [0, 1]: label 1 connected, 0 not connected.

    Two long paths (6 segments of 0.12-0.16 x size pixels, turning by up to 40 degrees) and
    ``distractors`` short ones (2 segments), all dashed (dash 3-5 px, gap 2-3 px, per image),
    1 px wide after a light blur; dots of radius 1.5 px (at 32 px) at the ends the label says.
    """
    n = len(labels)
    scale = size / 32
    long_length = size * (0.3 + 0.05 * torch.rand(n, generator=generator))
    paths = [random_paths(n, SEGMENTS, long_length, TURN, size, generator) for _ in range(2)]
    short = [random_paths(n, 1, long_length, TURN, size, generator) for _ in range(distractors)]
    dash = scale * (3 + 2 * torch.rand(n, 1, generator=generator))
    gap = scale * (1 + torch.rand(n, 1, generator=generator))
    image = torch.zeros(n, size, size)
    for path in paths + short:
        along = torch.arange(path.shape[1]) * SAMPLE_STEP
        phase = torch.rand(n, 1, generator=generator) * (dash + gap)
        _draw(image, path, (along + phase) % (dash + gap) < dash)
    blur = torch.tensor([0.25, 0.5, 0.25])
    kernel = (blur[:, None] * blur[None, :])[None, None]
    image = torch.nn.functional.conv2d(image[:, None], kernel, padding=1)[:, 0] * 1.6
    # Dots: both ends of path 0 (connected), or the start of path 0 and of path 1 (not connected).
    first, second = paths
    ends = torch.where(labels[:, None].bool(), first[:, -1], second[:, 0])
    dots = torch.stack([first[:, 0], ends], dim=1)  # (n, 2, 2)
    grid = torch.arange(size, dtype=torch.float32)
    dy = (grid[None, None, :] - dots[..., 1, None]) ** 2
    dx = (grid[None, None, :] - dots[..., 0, None]) ** 2
    radius = 1.5 * scale
    discs = ((dy[..., :, None] + dx[..., None, :]) <= radius**2).any(dim=1).float()
    noise = 0.05 * torch.randn(n, size, size, generator=generator)
    return (torch.maximum(image.clamp(max=1.0), discs) + noise).clamp(0, 1).unsqueeze(1)


def synthetic_pathfinder(sizes: Sequence[int], size: int = 32, seed: int = 0) -> Splits:
    """The embedded task: train (drawn anew every epoch), validation and test sets of ``sizes``
    images ``(1, size, size)`` each, from ``seed``.

    Raises:
        ValueError: For a size under 24 pixels.
    """
    if size < 24:
        raise ValueError(f"synthetic_pathfinder: size must be at least 24 pixels, got {size}")
    info = {"source": f"embedded pathfinder task, seed {seed}", "size": size}
    return generated_splits(render_pathfinder, (size,), sizes, CLASSES, seed, info)


def _image_folder(folder: Path, loader: Any) -> Any:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(folder), loader=loader)
    except (FileNotFoundError, RuntimeError) as err:
        raise UsageError(f"--data-dir: {err}; expected {IMAGE_LAYOUT}") from None


def _read_image(path: str, mode: str, size: tuple[int, int]) -> Tensor:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert(mode)
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(size[0], size[1], len(mode)).permute(2, 0, 1).float() / 255


class _Images:
    """Reads an image as a float tensor ``(C, H, W)`` in [0, 1], converted to ``mode`` and resized."""

    def __init__(self, mode: str, size: tuple[int, int]) -> None:
        self.mode, self.size = mode, size

    def __call__(self, path: str) -> Tensor:
        return _read_image(path, self.mode, self.size)


def load_image_folder(
    root: str | Path, size: int | None = None, seed: int = 0, val_fraction: float = 0.1
) -> Splits:
    """Train, validation and test sets of an image folder (see ``IMAGE_LAYOUT``).

    ``root/train`` and ``root/test`` are torchvision ``ImageFolder`` folders (one subfolder per
    class, classes in name order); ``root/val`` is the validation set when present, otherwise a
    ``val_fraction`` of train drawn with ``seed``. Images are grayscale (1 channel) when the first
    training image is, RGB otherwise, and are resized to ``size`` x ``size`` pixels, or to the
    first training image's size when ``size`` is ``None``.

    Raises:
        UsageError: For a missing folder, missing ``train``/``test`` subfolders, a class folder
            without images, test classes that differ from the training classes, or an
            unreadable first image.
        ImportError: If torchvision is not installed.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"--data-dir {root}: no such folder; expected {IMAGE_LAYOUT}")
    missing = [name for name in ("train", "test") if not (root / name).is_dir()]
    if missing:
        raise UsageError(f"--data-dir {root}: no {' or '.join(missing)} folder; expected {IMAGE_LAYOUT}")
    try:
        import torchvision  # noqa: F401
    except ImportError as err:
        raise ImportError("image_pathfinder --data-dir needs torchvision (pip install torchvision)") from err
    from PIL import Image, UnidentifiedImageError

    train = _image_folder(root / "train", loader=str)
    first = train.samples[0][0]
    try:
        with Image.open(first) as image:
            mode = "L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            shape = (size, size) if size is not None else (image.height, image.width)
    except (OSError, UnidentifiedImageError) as err:
        raise UsageError(f"--data-dir: cannot read {first} ({err})") from None
    read = _Images(mode, shape)
    train = _image_folder(root / "train", read)
    test = _image_folder(root / "test", read)
    if test.classes != train.classes:
        raise UsageError(
            f"--data-dir {root}: test classes {test.classes} differ from train classes {train.classes}"
        )
    if (root / "val").is_dir():
        val = _image_folder(root / "val", read)
        if val.classes != train.classes:
            raise UsageError(
                f"--data-dir {root}: val classes {val.classes} differ from train classes {train.classes}"
            )
        train_part, val_part = train, val
    else:
        if len(train) < 2:
            raise UsageError(
                f"--data-dir {root}/train: needs at least two images (one is held out for validation)"
            )
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        held_out = max(1, round(val_fraction * len(train)))
        train_part, val_part = Subset(train, order[held_out:]), Subset(train, order[:held_out])
    info = {"source": str(root), "image_size": list(shape), "channels": len(mode)}
    return Splits(train_part, val_part, test, list(train.classes), info)
