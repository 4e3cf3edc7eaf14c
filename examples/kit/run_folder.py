"""The ``--out`` folder of a run: never silently overwritten, never mixed with another run.

A folder that holds a run (``results.json`` or a model's checkpoint) is refused unless the user
says what to do with it: ``--resume`` continues it, and is refused when anything that defines the
run differs (:func:`identity`); ``--overwrite`` replaces it. Refusing, rather than writing a new
run folder beside it, keeps results where the user (and scripts, docs and CI) said they would be,
and makes ``--resume DIR`` unambiguous. Every file is written to a temporary name and renamed, so
an interrupted run never leaves half a checkpoint or half a ``results.json``; ``results.json`` is
rewritten after every checkpoint, so it lists what the checkpoints beside it hold.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .data import Splits, UsageError, fingerprint

if TYPE_CHECKING:
    from .harness import ModelBuilder, Runtime

RESULTS = "results.json"
PLOTS = ("training_curves.png", "confusion_matrix.png")


def identity(
    example: str,
    args: argparse.Namespace,
    runtime: Runtime,
    splits: Splits,
    models: Mapping[str, ModelBuilder],
) -> dict[str, Any]:
    """Everything that defines a run, as JSON values: ``--resume`` refuses a checkpoint whose
    identity differs in any field."""

    def describe(build: ModelBuilder) -> Any:
        if hasattr(build, "preset"):
            return {"preset": build.preset, "options": build.options}
        return getattr(build, "__qualname__", type(build).__qualname__)

    data_dir = getattr(args, "data_dir", None)
    fields = {
        "example": example,
        "models": {name: describe(build) for name, build in models.items()},
        "data_source": splits.info.get("source", "given splits"),
        "data_fingerprint": fingerprint(splits, data_dir),
        "seed": args.seed,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "processes": runtime.world_size,
        "amp": getattr(args, "amp", None),
    }
    return json.loads(json.dumps(fields))  # tuples become lists, as they read back from results.json


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_same_run(path: Path, saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """Refuse to continue from ``path`` when the run that wrote it (``saved``) differs from ``now``.

    Raises:
        UsageError: Listing every differing field with its saved and current value.
    """
    if not saved:
        raise UsageError(
            f"--resume: {path} does not say which run wrote it (written by an older version); "
            "start again with --overwrite, or choose another --out"
        )
    differing = [key for key in now if saved.get(key) != now[key]]
    if differing:
        details = "; ".join(
            f"{key}: saved {_short(saved.get(key))}, now {_short(now[key])}" for key in differing
        )
        raise UsageError(
            f"--resume: {path} belongs to another run ({details}); resume with the same settings, "
            "or start again with --overwrite, or choose another --out"
        )


def _found(out: Path, names: Sequence[str]) -> list[Path]:
    return [path for path in (out / RESULTS, *(out / f"{name}.pt" for name in names)) if path.is_file()]


def check_out(out: Path, names: Sequence[str], *, resume: bool, overwrite: bool) -> None:
    """The checks on ``--out`` that need no data: a folder (or none yet) this process may write
    into, and, unless ``resume`` or ``overwrite``, not holding a run of models ``names``.

    Raises:
        UsageError: For a file, an unwritable place, or a folder that holds a run.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; expected a folder for results.json and checkpoints")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot write there ({existing} is not a writable folder)")
    found = _found(out, names) if out.is_dir() else []
    if found and not resume and not overwrite:
        state = "a finished" if _old_results(out).get("status") == "complete" else "a partial"
        raise UsageError(
            f"--out {out} holds {state} run ({', '.join(p.name for p in found)}); continue it with --resume, "
            "replace it with --overwrite, or choose another --out"
        )


def _old_results(out: Path) -> dict[str, Any]:
    """The ``results.json`` in ``out``, or ``{}`` when there is none or it does not parse."""
    try:
        results = json.loads((out / RESULTS).read_text())
    except (OSError, ValueError):
        return {}
    return results if isinstance(results, dict) else {}


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint the harness wrote, loaded without executing code from the file.

    Raises:
        UsageError: For a file that is not a readable checkpoint (empty, truncated, other format).
    """
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch.load raises many types for a bad file
        raise UsageError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"[:300]) from None
    if not isinstance(saved, dict) or "model" not in saved:
        raise UsageError(f"{path}: expected a checkpoint written by the examples (a dict with 'model')")
    return saved


def claim(
    out: Path,
    names: Sequence[str],
    *,
    resume: bool,
    overwrite: bool,
    runtime: Runtime,
    identity: Mapping[str, Any],
) -> None:
    """Make ``out`` this run's folder: check it (:func:`check_out`); with ``resume`` check that
    every checkpoint and ``results.json`` there belong to this run, before anything trains; with
    ``overwrite`` remove the old run's files; create the folder (rank 0).

    Raises:
        UsageError: For a bad or occupied ``out``, or a ``--resume`` into another run.
    """
    check_out(out, names, resume=resume, overwrite=overwrite)
    found = _found(out, names) if out.is_dir() else []
    if resume:
        for path in found:
            if path.name == RESULTS:
                try:
                    saved = json.loads(path.read_text()).get("run", {})
                except (ValueError, AttributeError):
                    raise UsageError(f"--resume: {path} is not a readable results file") from None
            else:
                saved = read_checkpoint(path).get("run", {})
            check_same_run(path, saved, identity)
    if runtime.world_size > 1:
        torch.distributed.barrier()  # every process has checked the folder before rank 0 changes it
    if not runtime.is_main:
        return
    if overwrite and not resume:
        old = {*names, *_old_results(out).get("models", {})}
        for path in (out / RESULTS, *(out / name for name in PLOTS), *(out / f"{name}.pt" for name in old)):
            path.unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: never half a checkpoint at ``path``."""
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def write_results(out: Path, results: Mapping[str, Any]) -> None:
    """Write ``results.json`` atomically (temporary file, then rename)."""
    partial = out / (RESULTS + ".partial")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(partial, out / RESULTS)
