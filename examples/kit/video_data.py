"""Data for the video example: the embedded trajectory task and folders of real clips.

The embedded task follows the Temporal Shape dataset (WACV 2023): a bright dot moves along a
trajectory and the class is the trajectory's shape alone. Start point, size, orientation,
mirror image, direction, speed profile and position in the frame are random, and dimmer
distractor dots wander about.

Why long-range context decides: every class is made of the same local pieces. Over a few
frames the dot moves along a straight segment or a gentle bend in every class; a circle and an
arc have the same curvature everywhere, a square and a zigzag have the same straight runs and
corners, a spiral and a circle turn the same way. What tells them apart is how the pieces fit
together over the whole clip: whether the path closes, how many corners it has and which way
they turn, whether the curvature changes. A network has to integrate the dot's positions over
most of the frames and most of the frame area.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .data import Splits, UsageError, check_classes, natural_key, warn_skipped
from .synthetic import generated_splits

SHAPES = ("circle", "arc", "spiral", "line", "zigzag", "square", "s-curve", "figure-eight")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TENSOR_SUFFIXES = (".npy", ".pt")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
CLIPS_LAYOUT = (
    "DIR/<class>/<clip> where each clip is a folder of frame images (.png/.jpg, in natural name order: "
    "frame_2 before frame_10), "
    "a .npy or .pt tensor (T, H, W), (T, H, W, C) or (C, T, H, W), or a video file (needs torchcodec)"
)


def _circle(s: Tensor) -> Tensor:
    angle = 2 * math.pi * s
    return torch.stack([angle.cos(), angle.sin()], dim=-1)


def _arc(s: Tensor) -> Tensor:
    # Half a turn of the same circle: locally identical to "circle", but the path stays open.
    angle = math.pi * (s - 0.5)
    return torch.stack([angle.cos(), angle.sin()], dim=-1)


def _spiral(s: Tensor) -> Tensor:
    angle, radius = 3 * math.pi * s, 0.25 + 0.75 * s
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=-1)


def _line(s: Tensor) -> Tensor:
    return torch.stack([2 * s - 1, torch.zeros_like(s)], dim=-1)


def _zigzag(s: Tensor) -> Tensor:
    teeth = 2  # up-down-up-down: four straight runs and three corners
    phase = (2 * teeth * s) % 2
    return torch.stack([2 * s - 1, 0.7 * (1 - 2 * (phase - 1).abs())], dim=-1)


def _square(s: Tensor) -> Tensor:
    side = (4 * s).clamp(max=3.9999)
    t = 2 * (side % 1) - 1
    one = torch.ones_like(t)
    corners = [torch.stack(p, dim=-1) for p in ((t, -one), (one, t), (-t, one), (-one, -t))]
    return torch.stack(corners)[side.long(), torch.arange(len(s))]


def _s_curve(s: Tensor) -> Tensor:
    # Two half circles turning opposite ways.
    angle = 2 * math.pi * s
    return torch.stack([0.6 * angle.sin() * torch.where(s < 0.5, 1.0, -1.0), 2 * s - 1], dim=-1)


def _figure_eight(s: Tensor) -> Tensor:
    angle = 2 * math.pi * s
    return torch.stack([angle.sin(), (2 * angle).sin() * 0.6], dim=-1)


_PATHS: dict[str, tuple[Callable[[Tensor], Tensor], bool]] = {  # path on [0, 1] -> (x, y); closed?
    "circle": (_circle, True),
    "arc": (_arc, False),
    "spiral": (_spiral, False),
    "line": (_line, False),
    "zigzag": (_zigzag, False),
    "square": (_square, True),
    "s-curve": (_s_curve, False),
    "figure-eight": (_figure_eight, True),
}


def trajectories(labels: Tensor, frames: int, generator: torch.Generator) -> Tensor:
    """Dot positions ``(len(labels), frames, 2)`` in ``[-1, 1]`` for the shapes ``SHAPES[label]``.

    Random per clip: the start point on closed paths, the direction, a speed profile (the path
    parameter runs as ``t ** gamma`` with ``gamma`` in [0.7, 1.4]), rotation, mirror image, size
    (45-85 % of the frame) and the position of the path in the frame.
    """
    n = len(labels)
    t = torch.linspace(0, 1, frames)
    gamma = 0.7 + 0.7 * torch.rand(n, 1, generator=generator)
    s = t**gamma
    reverse = torch.rand(n, 1, generator=generator) < 0.5
    s = torch.where(reverse, 1 - s, s)
    start = torch.rand(n, 1, generator=generator)
    points = torch.empty(n, frames, 2)
    for index, shape in enumerate(SHAPES):
        rows = (labels == index).nonzero(as_tuple=True)[0]
        if len(rows):
            path, closed = _PATHS[shape]
            along = (s[rows] + start[rows]) % 1 if closed else s[rows]
            points[rows] = path(along.reshape(-1)).view(len(rows), frames, 2)
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    points = points * torch.stack([mirror, torch.ones(n)], -1)[:, None]
    points = points @ rotation.transpose(1, 2)
    # Fit the path's bounding box into the frame at a random size and place.
    low, high = points.amin(dim=1, keepdim=True), points.amax(dim=1, keepdim=True)
    extent = (high - low).amax(dim=2, keepdim=True).clamp_min(1e-6)
    size = 0.9 + 0.8 * torch.rand(n, 1, 1, generator=generator)  # of the full width 2
    points = (points - low) / extent * size
    room = 2 - 0.1 - (high - low) / extent * size  # keep 0.05 from the border
    return points - 0.95 + room * torch.rand(n, 1, 2, generator=generator)


def _blobs(centres: Tensor, radius: Tensor, size: int) -> Tensor:
    """Gaussian dots: centres ``(..., 2)`` in ``[-1, 1]`` and radii in pixels -> ``(..., size, size)``."""
    pixels = (centres + 1) / 2 * size - 0.5
    dx = torch.arange(size) - pixels[..., 0, None]
    dy = torch.arange(size) - pixels[..., 1, None]
    r2 = (2 * radius[..., None] ** 2).unsqueeze(-1)
    return torch.exp(-(dy[..., :, None] ** 2) / r2) * torch.exp(-(dx[..., None, :] ** 2) / r2)


def render_clips(
    labels: Tensor, frames: int, size: int, generator: torch.Generator, distractors: int = 3
) -> Tensor:
    """Grayscale clips ``(len(labels), 1, frames, size, size)`` in [0, 1] of the trajectory task.

    The dot (radius 1-1.6 px at 32 px, brightness 0.8-1) follows :func:`trajectories`;
    ``distractors`` dimmer dots (brightness 0.3-0.55) drift with random velocities and jitter,
    and Gaussian pixel noise (standard deviation 0.03-0.08) covers everything.
    """
    n = len(labels)
    scale = size / 32
    path = trajectories(labels, frames, generator)
    radius = scale * (1.0 + 0.6 * torch.rand(n, 1, generator=generator))
    brightness = 0.8 + 0.2 * torch.rand(n, 1, 1, 1, generator=generator)
    clips = brightness * _blobs(path, radius.expand(n, frames), size)
    if distractors:
        start = 1.8 * torch.rand(n, distractors, 1, 2, generator=generator) - 0.9
        velocity = 0.08 * torch.randn(n, distractors, 1, 2, generator=generator)
        jitter = 0.03 * torch.randn(n, distractors, frames, 2, generator=generator).cumsum(dim=2)
        steps = torch.arange(frames, dtype=torch.float32)[None, None, :, None]
        centres = start + velocity * steps + jitter
        centres = 1 - ((centres + 1) % 4 - 2).abs()  # reflect at the borders
        r = scale * (0.8 + 0.6 * torch.rand(n, distractors, 1, generator=generator)).expand(-1, -1, frames)
        dim = 0.3 + 0.25 * torch.rand(n, distractors, 1, 1, 1, generator=generator)
        clips = torch.maximum(clips, (dim * _blobs(centres, r, size)).amax(dim=1))
    noise = (0.03 + 0.05 * torch.rand(n, 1, 1, 1, generator=generator)) * torch.randn(
        n, frames, size, size, generator=generator
    )
    return (clips + noise).clamp(0, 1).unsqueeze(1)


def synthetic_clips(sizes: Sequence[int], frames: int = 16, size: int = 32, seed: int = 0) -> Splits:
    """The embedded task: train (drawn anew every epoch), validation and test sets of ``sizes``
    clips ``(1, frames, size, size)`` each, balanced over ``SHAPES``, from ``seed``.

    Raises:
        ValueError: For fewer than 8 frames or a size under 16 pixels.
    """
    if frames < 8 or size < 16:
        raise ValueError(
            f"synthetic_clips: needs at least 8 frames of 16 x 16 pixels, got {frames} of {size}"
        )
    info = {"source": f"embedded trajectory task, seed {seed}", "frames": frames, "size": size}
    return generated_splits(render_clips, (frames, size), sizes, SHAPES, seed, info)


def _to_tchw(data: Tensor, source: Path) -> Tensor:
    """A clip tensor ``(T, H, W)``, ``(T, H, W, C)`` or ``(C, T, H, W)`` (C 1 or 3) as float ``(T, C, H, W)``."""
    if data.dtype == torch.uint8:
        data = data.float() / 255
    elif data.is_floating_point():
        data = data.float()
    else:
        raise UsageError(f"{source}: expected a uint8 or float tensor, got {data.dtype}")
    if data.dim() == 3:
        return data.unsqueeze(1)
    if data.dim() == 4 and data.shape[-1] in (1, 3):
        return data.permute(0, 3, 1, 2)
    if data.dim() == 4 and data.shape[0] in (1, 3):
        return data.permute(1, 0, 2, 3)
    raise UsageError(
        f"{source}: expected a clip of shape (T, H, W), (T, H, W, C) or (C, T, H, W) with C 1 or 3, "
        f"got {tuple(data.shape)}"
    )


def _read_frames(folder: Path) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    frames = []
    for path in sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name)
    ):
        try:
            with Image.open(path) as image:
                image = image.convert("L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB")
                channels = len(image.getbands())
                data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
                frames.append(data.view(image.height, image.width, channels))
        except (OSError, UnidentifiedImageError) as err:
            raise UsageError(f"{path}: unreadable frame ({err})") from None
    if not frames:
        raise UsageError(f"{folder}: a clip folder without frame images ({', '.join(IMAGE_SUFFIXES)})")
    if any(frame.shape != frames[0].shape for frame in frames):
        raise UsageError(f"{folder}: frames differ in size or channels")
    return _to_tchw(torch.stack(frames), folder)


def read_clip(path: str | Path) -> Tensor:
    """A clip as float ``(T, C, H, W)`` in [0, 1] (uint8 data is divided by 255).

    ``path`` is a folder of frame images (in natural name order: ``frame_2`` before ``frame_10``), a ``.npy`` or ``.pt`` tensor of shape
    ``(T, H, W)``, ``(T, H, W, C)`` or ``(C, T, H, W)`` with C 1 or 3, or a video file, which
    needs torchcodec (FFmpeg is never called directly).

    Raises:
        UsageError: For an unreadable clip, an unknown kind of file, a tensor of another shape,
            or a video file without torchcodec.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        return _read_frames(path)
    if suffix == ".npy":
        import numpy

        try:
            return _to_tchw(torch.from_numpy(numpy.load(path, allow_pickle=False)), path)
        except (ValueError, OSError, EOFError) as err:
            raise UsageError(f"{path}: not a readable .npy array ({err})") from None
    if suffix == ".pt":
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch.load raises many types for a bad or unsafe file
            raise UsageError(f"{path}: not a readable tensor file ({type(err).__name__})") from None
        if not isinstance(data, Tensor):
            raise UsageError(f"{path}: expected a tensor, found a {type(data).__name__}")
        return _to_tchw(data, path)
    if suffix in VIDEO_SUFFIXES:
        try:
            from torchcodec.decoders import VideoDecoder
        except ImportError:
            raise UsageError(
                f"{path}: reading video files needs torchcodec (pip install torchcodec); "
                "or store clips as frame folders or .npy/.pt tensors"
            ) from None
        return VideoDecoder(str(path))[:].float() / 255
    raise UsageError(f"{path}: unknown kind of clip; expected {CLIPS_LAYOUT}")


