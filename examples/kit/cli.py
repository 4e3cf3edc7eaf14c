"""One command line for every example: an :class:`Example` record says what is specific to it
(model, budget, data loaders, extra flags, input front end) and :func:`main` does the rest."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import harness, run_folder
from .data import Splits, UsageError


@dataclass(frozen=True)
class Defaults:
    """An example's default training budget, and the one ``--smoke`` uses.

    Without ``--epochs`` a run takes at least as many optimizer steps as the default run on the
    embedded data (``epochs`` over ``embedded_train`` examples in batches of ``batch_size``), so a
    small ``--data-dir`` gets more epochs, not a dozen steps; the embedded data get ``epochs``.
    """

    epochs: int
    batch_size: int
    lr: float
    embedded_train: int
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    smoke_epochs: int = 1
    smoke_batch_size: int = 16

    @property
    def min_steps(self) -> int:
        return self.epochs * (self.embedded_train // self.batch_size)


FEW_PER_CLASS = 50  # fewer training examples per class than this: warn that results will be noisy


def _no_flags(parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class Example:
    """What one example is; everything else is shared.

    Attributes:
        name: The example's name (``runs/<name>`` is its default ``--out``).
        description: Its ``--help`` text (the script's docstring).
        defaults: Its training budget.
        model: ``args -> (preset, options)``; ``in_chans`` and ``num_classes`` come from the data.
        embedded: ``args -> Splits`` of the embedded data.
        folder: ``args -> Splits`` of ``args.data_dir``.
        add_flags: Adds the example's own flags to the parser.
        embedded_only: Its flags that only choose embedded data (refused with ``--data-dir``).
        folder_only: Its flags that only apply to a ``--data-dir``.
        front_end: ``(args, splits) -> (transform, settings)``: an input transform run on the
            device, and the settings that rebuild it (saved with the checkpoints); or ``None``.
        read: ``(file, pretrained_cfg) -> inputs (N, ...)``: what ``predict`` feeds the model
            for one file of new data (see :func:`recconv.models.load_model`).
    """

    name: str
    description: str
    defaults: Defaults
    model: Callable[[argparse.Namespace], tuple[str, dict[str, Any]]]
    embedded: Callable[[argparse.Namespace], Splits]
    folder: Callable[[argparse.Namespace], Splits]
    add_flags: Callable[[argparse.ArgumentParser], None] = _no_flags
    embedded_only: tuple[str, ...] = ()
    folder_only: tuple[str, ...] = ()
    front_end: Callable[[argparse.Namespace, Splits], tuple[nn.Module, dict[str, Any]]] | None = None
    read: Callable[[Path, dict[str, Any]], torch.Tensor] | None = None

    def parser(self) -> ExampleParser:
        """The example's argument parser: the shared flags and its own."""
        parser = ExampleParser(self.description, self.defaults, out=f"runs/{self.name}")
        self.add_flags(parser)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> dict[str, Any]:
        """Run the example with ``argv``; returns the results (also in ``--out/results.json``)."""
        return main(self, argv)


def _number(kind: type, minimum: float, exclusive: bool) -> Callable[[str], Any]:
    """An argparse type: a ``kind`` above (``exclusive``) or at least ``minimum``."""
    bound = f"{'>' if exclusive else '>='} {minimum:g}"

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
            raise argparse.ArgumentTypeError(
                f"expected {'an' if kind is int else 'a'} {kind.__name__} {bound}, got {text!r}"
            )
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its own messages
    return convert


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for an int of at least ``minimum``, with the shared flags' error message."""
    return _number(int, minimum, exclusive=False)


def _mixers(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    unknown = [name for name in names if name not in harness.MIXERS]
    if unknown or len(set(names)) != len(names):
        problem = f"unknown {', '.join(map(repr, unknown))}" if unknown else "a name repeats"
        raise argparse.ArgumentTypeError(
            f"expected distinct comma-separated token mixers from {', '.join(harness.MIXERS)}; {problem} in {text!r}"
        )
    return names


def _device(text: str) -> str:
    if text == "auto":
        return text
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}"
        ) from None
    return text


