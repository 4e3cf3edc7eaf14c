"""The plots every example writes: training curves and test confusion matrices."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch


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
