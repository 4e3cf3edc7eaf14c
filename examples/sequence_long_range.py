"""Long-range sequence classification with RecConv1d against the same network at level 0.

Trains `recnext_seq_tiny` (1D RecNeXt) and the same architecture with every RecConv at level 0
(one 5-wide depthwise conv, the small-kernel baseline), then tests both.

Data: by default InceptionTime's pattern-position task generated from --seed: noise series of
--length samples with a bump at 10 % or 65 % of the length, where only a receptive field that
reaches from the bump to the start tells the classes apart (see docs/sequence.md). --task adding
gives the adding problem instead. With --data-dir, a folder in the UCR archive's layout:
<name>_TRAIN.tsv and <name>_TEST.tsv (or .csv / .npy), the label in the first column.

Writes results.json, training_curves.png, confusion_matrix.png and one checkpoint per model to
--out. Runs as is, or on several processes: torchrun --nproc_per_node=2 examples/sequence_long_range.py
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from harness import (
    Defaults,
    ExampleParser,
    Splits,
    UsageError,
    at_least,
    level_zero_baseline,
    plain_setup,
    run_example,
)
from sequence_data import TASKS, load_ucr, synthetic_sequences

MODEL = "recnext_seq_tiny"
DEFAULTS = Defaults(epochs=6, batch_size=32, lr=3e-3, smoke_epochs=1, smoke_batch_size=16)
SYNTHETIC_SIZES = {"full": (1024, 256, 256), "smoke": (32, 16, 16)}  # train / val / test series
DEFAULT_LENGTH, SMOKE_LENGTH = 2048, 512


def build_parser() -> ExampleParser:
    """The example's flags: the shared ones plus ``--task`` and ``--length``."""
    parser = ExampleParser(__doc__, DEFAULTS, out="runs/sequence_long_range")
    parser.add_argument("--task", choices=TASKS, help="embedded task (default position)")
    parser.add_argument(
        "--length",
        type=at_least(64),
        help=f"samples per embedded series (default {DEFAULT_LENGTH}; {SMOKE_LENGTH} with --smoke)",
    )
    return parser


def load_data(args: argparse.Namespace) -> Splits:
    """The embedded task, or the UCR-style folder in ``args.data_dir``."""
    if args.data_dir is not None and (args.length is not None or args.task is not None):
        raise UsageError("--task and --length choose the embedded data; they do not apply with --data-dir")
    if args.data_dir is None:
        length = args.length or (SMOKE_LENGTH if args.smoke else DEFAULT_LENGTH)
        return synthetic_sequences(
            args.task or "position", SYNTHETIC_SIZES["smoke" if args.smoke else "full"], length, args.seed
        )
    splits = load_ucr(args.data_dir, seed=args.seed)
    return splits.head(4 * args.batch_size) if args.smoke else splits  # a few batches of the real data


def model_builders(in_chans: int, num_classes: int) -> dict[str, Any]:
    """``recconv``: the preset; ``baseline``: the same network with every RecConv at level 0."""
    options = {"in_chans": in_chans, "num_classes": num_classes}
    return level_zero_baseline(MODEL, **options)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the results (also written to ``--out/results.json``)."""
    return run_example(
        build_parser(), argv, plain_setup(f"sequence_long_range ({MODEL})", load_data, model_builders)
    )


if __name__ == "__main__":
    main(sys.argv[1:])
