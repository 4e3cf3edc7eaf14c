"""Trajectory recognition in video with RecConv3d against the same network at level 0.

Trains `recnext_video_tiny` cut to one stage (width 32, two RecConv3d blocks at level 4, temporal
stride 1) and the same architecture with every RecConv at level 0 (one 3x5x5 depthwise conv, the
small-kernel baseline), then tests both.

Data: by default an embedded task in the spirit of the Temporal Shape dataset, generated from
--seed: a dot moves along a circle, arc, spiral, line, zigzag, square, S-curve or figure eight,
with random start, size, speed, direction and distractors, and the class is the trajectory
alone, which only long-range context tells (see docs/video.md). With --data-dir, one folder per
class of clips: frame-image folders or .npy/.pt tensors (video files only with torchcodec).

Writes results.json, training_curves.png, confusion_matrix.png and one checkpoint per model to
--out. Runs as is, or on several processes: torchrun --nproc_per_node=2 examples/video_actions.py
"""

from __future__ import annotations

import argparse

if __package__:  # python -m examples.video_actions, or imported as examples.video_actions
    from .kit.cli import Defaults, Example, at_least
    from .kit.data import Splits
    from .kit.video_data import clip_input, load_clip_folder, synthetic_clips
else:  # python examples/video_actions.py: this folder is the first entry of sys.path
    from kit.cli import Defaults, Example, at_least
    from kit.data import Splits
    from kit.video_data import clip_input, load_clip_folder, synthetic_clips

MODEL = "recnext_video_tiny"
MODEL_OPTIONS = {"widths": (32,), "depths": (2,), "levels": (4,)}
SYNTHETIC_SIZES = {"full": (512, 256, 256), "smoke": (16, 8, 8)}  # train / val / test clips
DEFAULTS = Defaults(
    epochs=10, batch_size=16, lr=3e-3, embedded_train=SYNTHETIC_SIZES["full"][0], smoke_batch_size=8
)
DEFAULT_SHAPE, SMOKE_SHAPE = (16, 32), (8, 16)  # frames, pixels per side


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--frames`` and ``--size``."""
    parser.add_argument(
        "--frames",
        type=at_least(8),
        help=f"frames per clip: embedded clips have this many (default {DEFAULT_SHAPE[0]}), "
        "real clips are sampled evenly to it (default: the first clip's)",
    )
    parser.add_argument(
        "--size",
        type=at_least(16),
        help=f"pixels per side: of embedded clips (default {DEFAULT_SHAPE[1]}), "
        "real frames are resized to it (default: keep)",
    )


def embedded(args: argparse.Namespace) -> Splits:
    """The embedded task."""
    frames, size = SMOKE_SHAPE if args.smoke else DEFAULT_SHAPE
    sizes = SYNTHETIC_SIZES["smoke" if args.smoke else "full"]
    return synthetic_clips(sizes, args.frames or frames, args.size or size, args.seed)


EXAMPLE = Example(
    name="video_actions",
    description=__doc__,
    defaults=DEFAULTS,
    model=lambda args: (MODEL, MODEL_OPTIONS),
    embedded=embedded,
    folder=lambda args: load_clip_folder(args.data_dir, frames=args.frames, size=args.size, seed=args.seed),
    add_flags=add_flags,
    read=lambda path, config: clip_input(path, config["data"]),
)

if __name__ == "__main__":
    EXAMPLE.main()
