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

if __package__:  # python -m examples.sequence_long_range, or imported as examples.sequence_long_range
    from .kit.cli import Defaults, Example, at_least
    from .kit.data import Splits
    from .kit.sequence_data import TASKS, load_ucr, series_inputs, synthetic_sequences
else:  # python examples/sequence_long_range.py: this folder is the first entry of sys.path
    from kit.cli import Defaults, Example, at_least
    from kit.data import Splits
    from kit.sequence_data import TASKS, load_ucr, series_inputs, synthetic_sequences

MODEL = "recnext_seq_tiny"
SYNTHETIC_SIZES = {"full": (1024, 256, 256), "smoke": (32, 16, 16)}  # train / val / test series
DEFAULTS = Defaults(epochs=6, batch_size=32, lr=3e-3, embedded_train=SYNTHETIC_SIZES["full"][0])
DEFAULT_LENGTH, SMOKE_LENGTH = 2048, 512


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--task`` and ``--length``."""
    parser.add_argument("--task", choices=TASKS, help="embedded task (default position)")
    parser.add_argument(
        "--length",
        type=at_least(64),
        help=f"samples per embedded series (default {DEFAULT_LENGTH}; {SMOKE_LENGTH} with --smoke)",
    )


def embedded(args: argparse.Namespace) -> Splits:
    """The embedded task."""
    length = args.length or (SMOKE_LENGTH if args.smoke else DEFAULT_LENGTH)
    return synthetic_sequences(
        args.task or "position", SYNTHETIC_SIZES["smoke" if args.smoke else "full"], length, args.seed
    )


EXAMPLE = Example(
    name="sequence_long_range",
    description=__doc__,
    defaults=DEFAULTS,
    model=lambda args: (MODEL, {}),
    embedded=embedded,
    folder=lambda args: load_ucr(args.data_dir, seed=args.seed),
    add_flags=add_flags,
    embedded_only=("--task", "--length"),
    read=lambda path, config: series_inputs(path, config["data"]),
)

if __name__ == "__main__":
    EXAMPLE.main()
