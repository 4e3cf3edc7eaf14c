"""Per-chunk latency and state bytes of streaming against recomputing a receptive-field window.

Run: ``python benchmarks/bench_streaming.py [--repeats 30] [--threads 1 2] [--best]``, or
``python benchmarks/bench_streaming.py --against COMMIT`` to time only steps of the layer (single
samples, and compiled chunks) and the audio preset's :class:`recconv.Streamer` against that commit's,
interleaved in one process on one thread.

For a causal ``RecConv1d`` (64 channels, kernel 5, factor 2) at several levels and chunks of 1, 16
and 160 samples:

* ``stream``: ``layer.step(chunk, state)``, the state carried from chunk to chunk;
* ``recompute``: ``layer(window)`` on the last ``receptive_field + chunk - 1`` samples, the least
  an offline layer must rerun to produce the same ``chunk`` outputs;
* each also compiled (``torch.compile(..., fullgraph=True)``): the step on a state whose shapes
  repeat, so that one graph serves every step (the default state where the chunk is a multiple of
  ``factor**level``, else ``init_state(..., fixed_shape=True)``), and the layer on the window;
* each also exported to ONNX and run in onnxruntime on as many threads (with the ``onnx`` extra): the
  step on the same state as compiled (:func:`recconv.streaming.export_onnx_step`), its state fed
  back, and the layer for the window's shape. The speedup compares the fastest way to stream with
  the fastest way to recompute;
* ``call floor``: a compiled function that only adds 1 to the chunk, the least any compiled step
  can cost here.

``--channels`` sets the layer's width (default 64, the table in docs/streaming.md). Each way runs
``--calls`` times in a row per round (default 32, every phase of the deepest level's strides), as a
stream calls one of them chunk after chunk, and is reported per call: one call between calls of the
other ways (``--calls 1``) runs with caches and branch predictors cold from them, which inflated a
compiled single-sample step 2-2.6 times (docs/streaming.md).

Then the time-causal audio preset (``recconv.streaming.recnext_audio_causal_tiny``, 40 mels) fed
one 10 ms log-mel frame per chunk through :class:`recconv.Streamer`, against rerunning the model
on its receptive field for each output (one every 16 frames; the rerun starts on a 32-frame grid,
as the exact output needs), as trained (BatchNorms in eval mode), fused for inference
(``model.fuse()``: each BatchNorm folded into the conv before it) and, as trained, compiled on a
fixed-shape state (one graph for every frame, every stage running on every frame) and, with the
``onnx`` extra installed, exported to ONNX for one frame per call and run in onnxruntime on as many
threads (through :class:`recconv.streaming.OnnxStep`). Its stages run every 2nd to 16th frame, so it
is timed over whole cycles of 16 chunks (every phase of its strides) and reported per chunk.

All under ``torch.no_grad``, medians (or with ``--best`` minima) of ``--repeats`` rounds after a
warm-up, the ways compared interleaved round by round. Timings depend on the machine and its load:
on a shared, busy CPU they are noisy.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import recconv
from recconv.streaming import OnnxStep, export_onnx_step, recnext_audio_causal_tiny

CHANNELS, KERNEL, FACTOR = 64, 5, 2  # the layer of the table (--channels changes the width)
LEVELS = (1, 3, 5)
CHUNKS = (1, 16, 160)
SPEEDUP_GOAL = 10.0  # streaming per chunk vs recomputing the window, at level >= 3
PRESET_GOAL_MS = 1.0  # one 10 ms chunk through the audio preset on one thread
PRESET_CYCLE = 16  # frames per output of the audio preset (its strides along time: 2 x 2 x 2 x 2)
# Frames per coarsest sample of its RecConvs (stride 4 x 2**3 in the first stage, 16 x 2 in the last):
# a rerun gives the streamed outputs only from a start on this grid.
PRESET_PERIOD = 32


def time_ms(runs: dict[str, Callable[[], object]], repeats: int, best: bool) -> dict[str, float]:
    """Median wall time of each ``run()`` in milliseconds, the runs interleaved repeat by repeat after
    three warm-up rounds, or with ``best`` the minimum, which other processes on a shared CPU inflate
    less."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(3 + repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_ >= 3:
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * (min(t) if best else statistics.median(t)) for name, t in times.items()}


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def streaming_step(step, state: dict[str, torch.Tensor], chunk: torch.Tensor):
    """A callable that streams ``chunk`` again and again, carrying the state."""
    box = {"state": state}

    def run() -> None:
        _, box["state"] = step(chunk, box["state"])

    return run