class ExampleParser(argparse.ArgumentParser):
    """An argument parser with the flags every example shares; examples add their own.

    ``parse_args`` fills the batch size from :class:`Defaults` (an explicit ``--batch-size`` wins
    over ``--smoke``'s, which wins over the full run's) and ``--smoke``'s epochs; without
    ``--epochs`` or ``--smoke`` the epochs follow the data (:func:`choose_budget`).

    Args:
        description: The example's help text.
        defaults: Its training budget (shown in ``--help``).
        out: The default ``--out`` folder.
    """

    def __init__(self, description: str, defaults: Defaults, out: str) -> None:
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        self.budget = defaults
        positive_int, positive_float = _number(int, 0, exclusive=True), _number(float, 0, exclusive=True)
        shared = self.add_argument_group("shared training flags")
        shared.add_argument(
            "--data-dir",
            type=Path,
            help="real data in the layout the example describes (default: its embedded data)",
        )
        shared.add_argument(
            "--epochs",
            type=positive_int,
            help=f"training epochs (default: {defaults.epochs} on the embedded data; on other data enough for "
            f"{defaults.min_steps} optimizer steps, at least {defaults.epochs}; {defaults.smoke_epochs} with --smoke)",
        )
        shared.add_argument(
            "--batch-size",
            type=positive_int,
            help=f"global batch size, split over torchrun processes (default {defaults.batch_size}, or the "
            f"training set if smaller; {defaults.smoke_batch_size} with --smoke)",
        )
        shared.add_argument(
            "--lr",
            type=positive_float,
            default=defaults.lr,
            help="peak AdamW learning rate (default %(default)s)",
        )
        shared.add_argument(
            "--seed",
            type=int,
            default=0,
            help="seed of data, initialisation, shuffling and augmentation (default %(default)s)",
        )
        shared.add_argument(
            "--out",
            type=Path,
            default=Path(out),
            help="folder for results.json, plots and checkpoints (default %(default)s); "
            "one that holds a run needs --resume or --overwrite",
        )
        shared.add_argument(
            "--resume", action="store_true", help="continue the run in --out (refused if its settings differ)"
        )
        shared.add_argument(
            "--overwrite", action="store_true", help="replace the run in --out (its results and checkpoints)"
        )
        shared.add_argument(
            "--smoke", action="store_true", help="a tiny run that checks that everything works"
        )
        shared.add_argument(
            "--device",
            type=_device,
            default="auto",
            help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'",
        )
        shared.add_argument(
            "--mixer",
            type=_mixers,
            default=harness.DEFAULT_MIXERS,
            metavar="NAMES",
            help="comma-separated token mixers to train, one model each, in the same network and budget: "
            f"{', '.join(harness.MIXERS)} (see recconv.models.mixers; default {','.join(harness.DEFAULT_MIXERS)})",
        )
        shared.add_argument(
            "--workers",
            type=_number(int, 0, exclusive=False),
            default=0,
            help="data-loading processes (default 0)",
        )
        speed = self.add_argument_group("speed flags (as in timm's train.py)")
        speed.add_argument(
            "--amp",
            choices=("bf16", "fp16"),
            help="mixed precision with torch.autocast: bf16 (CPU or GPU) or fp16 (CUDA only, with a GradScaler)",
        )
        speed.add_argument("--compile", action="store_true", help="run the model through torch.compile")
        speed.add_argument(
            "--channels-last", action="store_true", help="channels-last memory format for 2D and 3D models"
        )

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        parsed.epochs_given, parsed.batch_size_given = (
            parsed.epochs is not None,
            parsed.batch_size is not None,
        )
        if parsed.epochs is None:
            parsed.epochs = self.budget.smoke_epochs if parsed.smoke else self.budget.epochs
        if parsed.batch_size is None:
            parsed.batch_size = self.budget.smoke_batch_size if parsed.smoke else self.budget.batch_size
        parsed.weight_decay, parsed.warmup_epochs = self.budget.weight_decay, self.budget.warmup_epochs
        parsed.budget = None
        if parsed.resume and parsed.overwrite:
            self.error("--resume continues the run in --out and --overwrite replaces it; give one")
        if parsed.device.startswith("cuda") and not torch.cuda.is_available():
            self.error(f"--device {parsed.device}: CUDA is not available here; use --device cpu")
        on_cuda = parsed.device.startswith("cuda") or (parsed.device == "auto" and torch.cuda.is_available())
        if parsed.amp == "fp16" and not on_cuda:
            self.error("--amp fp16: float16 autocast and its GradScaler need CUDA; use --amp bf16 on the CPU")
        return parsed


