"""Keyword spotting with RecConv against the same network at level 0.

Trains `recnext_audio_tiny` (2D RecNeXt on log-mel spectrograms) and the same architecture with
every RecConv at level 0 (one 5x5 depthwise conv, the small-kernel baseline), then tests both.
With `--backbone seq` the models are `recnext_seq_tiny`: RecConv1d over time with the 40 mel
bands as channels.

Data: by default an embedded synthetic task generated from --seed, where only long-range
context decides the class (see docs/audio.md); with --data-dir, a folder in the Google Speech
Commands layout (add --words yes,no,... for the 12-class protocol).

Writes results.json, training_curves.png, confusion_matrix.png and one checkpoint per model to
--out. Runs as is, or on several processes: torchrun --nproc_per_node=2 examples/audio_keywords.py
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from audio_data import (
    SPEECH_AUGMENTATION,
    SYNTHETIC_AUGMENTATION,
    LogMelFrontEnd,
    background_crops,
    load_speech_commands,
    synthetic_keywords,
)
from harness import (
    Defaults,
    ExampleParser,
    Runtime,
    Splits,
    UsageError,
    at_least,
    level_zero_baseline,
    run_example,
)
from torch import nn

DEFAULTS = Defaults(epochs=8, batch_size=64, lr=3e-3, smoke_epochs=1, smoke_batch_size=16)
BACKBONES = {"2d": "recnext_audio_tiny", "seq": "recnext_seq_tiny"}
SYNTHETIC_TRAIN_PER_CLASS = 600
SYNTHETIC_EVAL_PER_CLASS = {"full": (100, 200), "smoke": (4, 4)}  # validation, test clips per class


def _words(text: str) -> list[str]:
    words = [word.strip() for word in text.split(",") if word.strip()]
    if not words or len(set(words)) != len(words):
        raise argparse.ArgumentTypeError(
            f"expected distinct comma-separated words, e.g. yes,no,up, got {text!r}"
        )
    return words


def build_parser() -> ExampleParser:
    """The example's flags: the shared ones plus ``--backbone`` and ``--words``."""
    parser = ExampleParser(__doc__, DEFAULTS, out="runs/audio_keywords")
    parser.add_argument(
        "--backbone",
        choices=sorted(BACKBONES),
        default="2d",
        help="2D RecNeXt on (1, mels, frames) or 1D over frames (default 2d)",
    )
    parser.add_argument(
        "--words",
        type=_words,
        help="with --data-dir: these words, _unknown_ and _silence_ (12-class protocol)",
    )
    parser.add_argument(
        "--clips-per-class",
        type=at_least(1),
        help=f"embedded data: training clips per class (default {SYNTHETIC_TRAIN_PER_CLASS}; 12 with --smoke)",
    )
    return parser


def load_data(args: argparse.Namespace) -> Splits:
    """The synthetic task, or the Speech Commands folder in ``args.data_dir``."""
    if args.data_dir is None:
        train = args.clips_per_class or (12 if args.smoke else SYNTHETIC_TRAIN_PER_CLASS)
        val, test = SYNTHETIC_EVAL_PER_CLASS["smoke" if args.smoke else "full"]
        return synthetic_keywords(train, val, test, seed=args.seed)
    splits = load_speech_commands(args.data_dir, args.words, seed=args.seed)
    return splits.head(4 * args.batch_size) if args.smoke else splits  # a few batches of the real data


def model_builders(backbone: str, num_classes: int) -> dict[str, Any]:
    """``recconv``: the preset; ``baseline``: the same network with every RecConv at level 0."""
    name = BACKBONES[backbone]
    options: dict[str, Any] = {"num_classes": num_classes, **({"in_chans": 40} if backbone == "seq" else {})}
    return level_zero_baseline(name, **options)


def setup(args: argparse.Namespace, runtime: Runtime) -> tuple[str, Splits, dict[str, Any], nn.Module]:
    """The run's title, data, models and log-mel front end."""
    if args.words is not None and args.data_dir is None:
        raise UsageError("--words needs --data-dir (the embedded data has its own classes)")
    with warnings.catch_warnings():
        warnings.simplefilter("default" if runtime.is_main else "ignore")  # one warning, from rank 0
        splits = load_data(args)
    augmentation = SYNTHETIC_AUGMENTATION if args.data_dir is None else SPEECH_AUGMENTATION
    noise = background_crops(splits, seed=args.seed)
    front_end = LogMelFrontEnd(augmentation, sequence=args.backbone == "seq", noise=noise)
    builders = model_builders(args.backbone, len(splits.classes))
    return f"audio_keywords ({BACKBONES[args.backbone]})", splits, builders, front_end


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the results (also written to ``--out/results.json``)."""
    return run_example(build_parser(), argv, setup)


if __name__ == "__main__":
    main(sys.argv[1:])