def compiled_streaming_step(layer: recconv.RecConvNd, chunk: torch.Tensor) -> Callable[[], None]:
    """``torch.compile(layer.step)`` streaming ``chunk`` on a state whose shapes repeat from step to
    step (the default state if the chunk is a multiple of ``factor**level``, else a fixed-shape
    one), compiled and run over every phase of the strides before it is timed."""
    cycle = FACTOR**layer.level
    step = torch.compile(layer.step, fullgraph=True)
    state = layer.init_state(1, fixed_shape=chunk.shape[-1] % cycle != 0)
    for _ in range(cycle + 1):
        _, state = step(chunk, state)
    return streaming_step(step, state, chunk)


def layer_rows(
    repeats: int, best: bool, threads: list[int], channels: int, calls: int
) -> dict[int, list[dict]]:
    """The table's rows for each thread count; each row's compiled functions and ONNX files made once,
    then timed on every thread count, ``calls`` calls of a way in a row per round."""
    rows: dict[int, list[dict]] = {count: [] for count in threads}
    for level in LEVELS:
        layer = recconv.RecConv1d(channels, KERNEL, level, factor=FACTOR, causal=True).eval()
        field = recconv.receptive_field(layer)[0]
        for chunk_size in CHUNKS:
            chunk = torch.randn(1, channels, chunk_size)
            window = torch.randn(1, channels, field + chunk_size - 1)
            state = layer.init_state(1)
            most = state_bytes(state)
            for _ in range(2 * FACTOR**level):  # visit every phase: the state's largest size
                _, state = layer.step(torch.randn(1, channels, 1), state)
                most = max(most, state_bytes(state))
            torch._dynamo.reset()  # the rows' layers share step's code: a fresh cache each, below its limit
            compiled_layer = torch.compile(layer, fullgraph=True)
            compiled_layer(window)
            add_one = torch.compile(lambda x: x + 1, fullgraph=True)
            add_one(chunk)
            runs = {
                "stream": streaming_step(layer.step, state, chunk),
                "stream_compiled": compiled_streaming_step(layer, chunk),
                "recompute": lambda: layer(window),
                "recompute_compiled": lambda: compiled_layer(window),
                "floor": lambda: add_one(chunk),
            }
            repeating = layer.init_state(1, fixed_shape=chunk_size % FACTOR**level != 0)
            exported = onnx_files(layer, chunk, repeating, window)
            for count in threads:
                torch.set_num_threads(count)
                timed = (
                    runs
                    if exported is None
                    else {**runs, **onnx_runs(exported, chunk, repeating, window, count)}
                )
                blocks = {name: lambda run=run: [run() for _ in range(calls)] for name, run in timed.items()}
                times = {name: ms / calls for name, ms in time_ms(blocks, repeats, best).items()}
                rows[count].append(
                    {
                        "level": level,
                        "field": field,
                        "chunk": chunk_size,
                        **{f"{name}_ms": value for name, value in times.items()},
                        "state_bytes": most,
                        "window_bytes": window.numel() * window.element_size(),
                    }
                )
    return rows


