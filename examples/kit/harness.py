"""The training harness every recconv example shares.

An example supplies its data (:class:`~examples.kit.data.Splits`), an optional input transform
(an ``nn.Module`` run on the device on every batch, with augmentation in ``train()`` mode only)
and the models to compare; :func:`run` does the rest the same way for every modality:

- seeded determinism: every model starts from the same seed, every epoch reseeds shuffling and
  augmentation, so a rerun (or a ``--resume`` after an interruption) gives the same numbers on
  the same machine and process count;
- AdamW (no weight decay on norms and biases) with a linear warm-up and cosine decay per step;
- the speed flags of timm's train script: ``--amp {bf16,fp16}``, ``--compile``, ``--channels-last``;
- tqdm progress bars, quiet when stderr is not a terminal, and one log line per epoch;
- multi-process training under ``torchrun``: DDP over gloo on CPU or nccl on GPU, a
  ``DistributedSampler`` for training, evaluation sharded without duplicates, only rank 0 writes;
- a run folder that is never silently overwritten or mixed up (:mod:`examples.kit.run_folder`):
  ``results.json``, a training-curve PNG, a confusion-matrix PNG and one checkpoint per model
  (``{"model": state_dict, "run": ..., "model_config": ...}``, loadable with
  :func:`recconv.models.load_checkpoint`).

Training one model is four steps: :func:`prepare` (build, count, make the optimizer),
:func:`resume`, :func:`train_epoch` then :func:`evaluate` and :func:`save_checkpoint` per epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from recconv._util import CHANNELS_LAST, count_flops, num_params
from recconv.models import PRESETS, create_model
from recconv.models.recnext import TOKEN_MIXERS

from . import run_folder
from .data import Splits, UsageError
from .plots import plot_confusion, plot_training_curves

SMALL = "small"  # RecConv at level 0: one small depthwise kernel, the baseline every example has
MIXERS = ("recconv", SMALL, *(name for name in TOKEN_MIXERS if name != "recconv"))
"""What ``--mixer`` accepts: the token mixers of :mod:`recconv.models.mixers` and RecNeXt's own."""
DEFAULT_MIXERS = ("recconv", SMALL)


@dataclass(frozen=True)
class ModelSpec:
    """A preset and its overrides: builds the model, and is saved beside its weights so that
    :func:`recconv.models.load_model` rebuilds it without the example's source."""

    preset: str
    options: dict[str, Any]

    def __call__(self) -> nn.Module:
        return create_model(self.preset, **self.options)


ModelBuilder = Callable[[], nn.Module]


def mixer_models(name: str, mixers: Sequence[str] = DEFAULT_MIXERS, **options: Any) -> dict[str, ModelSpec]:
    """One model per name in ``mixers``, all ``create_model(name, **options)`` but for the token
    mixer: ``recconv`` is the preset as is, ``small`` the same network with every RecConv at level 0,
    and the others (:data:`MIXERS`) its ``token_mixer`` at the same levels."""
    stages = len(options.get("widths", PRESETS[name].config["widths"]))
    models = {}
    for mixer in mixers:
        if mixer == SMALL:
            models[mixer] = ModelSpec(name, {**options, "levels": (0,) * stages})
        else:
            models[mixer] = ModelSpec(
                name, options if mixer == "recconv" else {**options, "token_mixer": mixer}
            )
    return models


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


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


def log(runtime: Runtime, message: str) -> None:
    """Print ``message`` once, from rank 0."""
    if runtime.is_main:
        print(message, flush=True)


def _all_sum(tensor: Tensor, runtime: Runtime) -> Tensor:
    if runtime.world_size > 1:
        dist.all_reduce(tensor)
    return tensor


@dataclass(frozen=True)
class Speed:
    """The speed flags: autocast dtype (``None``: float32), ``torch.compile`` and channels-last."""

    amp: str | None = None
    compile: bool = False
    channels_last: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Speed:
        return cls(
            getattr(args, "amp", None), getattr(args, "compile", False), getattr(args, "channels_last", False)
        )

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def layout(self, inputs: Tensor) -> Tensor:
        if self.channels_last and inputs.dim() in CHANNELS_LAST:
            return inputs.contiguous(memory_format=CHANNELS_LAST[inputs.dim()])
        return inputs


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    runtime: Runtime,
    transform: nn.Module | None = None,
    batch_size: int = 256,
    workers: int = 0,
    speed: Speed = Speed(),
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
        with speed.autocast(runtime.device):
            predicted = model(speed.layout(inputs)).argmax(dim=1)
        confusion += torch.bincount(labels * num_classes + predicted, minlength=num_classes**2).view(
            num_classes, num_classes
        )
    confusion = _all_sum(confusion, runtime).cpu()
    accuracy = confusion.diagonal().sum().item() / max(confusion.sum().item(), 1)
    return accuracy, confusion


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


