"""Draw the ERF gallery of trained example models (docs/erf.md, "Trained example models"): each
run's models (RecConv and its level-0 twin), trained (from the run's checkpoints) and at random
initialization (the same architectures, weights from seed 0). Run from the repository root, after
the examples' default runs:

    python examples/audio_keywords.py --out runs/audio_keywords
    python examples/sequence_long_range.py --out runs/sequence_long_range
    python docs/scripts/erf_gallery.py runs/audio_keywords runs/sequence_long_range

Each run folder (a complete run: its ``results.json`` names the checkpoints) gives
``docs/figures/erf_trained_<example>.png`` (its trained models), ``erf_untrained_<example>.png``
(the same architectures at random initialization) and the table between the
``<!-- BEGIN erf-trained-<example> -->`` markers of docs/erf.md. Checkpoints are not committed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this clone's recconv and examples
sys.path.insert(0, str(ROOT / "docs" / "scripts"))

from build_analysis_docs import replace_block  # noqa: E402

from recconv.analysis import checkpoint_erf, erf, plot_erfs, ratio_table  # noqa: E402
from recconv.models import create_model  # noqa: E402
from recconv.models.pretrained import read_model_config  # noqa: E402

FIGURES = ROOT / "docs" / "figures"


def front_end_size(config: dict) -> tuple[int, ...] | None:
    """The spatial size of a front end's output for one training example, where the checkpoint's
    data info cannot give it: the audio example's log-mel features of a one-second clip."""
    settings = config["front_end"]
    if settings.get("kind") != "log_mel":
        return None
    from examples.kit.audio_data import SAMPLE_RATE, SYNTHETIC_AUGMENTATION, LogMelFrontEnd

    front_end = LogMelFrontEnd(
        SYNTHETIC_AUGMENTATION, sequence=settings["sequence"], n_mels=settings["n_mels"]
    )
    return tuple(front_end.eval()(torch.zeros(1, SAMPLE_RATE)).shape[2:])


def describe(model: torch.nn.Module, config: dict) -> str:
    """A label that says what the model is, whatever the run named it: its levels (and mixer)."""
    mixer = config["options"].get("token_mixer")
    return f"levels {'-'.join(map(str, model.levels))}" + (f", {mixer}" if mixer else "")


def gallery(run: Path, samples: int) -> tuple[str, list]:
    """``(example, [(label, result), ...])``: the run's trained models, then their random twins."""
    results = json.loads((run / "results.json").read_text())
    if results["status"] != "complete":
        raise SystemExit(f"{run}: the run is {results['status']}, not complete; finish it first (--resume)")
    trained, untrained = [], []
    for entry in results["models"].values():
        path = run / entry["checkpoint"]
        config = read_model_config(path)
        _, result = checkpoint_erf(path, size=front_end_size(config), samples=samples, progress=True)
        torch.manual_seed(0)
        model = create_model(config["preset"], **config["options"]).eval()
        shape = (1, model.in_chans, *result.scores.shape)
        trained.append((f"{describe(model, config)}, trained", result))
        untrained.append(
            (f"{describe(model, config)}, random init", erf(model.forward_features, shape, samples=samples))
        )
    return config["example"], trained + untrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of the examples' default runs")
    parser.add_argument("--samples", type=int, default=8, help="random inputs per map")
    args = parser.parse_args()
    for run in args.runs:
        example, results = gallery(run, args.samples)
        half = len(results) // 2
        plot_erfs(results[:half], FIGURES / f"erf_trained_{example}.png", log=True)
        plot_erfs(results[half:], FIGURES / f"erf_untrained_{example}.png", log=True)
        table = ratio_table(results)
        replace_block(ROOT / "docs" / "erf.md", f"erf-trained-{example}", table)
        print(f"{example} ({run}):\n{table}\n")


if __name__ == "__main__":
    main()