def onnx_files(
    layer: recconv.RecConvNd, chunk: torch.Tensor, state: dict[str, torch.Tensor], window: torch.Tensor
) -> tuple[bytes, bytes] | None:
    """The layer's step for ``chunk`` on ``state`` and the layer on ``window``, each exported to ONNX,
    or ``None`` without onnxruntime and the exporter's packages (the ``onnx`` extra)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        step, whole = Path(folder) / "step.onnx", Path(folder) / "window.onnx"
        export_onnx_step(layer, chunk, state, step)
        torch.onnx.export(layer, (window,), whole, dynamo=True, external_data=False, verbose=False)
        return step.read_bytes(), whole.read_bytes()


def onnx_runs(
    exported: tuple[bytes, bytes],
    chunk: torch.Tensor,
    state: dict[str, torch.Tensor],
    window: torch.Tensor,
    threads: int,
) -> dict[str, Callable[[], object]]:
    """The exported step, its state fed back, and the exported layer on the window, in onnxruntime
    on ``threads`` threads."""
    import onnxruntime

    step, whole = exported
    session = onnxruntime.InferenceSession(whole, onnx_options(threads), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: window.numpy()}
    return {
        "stream_onnx": streaming_step(OnnxStep(step, onnx_options(threads)), state, chunk),
        "recompute_onnx": lambda: session.run(None, feed),
    }


def onnx_options(threads: int) -> Any:
    """onnxruntime's session options for ``threads`` threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # Idle pool threads would spin, taking the cores from the runs interleaved with this one.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def frame_step(
    streamer: recconv.Streamer, frame: torch.Tensor, compiled: bool
) -> tuple[Callable[[], None], dict[str, torch.Tensor]]:
    """A callable that streams ``frame`` again and again through ``streamer`` (compiled on a fixed-shape
    state if ``compiled``), run past the stem and every stride first, and its state then."""
    state = streamer.init_state(1, (frame.shape[2],), fixed_shape=compiled)
    stream = torch.compile(streamer, fullgraph=True) if compiled else streamer
    for _ in range(32):  # past the stem and every stride: all stages get samples
        _, state = stream(frame, state)
    return streaming_step(stream, state, frame), state