@dataclass
class Training:
    """One model's training in progress: what :func:`prepare` builds and the steps update."""

    name: str
    model: nn.Module  # the plain module: what is checkpointed and returned
    net: nn.Module  # what runs the batches: ``model`` wrapped in DDP and compiled, as asked
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: WarmupCosine
    sampler: DistributedSampler
    loader: DataLoader
    checkpoint: Path
    params: int
    flops: int
    state: _State = field(default_factory=_State)


def model_input(splits: Splits, runtime: Runtime, transform: nn.Module | None) -> Tensor:
    """The first training example as the model sees it, with a batch axis ``(1, C, ...)``."""
    example = splits.train[0][0].unsqueeze(0).to(runtime.device)
    if transform is not None:
        example = transform.to(runtime.device).eval()(example)
    return example


def prepare(
    name: str,
    build: ModelBuilder,
    splits: Splits,
    args: argparse.Namespace,
    runtime: Runtime,
    transform: nn.Module | None = None,
) -> Training:
    """Build model ``name`` from the run's seed, count it, and set up its optimizer and data.

    Raises:
        UsageError: If the training set is smaller than one batch per process.
    """
    per_rank_batch = args.batch_size // runtime.world_size
    torch.manual_seed(args.seed)  # identical initialisation for every model, rank and resume
    model = build().to(runtime.device)
    speed = Speed.from_args(args)
    example = model_input(splits, runtime, transform)
    if speed.channels_last and example.dim() in CHANNELS_LAST:
        model = model.to(memory_format=CHANNELS_LAST[example.dim()])
    model.eval()
    with torch.no_grad():
        flops = count_flops(lambda: model(example))
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
    if len(loader) == 0:
        raise UsageError(
            f"{name}: the training set has {len(sampler)} examples per process, fewer than one batch of "
            f"{per_rank_batch}; lower --batch-size"
        )
    net: nn.Module = model
    if runtime.world_size > 1:
        net = DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )
    if speed.compile:
        net = torch.compile(net)
    steps_per_epoch = len(loader)
    return Training(
        name=name,
        model=model,
        net=net,
        optimizer=torch.optim.AdamW(_param_groups(model, args.weight_decay), lr=args.lr),
        # A no-op unless fp16 on CUDA, where small gradients would underflow without it.
        scaler=torch.amp.GradScaler(runtime.device.type, enabled=speed.amp == "fp16"),
        schedule=WarmupCosine(args.epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch)),
        sampler=sampler,
        loader=loader,
        checkpoint=args.out / f"{name}.pt",
        params=num_params(model),
        flops=flops,
    )


def resume(training: Training, classes: list[str], runtime: Runtime) -> None:
    """Continue ``training`` from its checkpoint (:func:`examples.kit.run_folder.claim` has checked
    that it belongs to this run).

    Raises:
        UsageError: If the checkpoint was trained on other classes.
    """
    if not training.checkpoint.is_file():
        log(runtime, f"{training.name}: no checkpoint at {training.checkpoint}, starting from scratch")
        return
    saved = run_folder.read_checkpoint(training.checkpoint, runtime.device)
    if saved["classes"] != classes:
        raise UsageError(
            f"--resume: {training.checkpoint} was trained on classes {saved['classes']}, this run has {classes}"
        )
    training.model.load_state_dict(saved["model"])
    training.optimizer.load_state_dict(saved["optimizer"])
    if "scaler" in saved:
        training.scaler.load_state_dict(saved["scaler"])
    training.state = _State(**saved["state"])
    log(runtime, f"{training.name}: resumed from {training.checkpoint} after epoch {training.state.epoch}")


