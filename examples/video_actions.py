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
import sys
from collections.abc import Sequence
from typing import Any

from harness import Defaults, ExampleParser, Splits, at_least, level_zero_baseline, plain_setup, run_example
from video_data import load_clip_folder, synthetic_clips

MODEL = "recnext_video_tiny"
DEFAULTS = Defaults(epochs=10, batch_size=16, lr=3e-3, smoke_epochs=1, smoke_batch_size=8)
SYNTHETIC_SIZES = {"full": (512, 256, 256), "smoke": (16, 8, 8)}  # train / val / test clips
DEFAULT_SHAPE, SMOKE_SHAPE = (16, 32), (8, 16)  # frames, pixels per side


def build_parser() -> ExampleParser:
    """The example's flags: the shared ones plus ``--frames`` and ``--size``."""
    parser = ExampleParser(__doc__, DEFAULTS, out="runs/video_actions")
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
    return parser


def load_data(args: argparse.Namespace) -> Splits:
    """The embedded task, or the clip folder in ``args.data_dir``."""
    if args.data_dir is None:
        frames, size = SMOKE_SHAPE if args.smoke else DEFAULT_SHAPE
        sizes = SYNTHETIC_SIZES["smoke" if args.smoke else "full"]
        return synthetic_clips(sizes, args.frames or frames, args.size or size, args.seed)
    splits = load_clip_folder(args.data_dir, frames=args.frames, size=args.size, seed=args.seed)
    return splits.head(4 * args.batch_size) if args.smoke else splits  # a few batches of the real data


def model_builders(in_chans: int, num_classes: int) -> dict[str, Any]:
    """``recconv``: the preset; ``baseline``: the same network with every RecConv at level 0."""
    options = {"in_chans": in_chans, "num_classes": num_classes, "widths": (32,), "depths": (2,)}
    return level_zero_baseline(MODEL, levels=(4,), **options)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the results (also written to ``--out/results.json``)."""
    return run_example(
        build_parser(), argv, plain_setup(f"video_actions ({MODEL})", load_data, model_builders)
    )


if __name__ == "__main__":
    main(sys.argv[1:])
