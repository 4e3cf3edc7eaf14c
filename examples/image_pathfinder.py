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

if __package__:  # python -m examples.image_pathfinder, or imported as examples.image_pathfinder
    from .kit.cli import Defaults, Example, at_least
    from .kit.data import Splits
    from .kit.pathfinder_data import MIN_SIZE, image_input, load_image_folder, synthetic_pathfinder
else:  # python examples/image_pathfinder.py: this folder is the first entry of sys.path
    from kit.cli import Defaults, Example, at_least
    from kit.data import Splits
    from kit.pathfinder_data import MIN_SIZE, image_input, load_image_folder, synthetic_pathfinder

MODEL = "recnext_m0"
MODEL_OPTIONS = {"widths": (48,), "depths": (3,), "levels": (4,)}
SYNTHETIC_SIZES = {"full": (2816, 256, 512), "smoke": (32, 16, 16)}  # train / val / test images
DEFAULTS = Defaults(epochs=10, batch_size=32, lr=6e-3, embedded_train=SYNTHETIC_SIZES["full"][0])
DEFAULT_SIZE, SMOKE_SIZE = 64, 32


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--size``."""
    parser.add_argument(
        "--size",
        type=at_least(MIN_SIZE),
        help=f"pixels per side: of the embedded images (default {DEFAULT_SIZE}; {SMOKE_SIZE} with --smoke), "
        "or the size real images are resized to (default: keep)",
    )


def embedded(args: argparse.Namespace) -> Splits:
    """The embedded task."""
    size = args.size or (SMOKE_SIZE if args.smoke else DEFAULT_SIZE)
    return synthetic_pathfinder(SYNTHETIC_SIZES["smoke" if args.smoke else "full"], size, args.seed)


EXAMPLE = Example(
    name="image_pathfinder",
    description=__doc__,
    defaults=DEFAULTS,
    model=lambda args: (MODEL, MODEL_OPTIONS),
    embedded=embedded,
    folder=lambda args: load_image_folder(args.data_dir, size=args.size, seed=args.seed),
    add_flags=add_flags,
    read=lambda path, config: image_input(path, config["data"]),
)

if __name__ == "__main__":
    EXAMPLE.main()