def train_epoch(
    training: Training, epoch: int, args: argparse.Namespace, runtime: Runtime, transform: nn.Module | None
) -> dict[str, float]:
    """One pass over the training set; returns the epoch's mean loss, examples and seconds."""
    speed = Speed.from_args(args)
    training.model.train()
    if transform is not None:
        transform.train()
    training.sampler.set_epoch(epoch)
    # Augmentation randomness per (seed, epoch, rank): a resumed run draws what the full run drew.
    torch.manual_seed(args.seed * 1_000_003 + epoch * 1009 + runtime.rank)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=runtime.device)
    start = time.perf_counter()
    steps = len(training.loader)
    batches = _progress(training.loader, runtime, f"{training.name} {epoch + 1}/{args.epochs}", steps)
    for step, (inputs, labels) in enumerate(batches, start=training.state.step):
        for group in training.optimizer.param_groups:
            group["lr"] = args.lr * training.schedule(step)
        inputs, labels = inputs.to(runtime.device), labels.to(runtime.device)
        if transform is not None:
            inputs = transform(inputs)
        with speed.autocast(runtime.device):
            loss = nn.functional.cross_entropy(training.net(speed.layout(inputs)), labels)
        training.optimizer.zero_grad(set_to_none=True)
        training.scaler.scale(loss).backward()
        training.scaler.step(training.optimizer)
        training.scaler.update()
        loss_sum += torch.stack(
            [loss.detach().double() * len(labels), torch.tensor(len(labels), device=runtime.device)]
        )
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    seconds = time.perf_counter() - start
    loss_sum = _all_sum(loss_sum, runtime)
    _sync_buffers(training.model, runtime)
    training.state.step += steps
    return {
        "train_loss": loss_sum[0].item() / loss_sum[1].item(),
        "examples": loss_sum[1].item(),
        "seconds": seconds,
    }


def save_checkpoint(training: Training, extra: Mapping[str, Any]) -> None:
    """Write ``training``'s checkpoint atomically, with ``extra`` (the run's identity, classes,
    model config) beside the weights."""
    state = {
        "model": training.model.state_dict(),
        "optimizer": training.optimizer.state_dict(),
        "scaler": training.scaler.state_dict(),
        "state": asdict(training.state),
        "name": training.name,
        **extra,
    }
    run_folder.save_atomic(state, training.checkpoint)


