"""The ``recconv`` command line (also ``python -m recconv``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .core import RecConvNd
from .models import costs_table, list_models
from .ops import dense_depthwise_conv, per_rank
from .swap import load_model, swap
from .theory import effective_kernel_size, receptive_field

_RECCONV = ("RecConv1d", "RecConv2d", "RecConv3d")


def _counted(module: nn.Module, input_size: Sequence[int], channels: int) -> tuple[int, int]:
    """Parameters and FlopCounterMode FLOPs of one forward pass, on the meta device (no compute)."""
    x = torch.empty(1, channels, *input_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        module(x)
    return sum(p.numel() for p in module.parameters()), counter.get_total_flops()


def cost_rows(
    dims: Sequence[int], levels: Sequence[int], kernel_size: int, size: int, channels: int
) -> list[dict]:
    """Counted costs of RecConv against one k-kernel conv and a dense conv as wide as its effective kernel."""
    import recconv

    rows = []
    for spatial_dims in dims:
        layer_class = getattr(recconv, per_rank(_RECCONV, spatial_dims))
        input_size = (size,) * spatial_dims
        base = dense_depthwise_conv(channels, (kernel_size,) * spatial_dims, device="meta")
        base_params, base_flops = _counted(base, input_size, channels)
        for level in levels:
            layer: RecConvNd = layer_class(channels, kernel_size, level, device="meta")
            params, flops = _counted(layer, input_size, channels)
            wide = tuple(k + 1 - k % 2 for k in effective_kernel_size(layer))  # smallest odd size >= k * 2**l
            dense_params, dense_flops = _counted(
                dense_depthwise_conv(channels, wide, device="meta"), input_size, channels
            )
            rows.append(
                {
                    "rank": f"{spatial_dims}D",
                    "level": level,
                    "receptive_field": receptive_field(layer)[0],
                    "params": params,
                    "params_vs_k": params / base_params,
                    "flops_vs_k": flops / base_flops,
                    "dense_kernel": wide[0],
                    "dense_params_vs_ours": dense_params / params,
                    "dense_flops_vs_ours": dense_flops / flops,
                }
            )
    return rows


def _markdown(rows: list[dict]) -> str:
    header = (
        "| rank | level | receptive field | params | params / k-conv | FLOPs / k-conv "
        "| dense kernel | dense params / ours | dense FLOPs / ours |"
    )
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['rank']} | {r['level']} | {r['receptive_field']} | {r['params']:,} | "
            f"{r['params_vs_k']:.2f} | {r['flops_vs_k']:.3f} | {r['dense_kernel']} | "
            f"{r['dense_params_vs_ours']:.1f} | {r['dense_flops_vs_ours']:.1f} |"
        )
    return "\n".join(lines)


def _costs(args: argparse.Namespace) -> None:
    rows = cost_rows(args.dims, args.levels, args.kernel_size, args.size, args.channels)
    print(
        f"RecConv (kernel {args.kernel_size}, {args.channels} channels, input {args.size} per axis) "
        "against one k-kernel depthwise conv and a dense depthwise conv spanning its effective kernel;\n"
        "params and FLOPs counted with torch.utils.flop_counter.FlopCounterMode.\n"
    )
    print(_markdown(rows))


def _swap(args: argparse.Namespace) -> None:
    try:
        _, report = swap(
            load_model(args.spec),
            level=args.level,
            kernel_size=args.kernel_size,
            init=args.init,
            inplace=True,
            input_size=args.input_size,
        )
    except ValueError as error:  # a bad spec, a kernel too small to preserve, a bad --input-size
        args.parser.error(str(error))
    print(report.to_markdown())


def _models(args: argparse.Namespace) -> None:
    print("Parameters and MACs (FlopCounterMode FLOPs / 2) for one input, counted on the meta device.\n")
    print(costs_table(args.names or None))


def _model_name(text: str) -> str:
    if text not in list_models():
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; expected one of {list_models()}")
    return text


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text}")
    return value


def _odd(text: str) -> int:
    value = _positive(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"expected an odd kernel size, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recconv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    costs = commands.add_parser("costs", help="counted params, FLOPs and receptive fields per rank and level")
    costs.add_argument("--dims", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    costs.add_argument(
        "--levels", type=int, nargs="+", default=[1, 2, 3, 4], choices=range(0, 9), metavar="L"
    )
    costs.add_argument("--kernel-size", type=_odd, default=5)
    costs.add_argument("--size", type=_positive, default=64, help="input size per spatial axis")
    costs.add_argument("--channels", type=_positive, default=64)
    costs.set_defaults(run=_costs)
    swapper = commands.add_parser(
        "swap", help="swap RecConv into a model's depthwise convs and print the report"
    )
    swapper.add_argument("spec", metavar="SPEC", help="torchvision:NAME, timm:NAME or module.path:factory")
    swapper.add_argument("--level", type=int, default=2, choices=range(0, 9), metavar="L")
    swapper.add_argument(
        "--kernel-size", type=_odd, default=None, help="base kernel (default: each conv's own)"
    )
    swapper.add_argument("--init", choices=["preserve", "random"], default="preserve")
    swapper.add_argument(
        "--input-size", type=_positive, nargs="+", default=None, metavar="N",
        help="one input sample without the batch axis, e.g. 3 224 224 (default: FLOPs per position)",
    )  # fmt: skip
    swapper.set_defaults(run=_swap, parser=swapper)
    models = commands.add_parser("models", help="params and MACs of the named models in recconv.models")
    models.add_argument("names", nargs="*", type=_model_name, metavar="NAME", help="default: all")
    models.set_defaults(run=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0
