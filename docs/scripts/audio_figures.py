"""Draw docs/figures/audio_keywords_examples.png (one log-mel spectrogram per class of the embedded
keyword task, with its vowels marked) and print the receptive field along time of every stage of
the example's two models. Run from the repository root:

    python docs/scripts/audio_figures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this clone's examples package

from examples.kit import audio_data  # noqa: E402
from recconv.models import create_model  # noqa: E402


def time_receptive_fields(levels: tuple[int, ...] | None, frames: int = 101) -> list[int]:
    """Input frames that reach the middle time step of each stage of recnext_audio_tiny (any mel band),
    found from the gradient pattern: exact for these linear-in-reach convolutions."""
    options = {} if levels is None else {"levels": levels}
    model = create_model("recnext_audio_tiny", num_classes=5, features_only=True, **options).eval()
    x = torch.randn(1, 1, 40, frames, generator=torch.Generator().manual_seed(0), requires_grad=True)
    spans = []
    for feature in model(x):
        (grad,) = torch.autograd.grad(feature[..., feature.shape[-1] // 2].sum(), x, retain_graph=True)
        spans.append(int((grad[0, 0].abs().sum(dim=0) > 0).sum()))
    return spans


def main() -> None:
    classes = len(audio_data.PATTERNS)
    labels = torch.arange(classes)
    layout = audio_data.keyword_layout(labels, torch.Generator().manual_seed(0))
    waves = audio_data.synthesize_keywords(labels, torch.Generator().manual_seed(0))  # the same layout
    features = audio_data.LogMelFrontEnd(audio_data.SYNTHETIC_AUGMENTATION).eval()(waves)[:, 0]
    names = list(audio_data.SYLLABLES)
    fig, axes = plt.subplots(1, classes, figsize=(3.2 * classes, 3.0), sharey=True)
    for ax, label in zip(axes, labels.tolist()):
        ax.imshow(features[label].numpy(), origin="lower", aspect="auto", cmap="magma")
        for slot, kind in enumerate(layout[label].tolist()):
            if 0 <= kind < len(audio_data.VOWELS):
                centre = (0.03 + (slot + 0.4) * audio_data.SLOT_SECONDS) * 100
                ax.text(
                    centre, 37, names[kind], color="white", ha="center", va="top", fontsize=12, weight="bold"
                )
        ax.set_title(f"class {audio_data.PATTERNS[label]}")
        ax.set_xlabel("frame (10 ms)")
    axes[0].set_ylabel("mel band")
    fig.tight_layout()
    out = ROOT / "docs" / "figures" / "audio_keywords_examples.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out.relative_to(ROOT)}")
    for name, levels in (("recconv", None), ("small", (0, 0, 0, 0))):
        print(
            f"{name}: frames seen by the middle of stages 0-3 of a 101-frame clip:",
            time_receptive_fields(levels),
        )
        print(f"{name}: the same on a 1001-frame input (no clipping):", time_receptive_fields(levels, 1001))


if __name__ == "__main__":
    main()
