"""RecNeXt: one backbone class for sequences, images and volumes or video.

With its defaults and the paper's widths and depths it is RecNeXt-M0..M5 of Zhao, Luo, Ouyang
(2024), parameter for parameter; with ``token_mixer="recattn"`` it is their A series. The same
class builds the 1D and 3D presets in :mod:`recconv.models.registry`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._util import LAYOUTS, as_tuple, check_int, is_int, look_up
from ..core import RecConvNd
from ..ops import Builder
from .blocks import DistillationHead, Downsample, RecAttnMixer, RecConvMixer, RecNeXtBlock, Stem
from .mixers import DenseMixer, DilatedMixer, FFTMixer, WaveletMixer

TOKEN_MIXERS: dict[str, type] = {
    "recconv": RecConvMixer,
    "recattn": RecAttnMixer,
    "dense": DenseMixer,
    "dilated": DilatedMixer,
    "wavelet": WaveletMixer,
    "fft": FFTMixer,
}
"""Token-mixer names ``RecNeXt(token_mixer=...)`` accepts; a builder is accepted too. The last four
are the other routes to a large receptive field (:mod:`recconv.models.mixers`), for comparisons."""
_DROP_PATH_SCHEDULES = ("linear", "uniform")
TokenMixer = Callable[..., nn.Module]


def _positive_ints(value: Sequence[int], name: str, minimum: int = 1) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else ()
    if not values or not all(is_int(v) and v >= minimum for v in values):
        raise ValueError(f"RecNeXt: {name} must be a non-empty sequence of ints >= {minimum}, got {value!r}")
    return values


def _token_mixer(token_mixer: str | TokenMixer, options: dict[str, Any]) -> TokenMixer:
    """The mixer builder: a name with the mixer options given to ``RecNeXt``, or a builder as is."""
    given = {name: value for name, value in options.items() if value is not None}
    if not isinstance(token_mixer, str):
        if given:
            raise ValueError(
                f"RecNeXt: {', '.join(given)} configure a named token_mixer; pass them to the builder "
                f"{type(token_mixer).__name__} instead"
            )
        if not callable(token_mixer):
            raise TypeError(
                f"RecNeXt: token_mixer must be a name or a builder, got {type(token_mixer).__name__}"
            )
        return token_mixer
    mixer_class = look_up(token_mixer, TOKEN_MIXERS, what="token_mixer", owner="RecNeXt", also="a builder")
    fields = {f.name for f in dataclasses.fields(mixer_class)}
    # Options of the other token mixer would be silently ignored: refuse them.
    for name in given:
        if name not in fields:
            raise ValueError(f"RecNeXt: {name} does not apply to token_mixer={token_mixer!r}")
    return mixer_class(**given)


class RecNeXtStage(nn.Module):
    """An optional :class:`~recconv.models.blocks.Downsample` (``downsample``) then ``blocks``."""

    spatial_path = ("downsample", "blocks")

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class RecNeXt(nn.Module):
    """A RecNeXt backbone of any rank: stem, stages of RecConv blocks, pooled two-head classifier.

    Stage ``i`` has ``widths[i]`` channels and ``depths[i]`` blocks whose token mixer is a
    RecConv (followed by BatchNorm, the M series) or a RecAttn (the A series) of level
    ``levels[i]``; every stage after the first starts with a strided grouped conv. Layout and
    parameter names are the paper's, so official checkpoints load unchanged.

    Args:
        widths: Channels of each stage.
        depths: Blocks in each stage.
        spatial_dims: 1 for ``(N, C, L)``, 2 for ``(N, C, H, W)``, 3 for ``(N, C, D, H, W)``.
        in_chans: Input channels.
        num_classes: Classifier outputs; ``0`` returns pooled features instead of logits.
        token_mixer: A builder of the blocks' spatial mixer, called as ``token_mixer(channels,
            level=, stage=, spatial_dims=, device=, dtype=)`` (:class:`RecConvMixer`,
            :class:`RecAttnMixer` or a user's; the block adds a BatchNorm after it unless the
            builder has ``norm = False``), or a name from :data:`TOKEN_MIXERS`: ``"recconv"`` (the
            M series) or ``"recattn"`` (the A series), configured by the options below.
        levels: Token-mixer level per stage; default: the builder's ``default_levels`` (``len(widths)
            - i``, i.e. 4, 3, 2, 1, for RecConv; 1 for RecAttn).
        num_heads: With ``"recattn"``: heads per stage (see :class:`RecAttnMixer`).
        attention_variants: With ``"recattn"``: attention variant per stage.
        kernel_size: With a named mixer: base kernel, an int or one per axis (default 5).
        factor: With a named mixer: down/upsampling factor, an int or one per axis (default 2;
            ``1`` keeps that axis).
        upsample: With a named mixer: upsample op (default ``"linear"`` for RecConv, ``"nearest"``
            for RecAttn).
        downsample: With ``"recconv"``: downsample op (default ``"conv"``).
        stem_strides: Stride of each of the two stem convs, each an int or one per axis.
        down_stride: Stride of the transition conv that starts stages 1.., an int or one per axis.
        down_kernel_size: Kernel of that transition conv, an int or one per axis.
        mlp_ratio: Hidden width of every channel MLP over its input width.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth of the last block (see ``drop_path_schedule``).
        drop_path_schedule: ``"linear"``: rising linearly from 0 at the first block (the M
            series); ``"uniform"``: ``drop_path_rate`` in every block (the A series).
        distillation: In training, return the logits of both heads instead of their mean.
        features_only: Build without a classifier; ``forward`` returns the outputs of the
            stages in ``out_indices`` (timm's feature-extraction API).
        out_indices: Stages whose outputs ``features_only`` returns (default: all); an int ``n``
            means the last ``n`` stages, as in timm.
        act_layer: Activation class.
        device: Where to create the parameters (``"meta"`` builds without memory).
        dtype: Parameter dtype.

    Raises:
        ValueError: For inconsistent or non-positive widths, depths or levels, per-axis tuples
            of the wrong length, rates outside ``[0, 1)`` or out-of-range ``out_indices``.

    Example:
        >>> import torch
        >>> from recconv.models import RecNeXt
        >>> model = RecNeXt((16, 32), (1, 1), spatial_dims=1, in_chans=2, num_classes=5).eval()
        >>> model(torch.randn(4, 2, 128)).shape
        torch.Size([4, 5])
        >>> tuple(info["reduction"] for info in model.feature_info)
        (4, 8)
    """

    spatial_path = ("stem", "stages")  # forward_features; the head pools globally

    def __init__(
        self,
        widths: Sequence[int] = (40, 80, 160, 320),
        depths: Sequence[int] = (2, 2, 9, 1),
        *,
        spatial_dims: int = 2,
        in_chans: int = 3,
        num_classes: int = 1000,
        token_mixer: str | TokenMixer = "recconv",
        levels: Sequence[int] | None = None,
        num_heads: Sequence[int] | None = None,
        attention_variants: Sequence[int] | None = None,
        kernel_size: int | Sequence[int] | None = None,
        factor: int | Sequence[int] | None = None,
        upsample: str | Builder | None = None,
        downsample: str | Builder | None = None,
        stem_strides: Sequence[int | Sequence[int]] = (2, 2),
        down_stride: int | Sequence[int] = 2,
        down_kernel_size: int | Sequence[int] = 7,
        mlp_ratio: float = 2.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_path_schedule: str = "linear",
        distillation: bool = False,
        features_only: bool = False,
        out_indices: int | Sequence[int] | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not is_int(spatial_dims) or spatial_dims not in (1, 2, 3):
            raise ValueError(f"RecNeXt: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        look_up(drop_path_schedule, _DROP_PATH_SCHEDULES, what="drop_path_schedule", owner="RecNeXt")
        widths = _positive_ints(widths, "widths")
        depths = _positive_ints(depths, "depths")
        mixer = _token_mixer(
            token_mixer,
            {
                "num_heads": num_heads,
                "attention_variants": attention_variants,
                "kernel_size": kernel_size,
                "factor": factor,
                "upsample": upsample,
                "downsample": downsample,
            },
        )
        default_levels = getattr(mixer, "default_levels", None)
        if levels is None:
            if default_levels is None:
                raise ValueError("RecNeXt: levels is needed: the token_mixer builder has no default_levels")
            levels = default_levels(len(widths))
        levels = _positive_ints(levels, "levels", getattr(mixer, "min_level", 0))
        check = getattr(mixer, "check", None)
        if check is not None:
            check(len(widths))
        if not len(widths) == len(depths) == len(levels):
            raise ValueError(
                f"RecNeXt: widths, depths and levels need one entry per stage, got "
                f"{len(widths)}, {len(depths)} and {len(levels)}"
            )
        if not is_int(in_chans) or in_chans < 1:
            raise ValueError(f"RecNeXt: in_chans must be a positive int, got {in_chans!r}")
        check_int(num_classes, "num_classes", "RecNeXt", minimum=0)
        for name, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
                raise ValueError(f"RecNeXt: {name} must be in [0, 1), got {rate!r}")
        if not isinstance(mlp_ratio, (int, float)) or isinstance(mlp_ratio, bool) or not mlp_ratio > 0:
            raise ValueError(f"RecNeXt: mlp_ratio must be a positive number, got {mlp_ratio!r}")
        if isinstance(stem_strides, int) or len(stem_strides) != 2:
            raise ValueError(
                f"RecNeXt: stem_strides needs one stride per stem conv (2), got {stem_strides!r}"
            )
        stem = tuple(as_tuple(s, spatial_dims, "stem_strides", "RecNeXt") for s in stem_strides)
        down = as_tuple(down_stride, spatial_dims, "down_stride", "RecNeXt")
        down_kernel = as_tuple(down_kernel_size, spatial_dims, "down_kernel_size", "RecNeXt", minimum=1)
        if any(s < 1 for s in (*stem[0], *stem[1], *down)):
            raise ValueError(
                f"RecNeXt: strides must be >= 1, got stem {stem_strides!r} and down {down_stride!r}"
            )
        factory = {"device": device, "dtype": dtype}

        self.spatial_dims = spatial_dims
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.widths, self.depths, self.levels = widths, depths, levels
        self._label = f"RecNeXt(spatial_dims={spatial_dims}, in_chans={in_chans})"

        self.stem = Stem(in_chans, widths[0], stem, act_layer, spatial_dims, **factory)
        stride = tuple(a * b for a, b in zip(*stem))
        if drop_path_schedule == "linear":
            rates = iter(torch.linspace(0.0, drop_path_rate, sum(depths)).tolist())
        else:
            rates = iter([drop_path_rate] * sum(depths))
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        for i, (width, depth, level) in enumerate(zip(widths, depths, levels)):
            transition: nn.Module = nn.Identity()
            if i > 0:
                transition = Downsample(
                    widths[i - 1], width, down_kernel, down, mlp_ratio, act_layer, **factory
                )
                stride = tuple(s * d for s, d in zip(stride, down))
            blocks = [
                RecNeXtBlock(
                    width,
                    mixer(width, level=level, stage=i, spatial_dims=spatial_dims, **factory),
                    norm=getattr(mixer, "norm", True),
                    mlp_ratio=mlp_ratio,
                    act_layer=act_layer,
                    drop_path=next(rates),
                    spatial_dims=spatial_dims,
                    **factory,
                )
                for _ in range(depth)
            ]
            stages.append(RecNeXtStage(transition, blocks))
            self.feature_info.append(
                {"num_chs": width, "reduction": max(stride), "stride": stride, "module": f"stages.{i}"}
            )
        self.stages = nn.Sequential(*stages)
        self.head_drop: nn.Dropout | None = nn.Dropout(drop_rate)  # both None in a features_only model
        self.head: nn.Module | None = self._make_head(num_classes, distillation, **factory)
        self.distillation = distillation
        self.fused = False  # fuse() merges the two heads into one Linear
        self.out_indices: tuple[int, ...] | None = None
        if features_only:
            self.set_features_only(out_indices)
        elif out_indices is not None:
            raise ValueError("RecNeXt: out_indices only applies with features_only=True")

    def _make_head(self, num_classes: int, distillation: bool, **factory: Any) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        return DistillationHead(self.num_features, num_classes, distillation, **factory)

    def set_features_only(self, out_indices: int | Sequence[int] | None = None) -> RecNeXt:
        """Drop the classifier and the stages after the last of ``out_indices``; ``forward`` then
        returns the listed stage outputs.

        Args:
            out_indices: Stage indices (negative ones count from the end), an int ``n`` for the
                last ``n`` stages as in timm, or ``None`` for all.

        Example:
            >>> from recconv.models import create_model
            >>> create_model("recnext_seq_tiny").set_features_only(2).out_indices
            (2, 3)
        """
        if self.out_indices is not None:
            raise ValueError("RecNeXt: the model already returns features only")
        count = len(self.stages)
        if out_indices is None:
            indices: tuple[Any, ...] = tuple(range(count))
        elif is_int(out_indices):
            if not 1 <= out_indices <= count:
                raise ValueError(
                    f"RecNeXt: out_indices as an int is the number of last stages, 1 to {count}, "
                    f"got {out_indices!r}"
                )
            indices = tuple(range(count - out_indices, count))
        elif isinstance(out_indices, Sequence) and not isinstance(out_indices, str):
            indices = tuple(out_indices)
        else:
            indices = ()  # refused below, with the message that says what is accepted
        if not indices or any(not is_int(i) or not -count <= i < count for i in indices):
            raise ValueError(
                f"RecNeXt: out_indices must be stage indices in [{-count}, {count - 1}], got "
                f"{out_indices!r}; an int n means the last n stages (1 to {count})"
            )
        indices = tuple(sorted({i % count for i in indices}))
        self.out_indices = indices
        self.stages = self.stages[: indices[-1] + 1]
        self.feature_info = [self.feature_info[i] for i in indices]
        self.head = None
        self.head_drop = None
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every RecConv's recursion in backward instead of storing it (timm's switch):
        ``recompute=True`` on each layer when enabled, back to the default (``None``: only where it
        is also the faster) when not. See :class:`recconv.RecConv2d`'s ``recompute``."""
        if not isinstance(enable, bool):
            raise TypeError(f"RecNeXt.set_grad_checkpointing: enable must be a bool, got {enable!r}")
        for module in self.modules():
            if isinstance(module, RecConvNd):
                module.recompute = True if enable else None

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` outputs (``0``: pooled
        features): both heads, or one Linear on a fused model. The new head has the model's
        device, dtype and train/eval mode.

        Example:
            >>> import torch
            >>> from recconv.models import create_model
            >>> model = create_model("recnext_seq_tiny").eval().fuse()
            >>> model.reset_classifier(3)
            >>> model.head, model.training
            (Linear(in_features=128, out_features=3, bias=True), False)
        """
        if self.out_indices is not None:
            raise ValueError("RecNeXt: a features_only model has no classifier to reset")
        check_int(num_classes, "num_classes", "RecNeXt.reset_classifier", minimum=0)
        weight = next(self.parameters())
        device, dtype = weight.device, weight.dtype
        self.num_classes = num_classes
        if self.fused and num_classes:
            self.head = nn.Linear(self.num_features, num_classes, device=device, dtype=dtype)
        else:
            self.head = self._make_head(num_classes, self.distillation, device=device, dtype=dtype)
        self.head.train(self.training)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map ``(N, widths[-1], *spatial / stride)``."""
        return self.stages(self.stem(_checked(x, self._label, self.in_chans, self.spatial_dims)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Global average pooling, dropout and the classifier (skipped with ``pre_logits``)."""
        if self.head is None or self.head_drop is None:
            raise ValueError(f"{self._label}: a features_only model has no head")
        x = self.head_drop(x.mean(dim=tuple(range(2, 2 + self.spatial_dims))))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor] | list[Tensor]:
        """Logits (mean of both heads, or both in distillation training), or a list of stage
        outputs for a ``features_only`` model."""
        if self.out_indices is None:
            return self.forward_head(self.forward_features(x))
        x = self.stem(_checked(x, self._label, self.in_chans, self.spatial_dims))
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                features.append(x)
        return features

    @torch.no_grad()
    def fuse(self) -> RecNeXt:
        """Fold every BatchNorm into the linear op before it and merge the two heads into one
        Linear, for inference: the model switches to eval mode and computes the same outputs.

        Example:
            >>> import torch
            >>> from recconv.models import create_model
            >>> model = create_model("recnext_seq_tiny").eval()
            >>> x = torch.randn(2, 1, 256)
            >>> expected = model(x)
            >>> torch.allclose(model.fuse()(x), expected, atol=1e-5)
            True
            >>> any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
            False
        """
        self.eval()
        _fuse_children(self)
        self.fused = True
        return self


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        fuse = getattr(child, "fuse", None)
        if callable(fuse):
            replacement = fuse()
            if replacement is not child:
                setattr(module, name, replacement)
            child = replacement
        _fuse_children(child)


def _checked(x: Tensor, label: str, channels: int, spatial_dims: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{label}: expected a tensor, got {type(x).__name__}")
    if x.dim() != spatial_dims + 2 or x.shape[1] != channels:
        raise ValueError(
            f"{label}: expected (N, {channels}, {LAYOUTS[spatial_dims - 1]}), got {tuple(x.shape)}"
        )
    return x


torch.fx.wrap("_checked")  # torch.fx records the check as one call, run with the real input
