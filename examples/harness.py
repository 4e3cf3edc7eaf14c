"""The training harness every recconv example shares.

An example supplies its data (:class:`Splits`), an optional input transform (an ``nn.Module``
run on the device on every batch, with augmentation in ``train()`` mode only) and the models to
compare; the harness does the rest the same way for every modality:

- the flags every example shares (:class:`ExampleParser`), with argparse errors for bad values;
- seeded determinism: every model starts from the same seed, every epoch reseeds shuffling and
  augmentation, so a rerun (or a ``--resume`` after an interruption) gives the same numbers on
  the same machine and process count;
- AdamW (no weight decay on norms and biases) with a linear warm-up and cosine decay per step;
- tqdm progress bars, quiet when stderr is not a terminal, and one log line per epoch;
- multi-process training under ``torchrun``: DDP over gloo on CPU or nccl on GPU, a
  ``DistributedSampler`` for training, evaluation sharded without duplicates, only rank 0 writes;
- ``results.json``, a training-curve PNG, a confusion-matrix PNG and one checkpoint per model
  (``{"model": state_dict, ...}``, loadable with :func:`recconv.models.load_checkpoint`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset
from torch.utils.flop_counter import FlopCounterMode

from recconv.models import PRESETS, create_model

ModelBuilder = Callable[[], nn.Module]


class UsageError(ValueError):
    """A problem with the command line or the data it points to; examples report it like a bad flag."""


@dataclass(frozen=True)
class Defaults:
    """An example's default training budget, and the one ``--smoke`` uses."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    smoke_epochs: int = 1
    smoke_batch_size: int = 16


@dataclass
class Splits:
    """Train, validation and test sets of ``(input, label)`` pairs and the class names."""

    train: Dataset
    val: Dataset
    test: Dataset
    classes: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # written to results.json under "data"

    def head(self, count: int) -> Splits:
        """The first ``count`` examples of every split: a few batches of real data for ``--smoke``."""
        subsets = (Subset(d, range(min(count, len(d)))) for d in (self.train, self.val, self.test))
        return Splits(*subsets, self.classes, self.info)


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


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

    ``parse_args`` fills the training budget from :class:`Defaults`: an explicit ``--epochs`` or
    ``--batch-size`` wins over ``--smoke``'s, which wins over the full run's.

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
            help=f"training epochs (default {defaults.epochs}; {defaults.smoke_epochs} with --smoke)",
        )
        shared.add_argument(
            "--batch-size",
            type=positive_int,
            help=f"global batch size, split over torchrun processes (default {defaults.batch_size}; "
            f"{defaults.smoke_batch_size} with --smoke)",
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
            help="folder for results.json, plots and checkpoints (default %(default)s)",
        )
        shared.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
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
            "--workers",
            type=_number(int, 0, exclusive=False),
            default=0,
            help="data-loading processes (default 0)",
        )

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        if parsed.epochs is None:
            parsed.epochs = self.budget.smoke_epochs if parsed.smoke else self.budget.epochs
        if parsed.batch_size is None:
            parsed.batch_size = self.budget.smoke_batch_size if parsed.smoke else self.budget.batch_size
        parsed.weight_decay, parsed.warmup_epochs = self.budget.weight_decay, self.budget.warmup_epochs
        if parsed.device.startswith("cuda") and not torch.cuda.is_available():
            self.error(f"--device {parsed.device}: CUDA is not available here; use --device cpu")
        return parsed


