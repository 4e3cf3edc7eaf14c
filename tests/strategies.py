"""Hypothesis strategies shared by the tests: layer configurations and matching inputs."""

from __future__ import annotations

from hypothesis import strategies as st

import recconv

LAYERS = {1: recconv.RecConv1d, 2: recconv.RecConv2d, 3: recconv.RecConv3d}
MAX_SIZE = {1: 40, 2: 18, 3: 9}  # keep 3D inputs small: the suite must stay fast on 2 cores

ranks = st.shared(st.integers(1, 3), key="rank")


def per_axis(values: st.SearchStrategy[int]) -> st.SearchStrategy[int | tuple[int, ...]]:
    """An int, or a tuple with one value per axis of the shared rank."""
    return ranks.flatmap(lambda d: st.one_of(values, st.tuples(*[values] * d)))


@st.composite
def layer_kwargs(draw, *, causal: bool | None = None, builtin_only: bool = True, max_level: int = 3) -> dict:
    """Constructor arguments of a RecConv layer (``spatial_dims`` included)."""
    spatial_dims = draw(ranks)
    use_causal = draw(st.booleans()) if causal is None else causal
    downsamples = ["conv", "avgpool", "maxpool"] + (
        [] if use_causal else ["haar"]
    )  # a Haar block reads ahead
    kwargs = {
        "spatial_dims": spatial_dims,
        "in_channels": draw(st.integers(1, 3)),
        "kernel_size": draw(per_axis(st.sampled_from([1, 3, 5]))),
        "level": draw(st.integers(0, max_level if spatial_dims < 3 else min(max_level, 2))),
        "factor": draw(per_axis(st.integers(1, 3))),
        "upsample": draw(st.sampled_from(["linear", "nearest", "transposed", "haar"])),
        "downsample": draw(st.sampled_from(downsamples)),
        "shared_down": draw(st.booleans()),
        "bias": draw(st.booleans()),
    }
    kwargs["causal"] = draw(st.integers(0, spatial_dims - 1)) if use_causal else False
    return kwargs


def build(kwargs: dict, **overrides) -> recconv.RecConvNd:
    options = {**kwargs, **overrides}
    return LAYERS[options.pop("spatial_dims")](**options)


def sizes(min_size: int = 1) -> st.SearchStrategy[tuple[int, ...]]:
    """Spatial sizes for the shared rank: odd, prime and tiny ones included."""
    return ranks.flatmap(lambda d: st.tuples(*[st.integers(min_size, MAX_SIZE[d])] * d))


@st.composite
def chunkings(draw, length: int) -> list[int]:
    """Positive chunk lengths summing to ``length``: single samples, odd sizes, one big chunk."""
    chunks: list[int] = []
    while sum(chunks) < length:
        chunks.append(draw(st.integers(1, length - sum(chunks))))
    return chunks
