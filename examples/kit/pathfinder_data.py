"""Data for the Pathfinder example: the embedded connectivity task and ImageFolder-style folders.

The embedded task follows Pathfinder (Linsley et al., 2018), one of the Long Range Arena tasks:
an image holds two long, slightly bent, dashed paths side by side, a short distractor path and
two dots. One dot sits on one end of the first long path; in a *connected* image the other sits
on the far end of the same path, otherwise on the near end of the other path, across the gap.

Why long-range context decides: locally both classes look the same. The paths and distractor
are drawn the same way whatever the label (only the second dot moves), every dot sits on the end
of a path, and the path length and the gap between the paths are drawn from the same range, so
the other long path is about as far from a dot as the other dot, and the two dots are as far apart in
both classes (41.6-54.4 px at the default 64 px). Telling the classes apart needs a view that
holds both dots and whether a path joins them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Subset

from .data import Splits, UsageError, check_classes, stratified_split, warn_skipped
from .synthetic import generated_splits

CLASSES = ["not connected", "connected"]
SAMPLE_STEP = 0.4  # pixels between the points that draw a path
TURN = math.radians(15)  # largest turn between the pieces of a path
SHORT, DISTRACTORS = (0.15, 0.3), 1  # distractor length over the image size, and their number
MARGIN = 3.0  # pixels between a path and the image border
MIN_SIZE = 32  # pixels per side: below, two long paths side by side rarely fit at any angle
SPAN, LAYOUT_TRIES = (0.65, 0.85), 512  # see pathfinder_layout
PATH_INK = 0.6  # paths are dimmer than the dots: finding a dot is local, the task is what joins them
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGE_LAYOUT = "DIR/train/<class>/*.png and DIR/test/<class>/*.png (optionally DIR/val/...), as torchvision's ImageFolder"


def path_tries(
    count: int,
    tries: int,
    segments: int,
    segment_length: Tensor,
    max_turn: float,
    size: int,
    generator: torch.Generator,
    start: Tensor | None = None,
) -> Tensor:
    """Joints ``(count, tries, segments + 1, 2)`` (pixel coordinates) of random paths: ``tries``
    candidates for each of ``count`` paths.

    A path is ``segments`` straight pieces of ``segment_length`` pixels (one length per path,
    the same for all its candidates) from ``start`` ``(count, 2)`` or a random point, in a
    random direction, turning by up to ``max_turn`` radians at each joint. Nothing steers a
    path at the border (callers keep a candidate that stays inside), so a path and its reverse
    are equally likely: a path's start and end look alike.
    """
    if start is None:
        start = MARGIN + (size - 2 * MARGIN) * torch.rand(count, tries, 1, 2, generator=generator)
    else:
        start = start[:, None, None].expand(count, tries, 1, 2)
    heading = 2 * math.pi * torch.rand(count, tries, 1, generator=generator)
    turn = max_turn * (2 * torch.rand(count, tries, segments - 1, generator=generator) - 1)
    heading = torch.cat([heading, heading + turn.cumsum(dim=2)], dim=2)
    moves = segment_length[:, None, None, None] * torch.stack([heading.cos(), heading.sin()], dim=-1)
    return torch.cat([start, start + moves.cumsum(dim=2)], dim=2)


def inside(joints: Tensor, size: int) -> Tensor:
    """Whether each path of ``joints`` ``(..., joints, 2)`` stays ``MARGIN`` pixels inside the
    image (its joints do, so its straight pieces do)."""
    return ((joints >= MARGIN) & (joints <= size - 1 - MARGIN)).flatten(-2).all(dim=-1)


def densify(joints: Tensor, size: int) -> Tensor:
    """Points ``(count, points, 2)``, at most ``SAMPLE_STEP`` apart, along the straight pieces
    between ``joints`` ``(count, joints, 2)``, pushed inside the image."""
    piece = (joints[:, 1:] - joints[:, :-1]).norm(dim=-1).max().item()
    steps = max(math.ceil(piece / SAMPLE_STEP), 1)
    fraction = (torch.arange(steps) / steps)[None, None, :, None]
    pieces = joints[:, :-1, None] + fraction * (joints[:, 1:] - joints[:, :-1])[:, :, None]
    points = torch.cat([pieces.flatten(1, 2), joints[:, -1:]], dim=1)
    return points.clamp(MARGIN, size - 1 - MARGIN)


def random_paths(
    count: int,
    segments: int,
    segment_length: Tensor,
    max_turn: float,
    size: int,
    generator: torch.Generator,
    start: Tensor | None = None,
    tries: int = 64,
) -> Tensor:
    """Points ``(count, points, 2)`` of random paths (see :func:`path_tries`) inside the image:
    of ``tries`` candidates the first that stays inside."""
    joints = path_tries(count, tries, segments, segment_length, max_turn, size, generator, start)
    fits = inside(joints, size)
    return densify(
        joints[torch.arange(count), torch.where(fits.any(dim=1), fits.float().argmax(dim=1), -1)], size
    )


def _draw(image: Tensor, points: Tensor, keep: Tensor) -> None:
    """Set the pixels under the kept ``points`` ``(n, p, 2)`` of each image ``(n, size, size)`` to 1."""
    n, size = image.shape[0], image.shape[-1]
    pixel = points.round().long().clamp(0, size - 1)
    rows = torch.arange(n)[:, None].expand_as(keep)
    image[rows[keep], pixel[..., 1][keep], pixel[..., 0][keep]] = 1.0


def pathfinder_layout(
    labels: Tensor, size: int, generator: torch.Generator, distractors: int = DISTRACTORS
) -> tuple[list[Tensor], Tensor]:
    """The paths (points ``(len(labels), points, 2)`` each: the two long ones, then the
    distractors) and the dots ``(len(labels), 2, 2)`` of Pathfinder images (see
    :func:`render_pathfinder`), in pixel coordinates.

    Both classes draw the same two long paths: side by side, each ``SPAN`` x size long, two
    straight pieces that turn by up to ``TURN`` at their joint, with their starts (and ends)
    ``SPAN`` x size apart, the second path on a random side of the first, at any angle that fits
    (the first of ``LAYOUT_TRIES`` draws) and anywhere it fits. The first dot sits on
    the start of the first path. The second sits on its end (connected) or on the start of the
    other path, across the gap (not connected). Length and gap come from the same range, so the
    dots are as far apart in both classes, and each dot sits on a path end with the other path
    about as far away as the other dot: only whether a path joins the two dots differs.
    """
    n, tries = len(labels), LAYOUT_TRIES
    length, apart = size * (SPAN[0] + (SPAN[1] - SPAN[0]) * torch.rand(2, n, tries, generator=generator))
    heading = 2 * math.pi * torch.rand(n, tries, generator=generator)
    turns = TURN * (2 * torch.rand(n, tries, 2, generator=generator) - 1)
    # The second path on a random side of the first, so that no handedness (the side the other
    # path lies on, seen from a dot along its own path) goes with a class.
    apart = apart * torch.where(torch.rand(n, tries, generator=generator) < 0.5, -1.0, 1.0)
    across = torch.stack([-heading.sin(), heading.cos()], dim=-1)
    paths = []
    for k, sign in enumerate((-0.5, 0.5)):
        start = sign * apart[..., None] * across  # around the origin; moved into the image below
        # Two pieces whose end lies straight ahead of the start at ``length``, whatever the turn.
        half = turns[..., k] / 2
        one = torch.stack([(heading - half).cos(), (heading - half).sin()], dim=-1)
        two = torch.stack([(heading + half).cos(), (heading + half).sin()], dim=-1)
        piece = (length / 2 / half.cos())[..., None]
        paths.append(torch.stack([start, start + piece * one, start + piece * (one + two)], dim=-2))
    joints = torch.cat(paths, dim=-2)
    low = joints.amin(dim=-2)
    room = size - 1 - 2 * MARGIN - (joints.amax(dim=-2) - low)  # per axis; negative: does not fit
    # A layout that fits goes anywhere it fits: rotation and shape need tries, the place does not.
    shift = MARGIN - low + room.clamp(min=0) * torch.rand(n, tries, 2, generator=generator)
    fits = (room >= 0).all(dim=-1)
    pick = torch.where(fits.any(dim=1), fits.float().argmax(dim=1), 0)
    rows = torch.arange(n)
    first, second = (p[rows, pick] + shift[rows, pick, None] for p in paths)
    dots = torch.stack([first[:, 0], torch.where(labels.bool()[:, None], first[:, -1], second[:, 0])], dim=1)
    lengths = size * (SHORT[0] + (SHORT[1] - SHORT[0]) * torch.rand(n, distractors, generator=generator))
    short = [random_paths(n, 1, lengths[:, k], TURN, size, generator) for k in range(distractors)]
    return [densify(first, size), densify(second, size), *short], dots


def render_pathfinder(
    labels: Tensor, size: int, generator: torch.Generator, distractors: int = DISTRACTORS
) -> Tensor:
    """Images ``(len(labels), 1, size, size)`` in [0, 1]: label 1 connected, 0 not connected.

    Two long paths and ``distractors`` short ones (``SHORT`` x size), all dashed with
    the same dash (3-5 px at 32 px) and gap (1-2 px) per image, 1 px wide after a light blur,
    at ``PATH_INK`` brightness. Two full-brightness dots (radius 1.5 px at 32 px) sit on the two
    ends of one long path (connected) or on one end of each (not connected); see
    :func:`pathfinder_layout`.
    """
    n = len(labels)
    scale = size / 32
    paths, dots = pathfinder_layout(labels, size, generator, distractors)
    dash = scale * (3 + 2 * torch.rand(n, 1, generator=generator))
    gap = scale * (1 + torch.rand(n, 1, generator=generator))
    image = torch.zeros(n, size, size)
    for path in paths:
        # Arc length along the path: points are at most SAMPLE_STEP apart, closer on shorter paths.
        along = torch.cat([torch.zeros(n, 1), (path[:, 1:] - path[:, :-1]).norm(dim=-1).cumsum(dim=1)], dim=1)
        phase = torch.rand(n, 1, generator=generator) * (dash + gap)
        _draw(image, path, (along + phase) % (dash + gap) < dash)
    blur = torch.tensor([0.25, 0.5, 0.25])
    kernel = (blur[:, None] * blur[None, :])[None, None]
    image = torch.nn.functional.conv2d(image[:, None], kernel, padding=1)[:, 0] * 1.6
    grid = torch.arange(size, dtype=torch.float32)
    dy = (grid[None, None, :] - dots[..., 1, None]) ** 2
    dx = (grid[None, None, :] - dots[..., 0, None]) ** 2
    radius = 1.5 * scale
    discs = ((dy[..., :, None] + dx[..., None, :]) <= radius**2).any(dim=1).float()
    noise = 0.05 * torch.randn(n, size, size, generator=generator)
    return (torch.maximum(PATH_INK * image.clamp(max=1.0), discs) + noise).clamp(0, 1).unsqueeze(1)


def synthetic_pathfinder(sizes: Sequence[int], size: int = 32, seed: int = 0) -> Splits:
    """The embedded task: train (drawn anew every epoch), validation and test sets of ``sizes``
    images ``(1, size, size)`` each, from ``seed``.

    Raises:
        ValueError: For a size under ``MIN_SIZE`` pixels.
    """
    if size < MIN_SIZE:
        raise ValueError(f"synthetic_pathfinder: size must be at least {MIN_SIZE} pixels, got {size}")
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


def _readable(path: str) -> bool:
    """Whether PIL recognises ``path`` as an image and its structure checks out (``verify``: for
    PNG the chunk checksums, so truncated and corrupted files fail; it does not decode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False
    return True


def _drop_unreadable(root: Path, folders: dict[str, Any]) -> list[str]:
    """Remove the images PIL cannot read from every ``ImageFolder``; returns their paths (relative)."""
    skipped = []
    for folder in folders.values():
        good = []
        for path, label in folder.samples:
            if _readable(path):
                good.append((path, label))
            else:
                skipped.append(Path(path).relative_to(root).as_posix())
        folder.samples = folder.imgs = good
        folder.targets = [label for _, label in good]
    return skipped


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
    ``val_fraction`` of each class of train drawn with ``seed``. Images are grayscale (1 channel) when the first
    training image is, RGB otherwise, and are resized to ``size`` x ``size`` pixels, or to the
    first training image's size when ``size`` is ``None``.

    Every image is checked when the folder is loaded (PIL ``verify``); unreadable or corrupt ones
    are skipped with one warning (``skipped_unreadable`` in ``info``), whatever the seed.

    Raises:
        UsageError: For a missing folder, missing ``train``/``test`` subfolders, a class folder
            without images, test classes that differ from the training classes, a training set
            without readable images, one class, or a class the training set lacks.
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

    folders = {
        name: _image_folder(root / name, loader=str)
        for name in ("train", "val", "test")
        if (root / name).is_dir()
    }
    skipped = _drop_unreadable(root, folders)
    warn_skipped(root, skipped, "unreadable or corrupt images")
    if not folders["train"].samples:
        raise UsageError(f"--data-dir {root}/train: no readable images; expected {IMAGE_LAYOUT}")
    first = folders["train"].samples[0][0]
    try:
        with Image.open(first) as image:
            mode = "L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            shape = (size, size) if size is not None else (image.height, image.width)
    except (OSError, UnidentifiedImageError) as err:
        raise UsageError(f"--data-dir: cannot read {first} ({err})") from None
    for folder in folders.values():
        folder.loader = _Images(mode, shape)
    train, test = folders["train"], folders["test"]
    if test.classes != train.classes:
        raise UsageError(
            f"--data-dir {root}: test classes {test.classes} differ from train classes {train.classes}"
        )
    if "val" in folders:
        val = folders["val"]
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
        held, kept = stratified_split(torch.tensor(train.targets), len(train.classes), val_fraction, seed)
        if len(held) == 0:
            raise UsageError(
                f"--data-dir {root}/train: no class has two images, so none can be held out for validation"
            )
        train_part, val_part = Subset(train, kept.tolist()), Subset(train, held.tolist())
    targets = torch.tensor(train.targets)
    labels = {
        "train": targets[train_part.indices].tolist() if isinstance(train_part, Subset) else train.targets,
        "val": targets[val_part.indices].tolist() if isinstance(val_part, Subset) else val_part.targets,
        "test": test.targets,
    }
    info = {
        "source": str(root),
        "image_size": list(shape),
        "channels": len(mode),
        "skipped_unreadable": len(skipped),
        "classes_missing": check_classes(root, list(train.classes), labels),
    }
    return Splits(train_part, val_part, test, list(train.classes), info)


def image_input(path: str | Path, info: dict[str, Any]) -> Tensor:
    """One image as a model input ``(1, C, H, W)``: converted and resized as the training images
    were (``info``: the training data's ``image_size`` and ``channels``, or the embedded ``size``)."""
    from PIL import UnidentifiedImageError

    shape = tuple(info["image_size"]) if "image_size" in info else (info["size"], info["size"])
    try:
        return _read_image(str(path), "L" if info.get("channels", 1) == 1 else "RGB", shape)[None]
    except (OSError, UnidentifiedImageError) as err:
        raise UsageError(f"not a readable image ({err})") from None
