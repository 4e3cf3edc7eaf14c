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
from functools import partial
from typing import Any

from audio_data import (
    SPEECH_AUGMENTATION,
    SYNTHETIC_AUGMENTATION,
    LogMelFrontEnd,
    background_crops,
    load_speech_commands,
    synthetic_keywords,
)
from harness import Defaults, ExampleParser, Splits, UsageError, distributed, run

from recconv.models import PRESETS, create_model

DEFAULTS = Defaults(epochs=8, batch_size=64, lr=3e-3, smoke_epochs=1, smoke_batch_size=16)
BACKBONES = {"2d": "recnext_audio_tiny", "seq": "recnext_seq_tiny"}
SYNTHETIC_TRAIN_PER_CLASS = 600
SYNTHETIC_EVAL_PER_CLASS = {"full": (100, 200), "smoke": (4, 4)}  # validation, test clips per class


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an int > 0, got {text!r}")
    return int(text)


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
        type=_positive_int,
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
    if args.smoke:  # a few batches of the real data
        splits = Splits(
            *(_head(d, 4 * args.batch_size) for d in (splits.train, splits.val, splits.test)),
            splits.classes,
            splits.info,
        )
    return splits


def _head(dataset: Any, count: int) -> Any:
    from torch.utils.data import Subset

    return Subset(dataset, range(min(count, len(dataset))))


def model_builders(backbone: str, num_classes: int) -> dict[str, Any]:
    """``recconv``: the preset; ``baseline``: the same network with every RecConv at level 0."""
    name = BACKBONES[backbone]
    options: dict[str, Any] = {"num_classes": num_classes}
    if backbone == "seq":
        options["in_chans"] = 40
    stages = len(PRESETS[name].config["widths"])
    return {
        "recconv": partial(create_model, name, **options),
        "baseline": partial(create_model, name, levels=(0,) * stages, **options),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the results (also written to ``--out/results.json``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.words is not None and args.data_dir is None:
        parser.error("--words needs --data-dir (the embedded data has its own classes)")
    with distributed(args.device) as runtime:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default" if runtime.is_main else "ignore")  # one warning, from rank 0
                splits = load_data(args)
            augmentation = SYNTHETIC_AUGMENTATION if args.data_dir is None else SPEECH_AUGMENTATION
            noise = background_crops(splits, seed=args.seed)
            front_end = LogMelFrontEnd(augmentation, sequence=args.backbone == "seq", noise=noise)
            builders = model_builders(args.backbone, len(splits.classes))
            return run(
                f"audio_keywords ({BACKBONES[args.backbone]})", args, runtime, splits, builders, front_end
            )
        except UsageError as err:
            parser.error(str(err))


if __name__ == "__main__":
    main(sys.argv[1:])