def fit_clip(clip: Tensor, frames: int, size: tuple[int, int], channels: int) -> Tensor:
    """``(T, C, H, W)`` -> ``(channels, frames, *size)``: frames sampled evenly over the clip,
    resized bilinearly, gray repeated to RGB or RGB averaged to gray."""
    index = torch.linspace(0, clip.shape[0] - 1, frames).round().long()
    clip = clip[index]
    if tuple(clip.shape[-2:]) != tuple(size):
        clip = torch.nn.functional.interpolate(
            clip, size=size, mode="bilinear", antialias=True, align_corners=False
        )
    if clip.shape[1] != channels:
        clip = clip.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
    return clip.transpose(0, 1).contiguous()


class ClipFolder(Dataset):
    """Clips read on access and fitted with :func:`fit_clip`; items are ``(clip, label)``."""

    def __init__(
        self, items: list[tuple[Path, int]], frames: int, size: tuple[int, int], channels: int
    ) -> None:
        self.items, self.frames, self.size, self.channels = items, frames, size, channels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.items[index]
        return fit_clip(read_clip(path), self.frames, self.size, self.channels), label


def _is_clip(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in (*TENSOR_SUFFIXES, *VIDEO_SUFFIXES)


def _readable(path: Path) -> bool:
    """Whether clip ``path`` can be read, checked cheaply: frame images with PIL ``verify`` (no
    decoding), a ``.npy`` header and shape, a ``.pt`` file fully, a video file for being non-empty."""
    if path.is_dir():
        from PIL import Image, UnidentifiedImageError

        frames = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        try:
            for frame in frames:
                with Image.open(frame) as image:
                    image.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            return False
        return bool(frames)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return path.stat().st_size > 0
    try:
        if path.suffix.lower() == ".npy":
            import numpy

            _to_tchw(torch.from_numpy(numpy.load(path, mmap_mode="r", allow_pickle=False)[:1].copy()), path)
        else:
            read_clip(path)
    except (UsageError, ValueError, OSError, EOFError):
        return False
    return True


def _scan_classes(folder: Path, skipped: list[str]) -> dict[str, list[Path]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UsageError(f"--data-dir {folder}: no class folders; expected {CLIPS_LAYOUT}")
    found = {}
    for path in classes:
        clips = []
        for clip in sorted(p for p in path.iterdir() if _is_clip(p) and not p.name.startswith(".")):
            if _readable(clip):
                clips.append(clip)
            else:
                skipped.append(str(clip.relative_to(folder)))
        if not clips:
            raise UsageError(f"--data-dir {path}: a class folder without clips; expected {CLIPS_LAYOUT}")
        found[path.name] = clips
    return found


def _split_by_seed(found: dict[str, list[Path]], seed: int) -> dict[str, list[tuple[Path, int]]]:
    """80 / 10 / 10 % of each class's clips (at least one for validation and test), drawn with ``seed``."""
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    generator = torch.Generator().manual_seed(seed)
    for label, clips in enumerate(found.values()):
        if len(clips) < 3:
            raise UsageError(
                f"--data-dir: class {list(found)[label]!r} has {len(clips)} clip(s); a split into "
                "train, val and test needs at least 3 (or give train/ and test/ folders)"
            )
        order = torch.randperm(len(clips), generator=generator).tolist()
        held = max(1, round(0.1 * len(clips)))
        for name, part in (
            ("val", order[:held]),
            ("test", order[held : 2 * held]),
            ("train", order[2 * held :]),
        ):
            splits[name] += [(clips[i], label) for i in part]
    return splits


def load_clip_folder(
    root: str | Path, frames: int | None = None, size: int | None = None, seed: int = 0
) -> Splits:
    """Train, validation and test sets of a folder of clips (see ``CLIPS_LAYOUT``).

    ``root`` holds one folder per class, split 80 / 10 / 10 % per class with ``seed``, or
    ``train/`` and ``test/`` (and optionally ``val/``) folders that each hold one folder per
    class; without ``val/``, a tenth of train is held out. Every clip is sampled evenly to
    ``frames`` frames and resized to ``size`` x ``size`` pixels; by default both and the channel
    count come from the first training clip.

    Every clip is checked when the folder is loaded (frames with PIL ``verify``, ``.npy``
    headers, ``.pt`` files read); unreadable ones are skipped with one warning
    (``skipped_unreadable`` in ``info``), whatever the seed.

    Raises:
        UsageError: For a missing folder, no class folders, a class folder without readable clips,
            classes that differ between train and test, too few clips to split, one class, or a
            class the training set lacks.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"--data-dir {root}: no such folder; expected {CLIPS_LAYOUT}")
    skipped: list[str] = []
    if (root / "train").is_dir() or (root / "test").is_dir():
        if not ((root / "train").is_dir() and (root / "test").is_dir()):
            raise UsageError(f"--data-dir {root}: give both train/ and test/ folders, or class folders only")
        parts = {
            name: _scan_classes(root / name, skipped)
            for name in ("train", "val", "test")
            if (root / name).is_dir()
        }
        classes = list(parts["train"])
        for name, found in parts.items():
            if list(found) != classes:
                raise UsageError(
                    f"--data-dir {root}: {name} classes {list(found)} differ from train classes {classes}"
                )
        items = {
            name: [(p, label) for label, clips in enumerate(found.values()) for p in clips]
            for name, found in parts.items()
        }
        if "val" not in items:
            order = torch.randperm(
                len(items["train"]), generator=torch.Generator().manual_seed(seed)
            ).tolist()
            held = max(1, round(0.1 * len(order)))
            items["val"] = [items["train"][i] for i in order[:held]]
            items["train"] = [items["train"][i] for i in order[held:]]
    else:
        found = _scan_classes(root, skipped)
        classes = list(found)
        items = _split_by_seed(found, seed)
    warn_skipped(root, skipped, "unreadable clips")
    classes_missing = check_classes(
        root, classes, {name: [label for _, label in items[name]] for name in ("train", "val", "test")}
    )
    first = read_clip(items["train"][0][0])
    frames = frames or first.shape[0]
    shape = (size, size) if size else (first.shape[2], first.shape[3])
    channels = first.shape[1]
    sets = (ClipFolder(items[name], frames, shape, channels) for name in ("train", "val", "test"))
    info = {
        "source": str(root),
        "frames": frames,
        "size": list(shape),
        "channels": channels,
        "skipped_unreadable": len(skipped),
        "classes_missing": classes_missing,
    }
    return Splits(*sets, classes, info)


def clip_input(path: str | Path, info: dict[str, Any]) -> Tensor:
    """One clip as a model input ``(1, C, T, H, W)``: sampled and resized as the training clips were
    (``info``: the training data's ``frames``, ``size`` and ``channels``)."""
    size = info["size"]
    shape = (size, size) if isinstance(size, int) else tuple(size)
    return fit_clip(read_clip(path), info["frames"], shape, info.get("channels", 1))[None]