def preset_rows(repeats: int, best: bool, threads: list[int]) -> dict[int, dict]:
    """The audio preset as trained (BatchNorms in eval mode), fused for inference (folded) and, as
    trained, compiled on a fixed-shape state and exported to ONNX (onnxruntime, if installed),
    interleaved with rerunning it on its receptive field; made once, then timed on every thread count."""
    model = recnext_audio_causal_tiny().eval()
    frame = torch.randn(1, 1, 40, 1)
    runs: dict[str, Callable[[], object]] = {}
    streamers = (
        ("stream_ms", recconv.Streamer(model), False),
        ("fused_ms", recconv.Streamer(copy.deepcopy(model).fuse()), False),
        ("fixed_compiled_ms", recconv.Streamer(model), True),
    )
    for name, streamer, fixed in streamers:
        step, state = frame_step(streamer, frame, fixed)
        # One 160 ms cycle: the deepest stage runs once.
        runs[name] = lambda step=step: [step() for _ in range(PRESET_CYCLE)]
        if name == "stream_ms":
            kept_bytes = state_bytes(state)
    field = int(recconv.receptive_field(model)[1])
    window = -(-field // PRESET_PERIOD) * PRESET_PERIOD
    history = torch.randn(1, 1, 40, window + 4 * PRESET_PERIOD)
    last = history[..., -window:]
    torch.testing.assert_close(model(last)[..., -1], model(history)[..., -1])  # the rerun is exact
    exported = exported_frame_model(recconv.Streamer(model), frame)
    rows = {}
    for count in threads:
        torch.set_num_threads(count)
        timed = {**runs, "recompute_ms": lambda: model(last)}
        if exported is not None:
            step = onnx_streaming_step(exported, frame, count)
            timed["onnxruntime_ms"] = lambda step=step: [step() for _ in range(PRESET_CYCLE)]
        times = time_ms(timed, repeats, best)
        per_frame = [name for name in timed if name != "recompute_ms"]  # timed over whole cycles
        rows[count] = {
            **{name: times[name] / PRESET_CYCLE for name in per_frame},
            "recompute_ms": times["recompute_ms"],
            "field": field,
            "window": window,
            "state_bytes": kept_bytes,
        }
    return rows


def exported_frame_model(
    streamer: recconv.Streamer, frame: torch.Tensor, export: Callable[..., None] = export_onnx_step
) -> tuple[bytes, dict] | None:
    """The streamer exported to ONNX (by ``export``, an ``export_onnx_step``) for one frame per call on a
    fixed-shape state, with that state, or ``None`` without onnxruntime and the exporter's packages (the
    ``onnx`` extra)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    state = streamer.init_state(1, (frame.shape[2],), fixed_shape=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "frame.onnx"
        export(streamer, frame, state, path)
        return path.read_bytes(), state


def onnx_streaming_step(
    exported: tuple[bytes, dict], frame: torch.Tensor, threads: int
) -> Callable[[], None]:
    """A callable that runs ``frame`` through the exported model in onnxruntime on ``threads`` threads,
    again and again, feeding its state back."""
    model, state = exported
    run = streaming_step(OnnxStep(model, onnx_options(threads)), state, frame)
    for _ in range(32):  # past the stem and every stride, as the streamers
        run()
    return run


def against(commit: str, repeats: int, channels: int) -> None:
    """Per-chunk time at ``commit`` and in this checkout, one thread, interleaved round by round with
    the same weights, state and chunks: single samples through the causal ``RecConv1d`` of the table
    (``channels`` wide) at levels 3 and 5, and its compiled steps of the chunks that are multiples of
    ``2**level`` (rounds of ``2**level`` steps, every phase of its strides), and the audio preset's
    :class:`recconv.Streamer` (rounds of one 16-chunk cycle), also compiled on a fixed-shape state, and
    exported to ONNX and run in onnxruntime if ``commit`` has ``export_onnx_step``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_commit import earlier_package

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        old_package = earlier_package(commit, Path(folder))
        cases: dict[str, tuple[Callable[[], object], Callable[[], object], int]] = {}
        for level in (3, 5):
            layer = recconv.RecConv1d(channels, KERNEL, level, factor=FACTOR, causal=True).eval()
            old_layer = old_package.RecConv1d(channels, KERNEL, level, factor=FACTOR, causal=True).eval()
            old_layer.load_state_dict(layer.state_dict())
            sample = torch.randn(1, channels, 1)
            old, new = (streaming_step(m.step, m.init_state(1), sample) for m in (old_layer, layer))
            cases[f"RecConv1d level {level}, single samples"] = (old, new, FACTOR**level)
            for size in (s for s in CHUNKS[1:] if s % FACTOR**level == 0):  # default states: quick to compile
                chunk = torch.randn(1, channels, size)
                old, new = (compiled_streaming_step(m, chunk) for m in (old_layer, layer))
                cases[f"RecConv1d level {level}, chunks of {size}, compiled"] = (old, new, FACTOR**level)
        model = recnext_audio_causal_tiny().eval()
        old_model = old_package.streaming.recnext_audio_causal_tiny().eval()
        old_model.load_state_dict(model.state_dict())
        frame = torch.randn(1, 1, 40, 1)
        for compiled, label in ((False, ""), (True, ", compiled on a fixed-shape state")):
            old, new = (
                frame_step(s, frame, compiled)[0]
                for s in (old_package.Streamer(old_model), recconv.Streamer(model))
            )
            cases[f"audio preset, one 10 ms frame per chunk{label}"] = (old, new, PRESET_CYCLE)
        old_export = getattr(old_package.streaming, "export_onnx_step", None)  # since 6e1c075
        if old_export is not None:
            old_file = exported_frame_model(old_package.Streamer(old_model), frame, old_export)
            new_file = exported_frame_model(recconv.Streamer(model), frame)
            if old_file is not None and new_file is not None:  # None: no onnxruntime
                old, new = (onnx_streaming_step(file, frame, 1) for file in (old_file, new_file))
                cases["audio preset in onnxruntime, one frame per call"] = (old, new, PRESET_CYCLE)
        print(f"one thread, medians of {repeats} interleaved rounds after 3 warm-up rounds, per chunk:")
        for label, (old, new, steps) in cases.items():
            rounds = {
                commit: lambda old=old, steps=steps: [old() for _ in range(steps)],
                "this checkout": lambda new=new, steps=steps: [new() for _ in range(steps)],
            }
            ms = {name: t / steps for name, t in time_ms(rounds, repeats, best=False).items()}
            print(
                f"  {label}: {commit} {ms[commit]:.3f} ms, this checkout {ms['this checkout']:.3f} ms, "
                f"ratio {ms['this checkout'] / ms[commit]:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--best", action="store_true", help="report the fastest repeat instead of the median")
    parser.add_argument("--channels", type=int, default=CHANNELS, help="width of the RecConv1d of the table")
    parser.add_argument(
        "--calls",
        type=int,
        default=FACTOR ** max(LEVELS),
        help="calls of each way in a row per round, for the RecConv1d's table (1: each call between calls of "
        "the other ways, its caches cold)",
    )
    parser.add_argument(
        "--against",
        metavar="COMMIT",
        help="only time layer steps and the audio preset's Streamer against COMMIT's",
    )
    args = parser.parse_args()
    if args.against:
        return against(args.against, args.repeats, args.channels)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{'fastest' if args.best else 'median'} of {args.repeats} rounds ({args.calls} calls of each way in a row "
        "per round for the RecConv1d, one 16-chunk cycle for the audio preset); timings are noisy on a busy CPU"
    )
    goals = []
    with torch.no_grad():
        rows = layer_rows(args.repeats, args.best, args.threads, args.channels, args.calls)
        presets = preset_rows(args.repeats, args.best, args.threads)
    for threads in args.threads:
        preset = presets[threads]
        print(
            f"\n## RecConv1d({args.channels}, kernel_size={KERNEL}, factor={FACTOR}, causal=True), "
            f"{threads} thread(s)\n"
        )
        print(
            "| level | receptive field | chunk | stream ms | compiled | onnxruntime | recompute ms | compiled "
            "| onnxruntime | speedup | call floor ms | state bytes | window bytes |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows[threads]:
            ways = {
                way: [r[key] for kind in ("", "_compiled", "_onnx") if (key := f"{way}{kind}_ms") in r]
                for way in ("stream", "recompute")
            }
            speedup = min(ways["recompute"]) / min(ways["stream"])
            cells = {  # n/a: no onnxruntime
                way: " | ".join([f"{ms:.3f}" for ms in times] + ["n/a"] * (3 - len(times)))
                for way, times in ways.items()
            }
            print(
                f"| {r['level']} | {r['field']} | {r['chunk']} | {cells['stream']} | {cells['recompute']} "
                f"| {speedup:.1f}x | {r['floor_ms']:.3f} | {r['state_bytes']:,} | {r['window_bytes']:,} |"
            )
            if r["level"] >= 3:
                goals.append(
                    (f"level {r['level']}, chunk {r['chunk']}, {args.channels} channels, {threads} thread(s): "
                     f">= {SPEEDUP_GOAL:.0f}x faster than recomputing ({speedup:.1f}x)", speedup >= SPEEDUP_GOAL)
                )  # fmt: skip
        print(f"\n## Audio preset, one 10 ms frame (40 mels) per chunk, {threads} thread(s)\n")
        onnx = (
            f"; exported to ONNX for one frame per call, in onnxruntime: {preset['onnxruntime_ms']:.3f} ms"
            if "onnxruntime_ms" in preset
            else ""
        )
        print(
            f"stream {preset['stream_ms']:.3f} ms per chunk (mean of a {PRESET_CYCLE}-chunk cycle; fused for "
            f"inference, `model.fuse()`: {preset['fused_ms']:.3f} ms; compiled on a fixed-shape state: "
            f"{preset['fixed_compiled_ms']:.3f} ms{onnx}), state {preset['state_bytes']:,} bytes; recompute: "
            f"{preset['recompute_ms']:.3f} ms per output on its receptive field ({preset['field']} frames, rerun "
            f"on the last {preset['window']}), once every {PRESET_CYCLE} frames: "
            f"{preset['recompute_ms'] / PRESET_CYCLE:.3f} ms per chunk (the stream takes "
            f"{preset['stream_ms'] * PRESET_CYCLE / preset['recompute_ms']:.2f}x that)"
        )
        if threads == 1:
            for name, label in (("stream_ms", "as trained"), ("fused_ms", "fused")):
                goals.append(
                    (f"audio preset {label}, 10 ms chunk on one thread <= {PRESET_GOAL_MS} ms "
                     f"({preset[name]:.3f} ms)", preset[name] <= PRESET_GOAL_MS)
                )  # fmt: skip
    print("\n## Goals\n")
    for text, met in goals:
        print(f"- {'met' if met else 'NOT MET'}: {text}")


if __name__ == "__main__":
    main()