def choose_budget(
    defaults: Defaults, args: argparse.Namespace, train_size: int, world_size: int
) -> str | None:
    """Fit ``args.batch_size`` and ``args.epochs`` to a training set of ``train_size`` examples,
    unless given on the command line; returns why, or ``None`` when the defaults stand.

    The batch shrinks to the training set when that is smaller (so a tiny ``--data-dir`` trains
    at all). The epochs grow until the run takes ``defaults.min_steps`` optimizer steps, the
    default run's on the embedded data, so that the default budget means the same on any data.

    Example:
        >>> defaults = Defaults(epochs=6, batch_size=32, lr=3e-3, embedded_train=1024)
        >>> args = argparse.Namespace(epochs=6, batch_size=32, epochs_given=False, batch_size_given=False, smoke=False)
        >>> choose_budget(defaults, args, 1024, 1) is None, args.epochs
        (True, 6)
        >>> print(choose_budget(defaults, args, 45, 1))
        192 epochs of 1 step: at least 192 optimizer steps, as the default run on the embedded data (6 epochs x 32 steps)
    """
    reasons = []
    per_process = train_size // world_size
    if not args.batch_size_given and 0 < per_process * world_size < args.batch_size:
        args.batch_size = per_process * world_size
        reasons.append(f"batch {args.batch_size}: the whole training set")
    steps = per_process // max(args.batch_size // world_size, 1)
    if not args.epochs_given and not args.smoke and steps:
        epochs = max(defaults.epochs, math.ceil(defaults.min_steps / steps))
        if epochs != args.epochs:
            args.epochs = epochs
            embedded = defaults.embedded_train // defaults.batch_size
            reasons.append(
                f"{epochs} epochs of {steps} step{'s' * (steps > 1)}: at least {defaults.min_steps} optimizer steps, "
                f"as the default run on the embedded data ({defaults.epochs} epochs x {embedded} steps)"
            )
    return "; ".join(reasons) or None


def _check_flag_sources(example: Example, parser: ExampleParser, args: argparse.Namespace) -> None:
    def given(flags: tuple[str, ...]) -> list[str]:
        return [flag for flag in flags if getattr(args, flag.lstrip("-").replace("-", "_")) is not None]

    if args.data_dir is not None and given(example.embedded_only):
        flags = given(example.embedded_only)
        parser.error(
            f"{' and '.join(flags)} {'chooses' if len(flags) == 1 else 'choose'} the embedded data; "
            f"{'it does' if len(flags) == 1 else 'they do'} not apply with --data-dir"
        )
    if args.data_dir is None and given(example.folder_only):
        parser.error(
            f"{' and '.join(given(example.folder_only))} needs --data-dir (the embedded data has its own classes)"
        )