@contextmanager
def distributed(device: str = "auto") -> Iterator[Runtime]:
    """This process's :class:`Runtime`; under ``torchrun`` also the process group around the run.

    ``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with more than one process the
    group uses nccl when the device is CUDA (one GPU per local rank) and gloo otherwise.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if world_size > 1:
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    try:
        yield Runtime(rank, world_size, target)
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (when installed) and torch, and pick deterministic cuDNN kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
    except ImportError:
        pass
    else:
        numpy.random.seed(seed % 2**32)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def count_flops(model: nn.Module, example: Tensor) -> int:
    """Forward FLOPs of ``model`` on one example (FlopCounterMode: 2 per multiply-add)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example.unsqueeze(0))
    model.train(was_training)
    return counter.get_total_flops()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Weight decay on conv and linear weights only, not on norms, biases or 1-parameter scales.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class WarmupCosine:
    """Learning-rate factor per step: linear warm-up to 1, then cosine decay to 0."""

    def __init__(self, total_steps: int, warmup_steps: int) -> None:
        self.total_steps = max(total_steps, 1)
        self.warmup_steps = min(max(warmup_steps, 0), self.total_steps - 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class _Shard(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: each example evaluated exactly once."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _progress(iterable: Any, runtime: Runtime, description: str, total: int) -> Any:
    from tqdm.auto import tqdm

    quiet = not runtime.is_main or not sys.stderr.isatty()
    return tqdm(iterable, desc=description, total=total, disable=quiet, leave=False, dynamic_ncols=True)


def _log(runtime: Runtime, message: str) -> None:
    if runtime.is_main:
        print(message, flush=True)


def _all_sum(tensor: Tensor, runtime: Runtime) -> Tensor:
    if runtime.world_size > 1:
        dist.all_reduce(tensor)
    return tensor


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    runtime: Runtime,
    transform: nn.Module | None = None,
    batch_size: int = 256,
    workers: int = 0,
) -> tuple[float, Tensor]:
    """Accuracy and confusion matrix (rows: true class, columns: predicted) of ``model`` on
    ``dataset``, each process evaluating its share; all processes get the totals."""
    model.eval()
    if transform is not None:
        transform.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=_Shard(len(dataset), runtime.rank, runtime.world_size),
        num_workers=workers,
    )
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=runtime.device)
    for inputs, labels in loader:
        inputs, labels = inputs.to(runtime.device), labels.to(runtime.device)
        if transform is not None:
            inputs = transform(inputs)
        predicted = model(inputs).argmax(dim=1)
        confusion += torch.bincount(labels * num_classes + predicted, minlength=num_classes**2).view(
            num_classes, num_classes
        )
    confusion = _all_sum(confusion, runtime).cpu()
    accuracy = confusion.diagonal().sum().item() / max(confusion.sum().item(), 1)
    return accuracy, confusion


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    # Write then rename, so an interrupted save never leaves a half checkpoint for --resume.
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(state, partial)
    partial.replace(path)


def _sync_buffers(model: nn.Module, runtime: Runtime) -> None:
    # BatchNorm statistics drift apart per rank (each sees its own batches); use rank 0's.
    if runtime.world_size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


