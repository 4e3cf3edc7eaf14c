"""Draw the example figures of docs/video.md, docs/pathfinder.md and docs/sequence.md (what the
embedded tasks look like) and print the receptive field of each example's two models on its
default input. Run from the repository root:

    python docs/scripts/example_figures.py
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

from examples import image_pathfinder, sequence_long_range, video_actions  # noqa: E402
from examples.kit import pathfinder_data, sequence_data, video_data  # noqa: E402
from examples.kit.harness import mixer_models  # noqa: E402

FIGURES = ROOT / "docs" / "figures"


def receptive_field(model: torch.nn.Module, shape: tuple[int, ...]) -> list[int]:
    """Input extent along each axis that reaches the middle position of the last feature map,
    from the gradient pattern (exact: every layer's reach is that of its convolutions)."""
    model.eval()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    features = model.forward_features(x)
    middle = tuple(size // 2 for size in features.shape[2:])
    (grad,) = torch.autograd.grad(features[(0, slice(None), *middle)].sum(), x)
    reach = grad[0].abs().sum(dim=0) > 0
    spans = []
    for axis in range(reach.dim()):
        others = tuple(a for a in range(reach.dim()) if a != axis)
        hit = (reach.any(dim=others) if others else reach).nonzero().flatten()
        spans.append(int(hit.max() - hit.min() + 1))
    return spans


def model_builders(example, num_classes: int) -> dict:
    """The example's two default models on one-channel input, as its default run builds them."""
    preset, options = example.EXAMPLE.model(example.EXAMPLE.parser().parse_args([]))
    return mixer_models(preset, in_chans=1, num_classes=num_classes, **options)


def print_receptive_fields() -> None:
    # The default input, and one large enough that its borders cut nothing off.
    cases = {
        "video_actions": (
            model_builders(video_actions, len(video_data.SHAPES)),
            [(1, 16, 32, 32), (1, 48, 96, 96)],
        ),
        "image_pathfinder": (model_builders(image_pathfinder, 2), [(1, 64, 64), (1, 256, 256)]),
        "sequence_long_range": (model_builders(sequence_long_range, 2), [(1, 2048), (1, 8192)]),
    }
    for example, (builders, shapes) in cases.items():
        for name, build in builders.items():
            for shape in shapes:
                torch.manual_seed(0)
                spans = receptive_field(build(), shape)
                print(f"{example} {name}: receptive field on a {shape[1:]} input: {spans}")


def pathfinder_figure() -> None:
    labels = torch.tensor([1, 0] * 4)
    images = pathfinder_data.render_pathfinder(labels, 64, torch.Generator().manual_seed(0))
    fig, axes = plt.subplots(2, 4, figsize=(9, 4.9))
    for ax, image, label in zip(axes.T.flat, images, labels.tolist()):
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(pathfinder_data.CLASSES[label])
        ax.axis("off")
    fig.tight_layout()
    _save(fig, "pathfinder_examples.png")


def video_figure() -> None:
    frames, size = video_actions.DEFAULT_SHAPE
    labels = torch.arange(len(video_data.SHAPES))
    clips = video_data.render_clips(labels, frames, size, torch.Generator().manual_seed(0))[:, 0]
    fig, axes = plt.subplots(2, len(labels), figsize=(2.0 * len(labels), 4.3))
    for column, (clip, label) in enumerate(zip(clips, labels.tolist())):
        axes[0, column].imshow(clip[frames // 2].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[0, column].set_title(video_data.SHAPES[label])
        # Every frame at once, coloured by time: the trajectory the class is about.
        colours = plt.get_cmap("viridis")(torch.linspace(0, 1, frames).numpy())[:, :3]
        trace = torch.einsum("thw,tc->hwc", clip, torch.tensor(colours, dtype=torch.float32))
        axes[1, column].imshow((trace / trace.amax().clamp_min(1e-6)).numpy())
        for row in range(2):
            axes[row, column].axis("off")
    axes[0, 0].text(-4, size / 2, "middle\nframe", ha="right", va="center")
    axes[1, 0].text(-4, size / 2, "all frames,\nby time", ha="right", va="center")
    fig.tight_layout()
    _save(fig, "video_examples.png")


def sequence_figure() -> None:
    length = sequence_long_range.DEFAULT_LENGTH
    generator = torch.Generator().manual_seed(0)
    series = sequence_data.pattern_position(torch.tensor([0, 1]), length, generator)[:, 0]
    adding = sequence_data.adding_problem(torch.tensor([1]), length, generator)[0]
    fig, axes = plt.subplots(3, 1, figsize=(9, 5.5), sharex=True)
    for ax, values, label in zip(axes, series, sequence_data.POSITION_CLASSES):
        ax.plot(values.numpy(), linewidth=0.5)
        ax.set_title(f"position task, class '{label}'", fontsize=10)
    marked = adding[1].nonzero().flatten()
    axes[2].plot(adding[0].numpy(), linewidth=0.3, color="0.6")
    axes[2].plot(marked.numpy(), adding[0, marked].numpy(), "o", color="C3")
    axes[2].set_title(
        f"adding task, class '{sequence_data.ADDING_CLASSES[1]}' (marked values in red)", fontsize=10
    )
    axes[2].set_xlabel("time step")
    fig.tight_layout()
    _save(fig, "sequence_examples.png")


def _save(fig: plt.Figure, name: str) -> None:
    fig.savefig(FIGURES / name, dpi=100)
    plt.close(fig)
    print(f"wrote docs/figures/{name}")


def main() -> None:
    pathfinder_figure()
    video_figure()
    sequence_figure()
    print_receptive_fields()


if __name__ == "__main__":
    main()
