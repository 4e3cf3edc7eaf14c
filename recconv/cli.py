"""The ``recconv`` command line (also ``python -m recconv``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from . import __version__
from .analysis.costs import costs_table
from .analysis.profile import FORMATS, cost_markdown, cost_rows, format_rows, profile
from .cli_specs import load_model
from .models import PRESETS, list_models
from .swap import swap


def _costs(args: argparse.Namespace) -> None:
    rows = cost_rows(args.dims, args.levels, args.kernel_size, args.size, args.channels)
    print(
        f"RecConv (kernel {args.kernel_size}, {args.channels} channels, input {args.size} per axis) "
        "against one k-kernel depthwise conv and a dense depthwise conv spanning its effective kernel;\n"
        "params and FLOPs counted with torch.utils.flop_counter.FlopCounterMode.\n"
    )
    print(cost_markdown(rows))


def _erf(args: argparse.Namespace) -> None:
    from .analysis import check_figure_path, checkpoint_erf, model_erf, plot_erfs, ratio_table, recconv_erfs

    try:
        check_figure_path(args.out)  # before minutes of gradients, not after
    except (ImportError, ValueError) as error:
        args.error(str(error))
    common = {"samples": args.samples, "seed": args.seed, "progress": True}
    size = args.size[0] if args.size is not None and len(args.size) == 1 else args.size
    if args.model is not None or args.checkpoint is not None:
        layer_options = {
            "--dims": args.dims,
            "--kernel-size": args.kernel_size,
            "--levels": args.levels,
            "--channels": args.channels,
        }
        given = [flag for flag, value in layer_options.items() if value is not None]
        source = "--model" if args.model is not None else "--checkpoint"
        if given:
            args.error(f"{source} reads its layout from the model; drop {' '.join(given)}")
        try:
            if args.model is not None:
                results = [model_erf(args.model, checkpoint=args.checkpoint, size=size, **common)]
            else:  # the checkpoint rebuilds its own model (recconv.models.load_model)
                results = [checkpoint_erf(args.checkpoint, size=size, **common)]
        except (ValueError, OSError) as error:  # a bad name or size, an unreadable or missing checkpoint
            message = str(error)
            if "holds no 'model_config'" in message:
                message += "; or name its architecture with --model NAME"
            args.error(message)
    else:
        if isinstance(size, list):
            args.error("--size takes one value for RecConv layers (the same on every axis)")
        results = recconv_erfs(
            args.dims or 2,
            args.kernel_size or 5,
            args.levels or [0, 1, 2, 3],
            channels=args.channels or 8,
            size=size,
            **common,
        )
    print(ratio_table(results))
    try:
        plot_erfs(results, args.out, log=args.log_color)
    except OSError as error:  # checked above, but the folder can still refuse the write
        args.error(f"cannot write {args.out!r}: {error.strerror or error}")
    print(f"\nwrote {args.out}")


def _export_hub(args: argparse.Namespace) -> None:
    try:
        from .models.hub import HubModel
    except ImportError:
        args.error("export-hub needs huggingface_hub: pip install 'recconv[hub]'")
    if args.folder.exists() and (not args.folder.is_dir() or any(args.folder.iterdir())):
        args.error(f"{args.folder} is not empty; name a new folder (nothing is overwritten)")
    try:
        shared = HubModel.from_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        args.error(str(error))
    shared.save_pretrained(args.folder)
    print(
        f"wrote {args.folder}: config.json, model.safetensors, README.md\n"
        f"load it with HubModel.from_pretrained({str(args.folder)!r}) (from recconv.models.hub import HubModel); "
        "upload it with .push_to_hub('user/name')"
    )


def _profile(args: argparse.Namespace) -> None:
    try:
        device = torch.device(args.device)
    except RuntimeError:
        args.error(f"unknown device {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        args.error("--device cuda: no CUDA device is available")
    try:
        torch.empty(0, device=device)  # a device this build or machine lacks fails here, not mid-run
    except (RuntimeError, AssertionError) as error:
        reason = str(error).split(". ")[0].splitlines()[0]  # torch's first sentence; the rest lists backends
        args.error(f"--device {args.device}: not usable with this torch build or machine ({reason})")
    rows = profile(
        args.dims,
        args.levels,
        kernel_size=args.kernel_size,
        channels=args.channels,
        size=args.size,
        batch=args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        max_timed_flops=args.max_timed_flops,
        device=device,
        progress=True,
    )
    if args.format == "md":
        print(
            f"RecConv (kernel {args.kernel_size}) against one k-kernel depthwise conv and a dense depthwise "
            f"conv as wide as its effective kernel, on {device}, {torch.get_num_threads()} threads: medians of "
            f"{args.repeats} interleaved rounds after {args.warmup} warmup; — = not timed (over "
            f"{args.max_timed_flops:g} FLOPs). saved MiB = activation memory autograd keeps for backward.\n"
        )
    print(format_rows(rows, args.format))


def _swap(args: argparse.Namespace) -> None:
    try:
        _, report = swap(
            load_model(args.spec),
            level=args.level,
            kernel_size=args.kernel_size,
            init=args.init,
            dense=args.dense,
            inplace=True,
            input_size=args.input_size,
        )
    except ValueError as error:  # a bad spec, a kernel too small to preserve, a bad --input-size
        args.error(str(error))
    print(report.to_markdown())


def _models(args: argparse.Namespace) -> None:
    print("Parameters and MACs (FlopCounterMode FLOPs / 2) for one input, counted on the meta device.\n")
    print(costs_table(args.names or None))


def _model_name(text: str) -> str:
    if text not in list_models():
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; expected one of {list_models()}")
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None


def _positive(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _odd(text: str) -> int:
    value = _positive(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"expected an odd kernel size, got {text}")
    return value


def _add_layer_options(
    parser: argparse.ArgumentParser,
    *,
    dims: list[int] | None,
    levels: list[int] | None,
    kernel_size: int | None,
    channels: int | None,
    several_ranks: bool = True,
) -> None:
    parser.add_argument(
        "--dims", type=int, nargs="+" if several_ranks else None, default=dims, choices=[1, 2, 3]
    )
    parser.add_argument("--levels", type=int, nargs="+", default=levels, choices=range(0, 9), metavar="L")
    parser.add_argument("--kernel-size", type=_odd, default=kernel_size)
    parser.add_argument("--channels", type=_positive, default=channels)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recconv", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    costs = commands.add_parser("costs", help="counted params, FLOPs and receptive fields per rank and level")
    _add_layer_options(costs, dims=[1, 2, 3], levels=[1, 2, 3, 4], kernel_size=5, channels=64)
    costs.add_argument("--size", type=_positive, default=64, help="input size per spatial axis")
    costs.set_defaults(run=_costs)
    swapper = commands.add_parser(
        "swap", help="swap RecConv into a model's depthwise convs (and, with --dense branch, its dense convs)"
    )
    swapper.add_argument("spec", metavar="SPEC", help="torchvision:NAME, timm:NAME or module.path:factory")
    swapper.add_argument("--level", type=int, default=2, choices=range(0, 9), metavar="L")
    swapper.add_argument(
        "--kernel-size", type=_odd, default=None, help="base kernel (default: each conv's own)"
    )
    swapper.add_argument("--init", choices=["preserve", "random"], default="preserve")
    swapper.add_argument(
        "--dense", choices=["branch"], default=None,
        help="give stride-1 dense convs a RecConv branch, conv(x + rec(x)) (default: leave them)",
    )  # fmt: skip
    swapper.add_argument(
        "--input-size", type=_positive, nargs="+", default=None, metavar="N",
        help="one input sample without the batch axis, e.g. 3 224 224 (default: FLOPs per position)",
    )  # fmt: skip
    swapper.set_defaults(run=_swap, error=swapper.error)
    models = commands.add_parser("models", help="params and MACs of the named models in recconv.models")
    models.add_argument("names", nargs="*", type=_model_name, metavar="NAME", help="default: all")
    models.set_defaults(run=_models)

    erf = commands.add_parser(
        "erf",
        help="effective receptive fields (RepLKNet's method): a figure and the area ratios",
        description="Effective receptive fields of RecConv layers per level (default: --dims 2 "
        "--kernel-size 5 --levels 0 1 2 3 --channels 8), of a backbone (--model) or of a model an example "
        "trained (--checkpoint alone).",
    )
    # None marks "not given": --model refuses layer options.
    _add_layer_options(erf, dims=None, levels=None, kernel_size=None, channels=None, several_ranks=False)
    erf.add_argument("--model", metavar="NAME", help="a backbone from recconv.models.list_models()")
    erf.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="a checkpoint an example wrote (it rebuilds its model), or weights for --model",
    )
    erf.add_argument(
        "--size",
        type=_positive,
        nargs="+",
        metavar="N",
        help="input size, one value for every axis or one per axis (default: layers, the largest receptive "
        "field + 2k, rounded up to a multiple of 2**level; checkpoints, the size their data info records; "
        "models, their preset's input: "
        + "; ".join(  # recconv.models.PRESETS, which model_erf reads
            f"{'x'.join(map(str, size))} for {', '.join(n for n, p in PRESETS.items() if p.input_size[1:] == size)}"
            for size in dict.fromkeys(p.input_size[1:] for p in PRESETS.values())
        )
        + ")",
    )
    erf.add_argument("--samples", type=_positive, default=8, help="random inputs to average")
    erf.add_argument("--seed", type=int, default=0)
    erf.add_argument("--out", default="erf.png", help="figure path (.png, .svg, .pdf)")
    erf.add_argument(
        "--log-color", action="store_true", help="color D on a log scale to show the faint reach"
    )
    erf.set_defaults(run=_erf, error=erf.error)

    export_hub = commands.add_parser(
        "export-hub",
        help="turn an example's checkpoint into a Hugging Face folder (config.json, model.safetensors)",
    )
    export_hub.add_argument(
        "checkpoint", type=Path, help="a checkpoint an example wrote, e.g. runs/NAME/recconv.pt"
    )
    export_hub.add_argument("folder", type=Path, help="a new or empty folder")
    export_hub.set_defaults(run=_export_hub, error=export_hub.error)

    prof = commands.add_parser(
        "profile", help="params, FLOPs, latency and memory of RecConv, a k-kernel conv and a dense conv"
    )
    _add_layer_options(prof, dims=[1, 2, 3], levels=[1, 2, 3], kernel_size=5, channels=16)
    prof.add_argument(
        "--size", type=_positive, help="input size per axis (default 1024, 64, 16 for 1D, 2D, 3D)"
    )
    prof.add_argument("--batch", type=_positive, default=2)
    prof.add_argument("--repeats", type=_positive, default=7, help="timed rounds (medians)")
    prof.add_argument("--warmup", type=_non_negative, default=2, help="untimed rounds first")
    prof.add_argument(
        "--max-timed-flops",
        type=_positive_float,
        default=2e8,
        help="do not time layers with more forward FLOPs",
    )
    prof.add_argument("--device", default="cpu")
    prof.add_argument("--format", choices=sorted(FORMATS), default="md")
    prof.set_defaults(run=_profile, error=prof.error)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0