def train_model(
    name: str,
    build: ModelBuilder,
    splits: Splits,
    args: argparse.Namespace,
    runtime: Runtime,
    transform: nn.Module | None = None,
    *,
    identity: dict[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    on_epoch: Callable[[str, dict[str, Any]], None] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model (or continue it with ``args.resume``), checkpoint it every epoch and
    evaluate it on the test set.

    Args:
        identity: What defines the run (:func:`examples.kit.run_folder.identity`), saved in the
            checkpoint and checked on ``--resume``.
        metadata: More to save in the checkpoint (what rebuilds the model, the input front end).
        on_epoch: Called on rank 0 after each checkpoint with the model's results so far.

    Returns:
        The trained model (unwrapped) and its results: ``accuracy`` (test, in [0, 1]),
        ``params``, ``flops`` (forward, one example), ``train_seconds``, ``examples_per_second``
        (training examples over all processes per second of training), ``val_accuracy``,
        ``epochs``, ``history``, ``confusion`` (test confusion matrix) and ``checkpoint``.

    Raises:
        UsageError: If the training set is smaller than one batch per process, or a checkpoint
            to resume from belongs to another run.
    """
    identity = identity or {}
    training = prepare(name, build, splits, args, runtime, transform)
    if args.resume:
        resume(training, splits.classes, runtime)
    state = training.state
    extra = {"run": identity, "classes": splits.classes, **(metadata or {})}

    def score(dataset: Dataset) -> tuple[float, Tensor]:
        per_rank_batch = args.batch_size // runtime.world_size
        return evaluate(
            training.model, dataset, len(splits.classes), runtime, transform, per_rank_batch, args.workers,
            Speed.from_args(args),
        )  # fmt: skip

    for epoch in range(state.epoch, args.epochs):
        trained = train_epoch(training, epoch, args, runtime, transform)
        val_accuracy, _ = score(splits.val)
        state.epoch = epoch + 1
        state.train_seconds += trained["seconds"]
        state.train_examples += int(trained["examples"])
        state.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": trained["train_loss"],
                "val_accuracy": val_accuracy,
                "seconds": trained["seconds"],
            }
        )
        log(
            runtime,
            f"{name:>10} epoch {epoch + 1:3d}/{args.epochs}  loss {trained['train_loss']:.3f}  "
            f"val acc {100 * val_accuracy:5.1f}%  ({trained['seconds']:.1f} s)",
        )
        if runtime.is_main:
            save_checkpoint(training, extra)
            if on_epoch is not None:
                on_epoch(
                    name,
                    {
                        "status": "training",
                        "epochs": state.epoch,
                        "history": state.history,
                        "checkpoint": training.checkpoint.name,
                    },
                )
        if runtime.world_size > 1:
            dist.barrier()

    accuracy, confusion = score(splits.test)
    log(
        runtime,
        f"{name:>10} test accuracy {100 * accuracy:.1f}%  ({training.params:,} params, {training.flops / 1e6:.1f} MFLOPs)",
    )
    return training.model, {
        "status": "done",
        "accuracy": accuracy,
        "params": training.params,
        "flops": training.flops,
        "train_seconds": state.train_seconds,
        "examples_per_second": state.train_examples / state.train_seconds if state.train_seconds else None,
        "val_accuracy": state.history[-1]["val_accuracy"] if state.history else None,
        "epochs": state.epoch,
        "history": state.history,
        "confusion": confusion.tolist(),
        "checkpoint": training.checkpoint.name,
    }


def run(
    example: str,
    args: argparse.Namespace,
    runtime: Runtime,
    splits: Splits,
    models: Mapping[str, ModelBuilder],
    transform: nn.Module | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and test every model in ``models`` on ``splits``; rank 0 writes ``results.json``,
    ``training_curves.png``, ``confusion_matrix.png`` and ``<model>.pt`` into ``args.out``.

    ``args.out`` must not hold another run unless ``args.resume`` (continue it, refused if it
    differs) or ``args.overwrite`` (replace it); see :mod:`examples.kit.run_folder`.

    Returns:
        The results (the content of ``results.json``) on every rank.
    """
    if args.batch_size % runtime.world_size:
        raise UsageError(
            f"--batch-size {args.batch_size} must be divisible by the {runtime.world_size} processes"
        )
    identity = run_folder.identity(example, args, runtime, splits, models)
    run_folder.claim(
        args.out,
        list(models),
        resume=args.resume,
        overwrite=getattr(args, "overwrite", False),
        runtime=runtime,
        identity=identity,
    )
    log(
        runtime,
        f"{example}: {len(splits.classes)} classes, {len(splits.train)} train / {len(splits.val)} val / "
        f"{len(splits.test)} test examples; {args.epochs} epochs, batch {args.batch_size}, "
        f"{runtime.world_size} process(es) on {runtime.device}",
    )
    input_size = list(model_input(splits, runtime, transform).shape[1:])  # (C, ...) as the model sees it
    metadata = dict(metadata or {})
    metadata["data"] = {**metadata.get("data", {}), "input_size": input_size}  # what erf --checkpoint reads
    results: dict[str, Any] = {
        "example": example,
        "status": "running",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "run": identity,
        "data": {
            "classes": splits.classes,
            "train": len(splits.train),
            "val": len(splits.val),
            "test": len(splits.test),
            "input_size": input_size,
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
            **({"budget": args.budget} if getattr(args, "budget", None) else {}),
            **{k: v for k, v in asdict(Speed.from_args(args)).items() if v},
        },
        "models": {},
    }

    def record(name: str, result: dict[str, Any]) -> None:
        results["models"][name] = result
        run_folder.write_results(args.out, results)

    if runtime.is_main:
        run_folder.write_results(args.out, results)
    for name, build in models.items():
        config = (
            {"model_config": {"preset": build.preset, "options": build.options}}
            if isinstance(build, ModelSpec)
            else {}
        )
        _, result = train_model(
            name,
            build,
            splits,
            args,
            runtime,
            transform,
            identity=identity,
            metadata={**config, **metadata},
            on_epoch=record,
        )
        if runtime.is_main:
            record(name, result)
        else:
            results["models"][name] = result
    results["status"] = "complete"
    if runtime.is_main:
        run_folder.write_results(args.out, results)
        plot_training_curves(results, args.out / "training_curves.png")
        plot_confusion(results, args.out / "confusion_matrix.png")
        log(
            runtime,
            f"wrote results.json, training_curves.png, confusion_matrix.png and checkpoints to {args.out}",
        )
    return results
