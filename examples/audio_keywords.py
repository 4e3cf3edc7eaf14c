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
import wave
from pathlib import Path
from typing import Any

from torch import Tensor

if __package__:  # python -m examples.audio_keywords, or imported as examples.audio_keywords
    from .kit.audio_data import (
        SAMPLE_RATE,
        SPEECH_AUGMENTATION,
        SYNTHETIC_AUGMENTATION,
        LogMelFrontEnd,
        background_crops,
        fit_length,
        load_speech_commands,
        read_wav,
        synthetic_keywords,
    )
    from .kit.cli import Defaults, Example, at_least
    from .kit.data import Splits, UsageError
else:  # python examples/audio_keywords.py: this folder is the first entry of sys.path
    from kit.audio_data import (
        SAMPLE_RATE,
        SPEECH_AUGMENTATION,
        SYNTHETIC_AUGMENTATION,
        LogMelFrontEnd,
        background_crops,
        fit_length,
        load_speech_commands,
        read_wav,
        synthetic_keywords,
    )
    from kit.cli import Defaults, Example, at_least
    from kit.data import Splits, UsageError

BACKBONES = {"2d": "recnext_audio_tiny", "seq": "recnext_seq_tiny"}
SYNTHETIC_TRAIN_PER_CLASS = 600
SYNTHETIC_EVAL_PER_CLASS = {"full": (100, 200), "smoke": (4, 4)}  # validation, test clips per class
DEFAULTS = Defaults(epochs=8, batch_size=64, lr=3e-3, embedded_train=5 * SYNTHETIC_TRAIN_PER_CLASS)


def _words(text: str) -> list[str]:
    words = [word.strip() for word in text.split(",") if word.strip()]
    if not words or len(set(words)) != len(words):
        raise argparse.ArgumentTypeError(
            f"expected distinct comma-separated words, e.g. yes,no,up, got {text!r}"
        )
    return words


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--backbone``, ``--words`` and ``--clips-per-class``."""
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


def embedded(args: argparse.Namespace) -> Splits:
    """The synthetic task."""
    train = args.clips_per_class or (12 if args.smoke else SYNTHETIC_TRAIN_PER_CLASS)
    val, test = SYNTHETIC_EVAL_PER_CLASS["smoke" if args.smoke else "full"]
    return synthetic_keywords(train, val, test, seed=args.seed)


def folder(args: argparse.Namespace) -> Splits:
    """The Speech Commands folder in ``args.data_dir``."""
    return load_speech_commands(args.data_dir, args.words, seed=args.seed)


def front_end(args: argparse.Namespace, splits: Splits) -> tuple[LogMelFrontEnd, dict[str, Any]]:
    """Log-mel features, augmented as the data needs, and the settings that rebuild them."""
    augmentation = SYNTHETIC_AUGMENTATION if args.data_dir is None else SPEECH_AUGMENTATION
    sequence = args.backbone == "seq"
    transform = LogMelFrontEnd(
        augmentation, sequence=sequence, noise=background_crops(splits, seed=args.seed)
    )
    return transform, {"kind": "log_mel", "sequence": sequence, "n_mels": transform.n_mels}


def read(path: Path, config: dict[str, Any]) -> Tensor:
    """One 16 kHz WAV file as the model's input ``(1, ...)``: its first second, as log-mel features."""
    try:
        samples, rate = read_wav(path)
    except (wave.Error, EOFError) as err:
        raise UsageError(f"not a readable PCM WAV file ({err})") from None
    if rate != SAMPLE_RATE:
        raise UsageError(f"sampled at {rate} Hz; the model expects {SAMPLE_RATE} Hz")
    settings = config["front_end"]
    front_end = LogMelFrontEnd(
        SYNTHETIC_AUGMENTATION, sequence=settings["sequence"], n_mels=settings["n_mels"]
    )
    return front_end.eval()(fit_length(samples)[None])  # augmentation settings do not matter in eval()


EXAMPLE = Example(
    name="audio_keywords",
    description=__doc__,
    defaults=DEFAULTS,
    model=lambda args: (BACKBONES[args.backbone], {}),
    embedded=embedded,
    folder=folder,
    add_flags=add_flags,
    embedded_only=("--clips-per-class",),
    folder_only=("--words",),
    front_end=front_end,
    read=read,
)

if __name__ == "__main__":
    EXAMPLE.main()