@dataclass
class _State:
    epoch: int = 0
    step: int = 0
    train_seconds: float = 0.0
    train_examples: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def train_model(
    name: str,
    build: ModelBuilder,
    splits: Splits,
    args: argparse.Namespace,
    runtime: Runtime,
    transform: nn.Module | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model (or continue it with ``args.resume``), checkpoint it every epoch and
    evaluate it on the test set.

    Returns:
        The trained model (unwrapped) and its results: ``accuracy`` (test, in [0, 1]),
        ``params``, ``flops`` (forward, one example), ``train_seconds``, ``examples_per_second``
        (training examples over all processes per second of training), ``val_accuracy``,
        ``epochs``, ``history`` and ``confusion`` (test confusion matrix).

    Raises:
        UsageError: If the training set is smaller than one batch per process, or a checkpoint
            to resume from was trained on other classes.
    """
    per_rank_batch = args.batch_size // runtime.world_size
    torch.manual_seed(args.seed)  # identical initialisation for every model, rank and resume
    model = build().to(runtime.device)
    if transform is not None:
        transform.to(runtime.device)
    example = splits.train[0][0].unsqueeze(0).to(runtime.device)
    if transform is not None:
        example = transform.eval()(example)
    flops = count_flops(model, example[0])
    params = sum(p.numel() for p in model.parameters())

    sampler = DistributedSampler(
        splits.train,
        num_replicas=runtime.world_size,
        rank=runtime.rank,
        shuffle=True,
        seed=args.seed,
        drop_last=True,
    )
    loader = DataLoader(
        splits.train, batch_size=per_rank_batch, sampler=sampler, drop_last=True, num_workers=args.workers
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise UsageError(
            f"{name}: the training set has {len(sampler)} examples per process, fewer than one batch of "
            f"{per_rank_batch}; lower --batch-size"
        )
    optimizer = torch.optim.AdamW(_param_groups(model, args.weight_decay), lr=args.lr)
    schedule = WarmupCosine(args.epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch))
    state = _State()
    checkpoint_path = args.out / f"{name}.pt"
    if args.resume and checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, map_location=runtime.device, weights_only=True)
        if saved["classes"] != splits.classes:
            raise UsageError(
                f"--resume: {checkpoint_path} was trained on classes {saved['classes']}, this run has {splits.classes}"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = _State(**saved["state"])
        _log(runtime, f"{name}: resumed from {checkpoint_path} after epoch {state.epoch}")
    elif args.resume:
        _log(runtime, f"{name}: no checkpoint at {checkpoint_path}, starting from scratch")

    ddp = model
    if runtime.world_size > 1:
        ddp = DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )
    for epoch in range(state.epoch, args.epochs):
        model.train()
        if transform is not None:
            transform.train()
        sampler.set_epoch(epoch)
        # Augmentation randomness per (seed, epoch, rank): a resumed run draws what the full run drew.
        torch.manual_seed(args.seed * 1_000_003 + epoch * 1009 + runtime.rank)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=runtime.device)
        start = time.perf_counter()
        batches = _progress(loader, runtime, f"{name} {epoch + 1}/{args.epochs}", steps_per_epoch)
        for step, (inputs, labels) in enumerate(batches, start=state.step):
            for group in optimizer.param_groups:
                group["lr"] = args.lr * schedule(step)
            inputs, labels = inputs.to(runtime.device), labels.to(runtime.device)
            if transform is not None:
                inputs = transform(inputs)
            loss = nn.functional.cross_entropy(ddp(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += torch.stack(
                [loss.detach().double() * len(labels), torch.tensor(len(labels), device=runtime.device)]
            )
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)
        seconds = time.perf_counter() - start
        loss_sum = _all_sum(loss_sum, runtime)
        _sync_buffers(model, runtime)
        val_accuracy, _ = evaluate(
            model, splits.val, len(splits.classes), runtime, transform, per_rank_batch, args.workers
        )
        state.epoch, state.step = epoch + 1, state.step + steps_per_epoch
        state.train_seconds += seconds
        state.train_examples += int(loss_sum[1].item())
        state.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum[0].item() / loss_sum[1].item(),
                "val_accuracy": val_accuracy,
                "seconds": seconds,
            }
        )
        _log(
            runtime,
            f"{name:>10} epoch {epoch + 1:3d}/{args.epochs}  loss {state.history[-1]['train_loss']:.3f}  "
            f"val acc {100 * val_accuracy:5.1f}%  ({seconds:.1f} s)",
        )
        if runtime.is_main:
            _save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "state": vars(state),
                    "classes": splits.classes,
                    "name": name,
                },
                checkpoint_path,
            )
        if runtime.world_size > 1:
            dist.barrier()

    accuracy, confusion = evaluate(
        model, splits.test, len(splits.classes), runtime, transform, per_rank_batch, args.workers
    )
    val_accuracy = state.history[-1]["val_accuracy"] if state.history else None
    _log(
        runtime,
        f"{name:>10} test accuracy {100 * accuracy:.1f}%  ({params:,} params, {flops / 1e6:.1f} MFLOPs)",
    )
    return model, {
        "accuracy": accuracy,
        "params": params,
        "flops": flops,
        "train_seconds": state.train_seconds,
        "examples_per_second": state.train_examples / state.train_seconds if state.train_seconds else None,
        "val_accuracy": val_accuracy,
        "epochs": state.epoch,
        "history": state.history,
        "confusion": confusion.tolist(),
    }


def run(
    example: str,
    args: argparse.Namespace,
    runtime: Runtime,
    splits: Splits,
    models: Mapping[str, ModelBuilder],
    transform: nn.Module | None = None,
) -> dict[str, Any]:
    """Train and test every model in ``models`` on ``splits``; rank 0 writes ``results.json``,
    ``training_curves.png``, ``confusion_matrix.png`` and ``<model>.pt`` into ``args.out``.

    Returns:
        The results (the content of ``results.json``) on every rank.
    """
    if args.batch_size % runtime.world_size:
        raise UsageError(
            f"--batch-size {args.batch_size} must be divisible by the {runtime.world_size} processes"
        )
    if runtime.is_main:
        args.out.mkdir(parents=True, exist_ok=True)
    _log(
        runtime,
        f"{example}: {len(splits.classes)} classes, {len(splits.train)} train / {len(splits.val)} val / "
        f"{len(splits.test)} test examples; {args.epochs} epochs, batch {args.batch_size}, "
        f"{runtime.world_size} process(es) on {runtime.device}",
    )
    results: dict[str, Any] = {
        "example": example,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": {
            "classes": splits.classes,
            "train": len(splits.train),
            "val": len(splits.val),
            "test": len(splits.test),
            **splits.info,
        },
        "training": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "seed": args.seed,
            "device": str(runtime.device),
            "processes": runtime.world_size,
            "threads_per_process": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "models": {},
    }
    for name, build in models.items():
        _, results["models"][name] = train_model(name, build, splits, args, runtime, transform)
        if runtime.is_main:
            (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if runtime.is_main:
        plot_training_curves(results, args.out / "training_curves.png")
        plot_confusion(results, args.out / "confusion_matrix.png")
        _log(
            runtime,
            f"wrote results.json, training_curves.png, confusion_matrix.png and checkpoints to {args.out}",
        )
    return results


def level_zero_baseline(name: str, **options: Any) -> dict[str, ModelBuilder]:
    """The two models every example compares: ``recconv`` is ``create_model(name, **options)`` and
    ``baseline`` the same network with the RecConv of each of its stages at level 0."""
    stages = len(options.get("widths", PRESETS[name].config["widths"]))
    baseline = {**options, "levels": (0,) * stages}
    return {
        "recconv": partial(create_model, name, **options),
        "baseline": partial(create_model, name, **baseline),
    }


Setup = Callable[
    [argparse.Namespace, Runtime], tuple[str, Splits, Mapping[str, ModelBuilder], nn.Module | None]
]


def plain_setup(
    title: str,
    load_data: Callable[[argparse.Namespace], Splits],
    model_builders: Callable[[int, int], Mapping[str, ModelBuilder]],
) -> Setup:
    """The :data:`Setup` of an example without an input transform: its data from ``load_data`` and
    its models from ``model_builders(input channels, classes)``, read off the first training example."""

    def setup(
        args: argparse.Namespace, runtime: Runtime
    ) -> tuple[str, Splits, Mapping[str, ModelBuilder], None]:
        splits = load_data(args)
        return title, splits, model_builders(splits.train[0][0].shape[0], len(splits.classes)), None

    return setup


def run_example(parser: ExampleParser, argv: Sequence[str] | None, setup: Setup) -> dict[str, Any]:
    """An example's command line: parse ``argv``, start the processes, let ``setup`` build the run's
    title, data, models and input transform, and :func:`run` it. A :class:`UsageError` raised on
    the way is reported like a bad flag.

    Returns:
        The results (the content of ``results.json``).
    """
    args = parser.parse_args(argv)
    with distributed(args.device) as runtime:
        try:
            title, splits, models, transform = setup(args, runtime)
            return run(title, args, runtime, splits, models, transform)
        except UsageError as err:
            parser.error(str(err))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(results: dict[str, Any], path: Path) -> None:
    """Training loss and validation accuracy per epoch, one line per model."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name, result in results["models"].items():
        epochs = [h["epoch"] for h in result["history"]]
        loss_ax.plot(epochs, [h["train_loss"] for h in result["history"]], marker=".", label=name)
        acc_ax.plot(
            epochs,
            [100 * h["val_accuracy"] for h in result["history"]],
            marker=".",
            label=f"{name} (test {100 * result['accuracy']:.1f}%)",
        )
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy", ylim=(0, 100))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(results["example"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(results: dict[str, Any], path: Path) -> None:
    """Row-normalised test confusion matrices, one panel per model."""
    plt = _pyplot()
    classes = results["data"]["classes"]
    names = list(results["models"])
    size = max(4.0, 0.35 * len(classes) + 2)
    fig, axes = plt.subplots(1, len(names), figsize=(size * len(names), size), squeeze=False)
    for ax, name in zip(axes[0], names):
        confusion = torch.tensor(results["models"][name]["confusion"], dtype=torch.float64)
        rates = confusion / confusion.sum(dim=1, keepdim=True).clamp_min(1)
        ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
        if len(classes) <= 12:  # counts stay readable
            for (i, j), count in zip(
                itertools.product(range(len(classes)), repeat=2), confusion.flatten().tolist()
            ):
                if count:
                    ax.text(
                        j,
                        i,
                        int(count),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black",
                    )
        ax.set_title(f"{name}: test accuracy {100 * results['models'][name]['accuracy']:.1f}%")
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set(xlabel="predicted", ylabel="true")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
