"""Pathfinder (Long Range Arena) with a 2D RecNeXt against the same network at level 0.

Trains a one-stage 2D RecNeXt (width 48, three RecConv blocks at level 4, stride 4) and the same
architecture with every RecConv at level 0 (one 5x5 depthwise conv, the small-kernel baseline),
then tests both. Without further stages the token mixer is the network's only source of
long-range context.

Data: by default an embedded Pathfinder-style task generated from --seed: two dots, two long
dashed paths and a distractor, and the class says whether the dots sit on the two ends of the
same path, which only long-range context tells (see docs/pathfinder.md). With --data-dir, an image folder in
torchvision's ImageFolder layout: DIR/train/<class>/*.png and DIR/test/<class>/*.png, with
DIR/val/<class>/ optional (otherwise 10 % of train is held out).

Writes results.json, training_curves.png, confusion_matrix.png and one checkpoint per model to
--out. Runs as is, or on several processes: torchrun --nproc_per_node=2 examples/image_pathfinder.py
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from harness import Defaults, ExampleParser, Splits, at_least, level_zero_baseline, plain_setup, run_example
from pathfinder_data import MIN_SIZE, load_image_folder, synthetic_pathfinder

MODEL = "recnext_m0"
MODEL_OPTIONS = {"widths": (48,), "depths": (3,)}
LEVELS = (4,)
DEFAULTS = Defaults(epochs=10, batch_size=32, lr=6e-3, smoke_epochs=1, smoke_batch_size=16)
SYNTHETIC_SIZES = {"full": (2816, 256, 512), "smoke": (32, 16, 16)}  # train / val / test images
DEFAULT_SIZE, SMOKE_SIZE = 64, 32


def build_parser() -> ExampleParser:
    """The example's flags: the shared ones plus ``--size``."""
    parser = ExampleParser(__doc__, DEFAULTS, out="runs/image_pathfinder")
    parser.add_argument(
        "--size",
        type=at_least(MIN_SIZE),
        help=f"pixels per side: of the embedded images (default {DEFAULT_SIZE}; {SMOKE_SIZE} with --smoke), "
        "or the size real images are resized to (default: keep)",
    )
    return parser


def load_data(args: argparse.Namespace) -> Splits:
    """The embedded task, or the image folder in ``args.data_dir``."""
    if args.data_dir is None:
        size = args.size or (SMOKE_SIZE if args.smoke else DEFAULT_SIZE)
        return synthetic_pathfinder(SYNTHETIC_SIZES["smoke" if args.smoke else "full"], size, args.seed)
    splits = load_image_folder(args.data_dir, size=args.size, seed=args.seed)
    return splits.head(4 * args.batch_size) if args.smoke else splits  # a few batches of the real data


def model_builders(in_chans: int, num_classes: int) -> dict[str, Any]:
    """``recconv``: the preset; ``baseline``: the same network with every RecConv at level 0."""
    options = {"in_chans": in_chans, "num_classes": num_classes, **MODEL_OPTIONS}
    return level_zero_baseline(MODEL, levels=LEVELS, **options)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the results (also written to ``--out/results.json``)."""
    return run_example(
        build_parser(), argv, plain_setup(f"image_pathfinder ({MODEL})", load_data, model_builders)
    )


if __name__ == "__main__":
    main(sys.argv[1:])