def load_splits(example: Example, args: argparse.Namespace, runtime: harness.Runtime) -> Splits:
    """The run's data: embedded, or ``--data-dir`` (its first few batches with ``--smoke``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("default" if runtime.is_main else "ignore")  # one warning, from rank 0
        if args.data_dir is None:
            return example.embedded(args)
        splits = example.folder(args)
    return splits.head(4 * args.batch_size) if args.smoke else splits  # a few batches of the real data


def _warn_if_few(splits: Splits, runtime: harness.Runtime) -> None:
    per_class = len(splits.train) / len(splits.classes)
    if per_class < FEW_PER_CLASS and runtime.is_main:
        warnings.warn(
            f"only {len(splits.train)} training examples for {len(splits.classes)} classes "
            f"({per_class:.0f} per class) and {len(splits.val)} for validation: too few for these models to "
            "learn reliably; expect results that move with --seed",
            UserWarning,
            stacklevel=3,
        )


def main(example: Example, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """An example's command line: parse ``argv``, check ``--out``, start the processes, load the
    data, fit the budget to it, build the models and :func:`examples.kit.harness.run` them. A
    :class:`UsageError` on the way is reported like a bad flag.

    Returns:
        The results (the content of ``results.json``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict"]:
        return predict(example, argv[1:])
    parser = example.parser()
    args = parser.parse_args(argv)
    _check_flag_sources(example, parser, args)
    with harness.distributed(args.device) as runtime:
        try:
            run_folder.check_out(args.out, args.mixer, resume=args.resume, overwrite=args.overwrite)
            splits = load_splits(example, args, runtime)
            args.budget = choose_budget(example.defaults, args, len(splits.train), runtime.world_size)
            if args.budget:
                harness.log(runtime, f"budget: {args.budget} (--epochs and --batch-size set it yourself)")
            if args.data_dir is not None and not args.smoke:
                _warn_if_few(splits, runtime)
            transform, settings = example.front_end(args, splits) if example.front_end else (None, {})
            in_chans = harness.model_input(splits, runtime, transform).shape[1]
            preset, options = example.model(args)
            models = harness.mixer_models(
                preset, args.mixer, in_chans=in_chans, num_classes=len(splits.classes), **options
            )
            metadata = {"example": example.name, "front_end": settings, "data": splits.info}
            return harness.run(
                f"{example.name} ({preset})", args, runtime, splits, models, transform, metadata
            )
        except UsageError as err:
            parser.error(str(err))


def predict(example: Example, argv: Sequence[str]) -> dict[str, Any]:
    """``<example>.py predict CHECKPOINT FILES... [--top K]``: print the top classes the trained
    model gives each file; the checkpoint alone rebuilds the model
    (:func:`recconv.models.load_model`). Returns ``{file: [(class, probability), ...]}``."""
    from recconv.models import load_model

    parser = argparse.ArgumentParser(
        prog=f"{example.name}.py predict", description="Top classes of a trained example model for new files."
    )
    parser.add_argument(
        "checkpoint", type=Path, help="a checkpoint the example wrote, e.g. runs/NAME/recconv.pt"
    )
    parser.add_argument(
        "files", type=Path, nargs="+", help="new data, one example (or one file of them) each"
    )
    parser.add_argument("--top", type=at_least(1), default=3, help="classes shown per input (default 3)")
    args = parser.parse_args(argv)
    if example.read is None:
        parser.error(f"{example.name} has no predict reader")
    try:
        model = load_model(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    config = model.pretrained_cfg
    if config["example"] not in (None, example.name):
        parser.error(f"{args.checkpoint} was trained by {config['example']}, not {example.name}")
    classes = config["classes"]
    predictions = {}
    for path in args.files:
        try:
            inputs = example.read(path, config)
        except (UsageError, OSError) as err:
            parser.error(f"{path}: {err}")
        with torch.no_grad():
            probabilities = model(inputs).softmax(dim=1)
        top = probabilities.topk(min(args.top, len(classes)), dim=1)
        for row, (values, indices) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            name = str(path) if len(inputs) == 1 else f"{path}[{row}]"
            predictions[name] = [(classes[i], p) for i, p in zip(indices, values)]
            print(f"{name}: " + ", ".join(f"{label} {100 * p:.1f}%" for label, p in predictions[name]))
    return predictions
