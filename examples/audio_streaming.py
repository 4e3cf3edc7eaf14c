"""Keyword spotting on a live stream: a time-causal RecNeXt fed 10 ms at a time.

Trains `recnext_audio_causal_tiny` (recconv.streaming) on the embedded keyword task (see
docs/audio.md), or reuses a checkpoint of it (--checkpoint), then streams a long generated
recording of keywords and noise through it in chunks of --chunk-ms: the log-mel front end and the
network both keep a small state, so each chunk costs the same however long the stream runs. It
prints every detection with its time, and the latency per chunk.

Training examples are windows of a generated stream, labelled with the keyword that ends at the
window's end or `_none_`; the model's output at the last frame classifies the window, as
streaming does at every 16th frame (160 ms). With --data-dir, the WAV files of that folder
(16 kHz) are streamed one by one instead of the generated stream.

Writes results.json, training_curves.png, confusion_matrix.png and streaming.pt (training), then
stream.json and stream.png (streaming) to --out; with --checkpoint, only the last two. With
--export-onnx, also frame.onnx: the network for one log-mel frame per call (its state as inputs and
outputs), checked against PyTorch on the first streamed frames.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import wave
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn
from torch.utils.data import Dataset

if __package__:  # python -m examples.audio_streaming, or imported as examples.audio_streaming
    from .kit import harness, run_folder
    from .kit.audio_data import (
        CLIP_SAMPLES,
        PATTERNS,
        SAMPLE_RATE,
        Augmentation,
        LogMelFrontEnd,
        read_wav,
        synthesize_keywords,
    )
    from .kit.cli import Defaults, ExampleParser, at_least
    from .kit.data import Splits, UsageError
    from .kit.plots import _pyplot
else:  # python examples/audio_streaming.py: this folder is the first entry of sys.path
    from kit import harness, run_folder
    from kit.audio_data import (
        CLIP_SAMPLES,
        PATTERNS,
        SAMPLE_RATE,
        Augmentation,
        LogMelFrontEnd,
        read_wav,
        synthesize_keywords,
    )
    from kit.cli import Defaults, ExampleParser, at_least
    from kit.data import Splits, UsageError
    from kit.plots import _pyplot

from recconv import Streamer
from recconv.ops import pad_before
from recconv.streaming import OnnxStep, export_onnx_step, recnext_audio_causal_tiny

NAME = "audio_streaming"
MODEL = "streaming"  # the checkpoint is --out/streaming.pt
NO_KEYWORD = "_none_"
CLASSES = [*PATTERNS, NO_KEYWORD]
HOP = SAMPLE_RATE // 100  # one log-mel frame per 10 ms
OUTPUT_STRIDE = 16  # frames per output of recnext_audio_causal_tiny (stem 2 x three transitions 2)
# 145 frames (1.45 s, a keyword and some of what came before): 145 = 9 * 16 + 1, so the model's
# last output reads the window's last frame.
WINDOW_FRAMES = 9 * OUTPUT_STRIDE + 1
# A keyword "ends" when its one-second clip does; its third vowel, which decides its class, ends
# 0.33 s before that at the earliest. Training windows ending this close to a keyword's end are
# labelled with it...
POSITIVE = (-0.05, 0.15)
# ...those ending inside this span around it are ambiguous and not used for training; earlier ones
# hold at most two of its vowels and are `_none_`, which teaches the model to wait for the third...
AMBIGUOUS = (-0.35, 0.35)
# ...and a detection this close to a keyword's end counts as finding it.
MATCH = (-0.4, 0.5)
GAP_SECONDS = (0.3, 1.2)  # noise between keywords in the generated stream
NOISE_RMS = 0.01  # the generated stream's pink background noise
# Training mixes noise in and masks bands and frames; no time shift, which would cut the window's end.
AUGMENTATION = Augmentation(0.0, 0.5, (15.0, 40.0), 1, 4, 1, 4)
# Keywords per class; as many _none_ windows as keywords. With 160, the model learned its training
# keywords by heart (62 % of test windows right); 1,200 take about 3 minutes on 2 CPU cores.
TRAIN_PER_CLASS = {"full": 1200, "smoke": 3}
DEFAULTS = Defaults(
    epochs=8, batch_size=32, lr=3e-3, embedded_train=2 * TRAIN_PER_CLASS["full"] * len(PATTERNS)
)
EVAL_PER_CLASS = {"full": 40, "smoke": 2}  # validation and test keywords per class
STREAM_SECONDS = {"full": 120.0, "smoke": 6.0}
EXPORT_CHECK_FRAMES = 3 * OUTPUT_STRIDE  # frames that --export-onnx runs through onnxruntime: 3 outputs


# ------------------------------------------------------------------------------------- front end


class CausalLogMel(LogMelFrontEnd):
    """:class:`~examples.kit.audio_data.LogMelFrontEnd` made causal, so that it streams.

    Frame ``i`` is the 30 ms window that ends at sample ``(i + 1) * 160`` (zeros before the
    stream), so a waveform of ``L`` samples gives ``L // 160`` frames and each 10 ms of new
    samples completes one. Log-mels are standardised per band with fixed statistics of the
    training data (``mean``, ``std``) instead of per clip, which would read the whole clip.
    Training-mode augmentation is the parent's (noise, SpecAugment masks).

    Example:
        >>> import torch
        >>> front_end = CausalLogMel(AUGMENTATION).eval()
        >>> waveform = torch.randn(1, 1000)
        >>> state, frames = front_end.init_state(1), []
        >>> for chunk in waveform.split([230, 7, 500, 263], dim=1):
        ...     out, state = front_end.step(chunk, state)
        ...     frames.append(out)
        >>> torch.cat(frames, dim=3).shape
        torch.Size([1, 1, 40, 6])
        >>> torch.allclose(torch.cat(frames, dim=3), front_end(waveform), atol=1e-5)
        True
    """

    def __init__(
        self,
        augmentation: Augmentation,
        *,
        mean: Tensor | None = None,
        std: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> None:
        super().__init__(augmentation, noise=noise)
        spectrogram = self.melspec.spectrogram
        self.n_fft, self.hop = spectrogram.n_fft, spectrogram.hop_length
        self.melspec = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE,
            n_fft=self.n_fft,
            win_length=spectrogram.win_length,
            hop_length=self.hop,
            n_mels=self.n_mels,
            center=False,  # padded before the stream instead, so no frame reads later samples
        )
        self.register_buffer("mean", torch.zeros(self.n_mels, 1) if mean is None else mean.reshape(-1, 1))
        self.register_buffer("std", torch.ones(self.n_mels, 1) if std is None else std.reshape(-1, 1))

    def log_mel(self, waveforms: Tensor) -> Tensor:
        """Unnormalised log-mels ``(N, n_mels, L // hop)`` of waveforms ``(N, L)``."""
        return torch.log(
            self.melspec(pad_before(waveforms.unsqueeze(1), 0, self.n_fft - self.hop))[:, 0] + 1e-6
        )

    def forward(self, waveforms: Tensor) -> Tensor:
        x = self._augment_waveform(waveforms) if self.training else waveforms
        x = ((self.log_mel(x) - self.mean) / self.std).unsqueeze(1)
        if self.training:
            for _ in range(self.augmentation.freq_masks):
                x = self.freq_mask(x)
            for _ in range(self.augmentation.time_masks):
                x = self.time_mask(x)
        return x

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        """The zeros before the stream: the ``n_fft - hop`` samples the first frame reads."""
        return {"tail": self.mean.new_zeros(batch_size, self.n_fft - self.hop)}

    def step(self, samples: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The frames ``(N, 1, n_mels, F)`` that the new ``samples`` ``(N, L)`` complete (``F`` may be
        0), and the next state: the samples the next frame reads (``n_fft - hop`` to ``n_fft - 1``)."""
        joined = torch.cat((state["tail"], samples), dim=1)
        kept = self.n_fft - self.hop
        count = (joined.shape[1] - kept) // self.hop
        if count:
            frames = self.melspec(joined[:, : kept + count * self.hop].unsqueeze(1))[:, 0]
            frames = ((torch.log(frames + 1e-6) - self.mean) / self.std).unsqueeze(1)
        else:
            frames = joined.new_zeros(joined.shape[0], 1, self.n_mels, 0)
        return frames, {"tail": joined[:, count * self.hop :]}


# ------------------------------------------------------------------------------ generated stream


def keyword_stream(keywords: int, seed: int) -> tuple[Tensor, list[dict[str, Any]]]:
    """A recording ``(L,)`` of ``keywords`` one-second keyword clips of the embedded task (random
    classes) with 0.3-1.2 s between them, over pink background noise, and its events: for
    each keyword ``{"label": class, "start": s, "end": s}``."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(PATTERNS), (keywords,), generator=generator)
    clips = synthesize_keywords(labels, generator) if keywords else torch.zeros(0, CLIP_SAMPLES)
    low, high = GAP_SECONDS
    gaps = (SAMPLE_RATE * (low + (high - low) * torch.rand(keywords + 1, generator=generator))).long()
    length = int(gaps.sum()) + keywords * CLIP_SAMPLES
    pink = torch.fft.irfft(
        torch.fft.rfft(torch.randn(length, generator=generator))
        / torch.fft.rfftfreq(length, 1 / SAMPLE_RATE).clamp_min(50).sqrt(),
        n=length,
    )
    stream = pink * (NOISE_RMS / pink.pow(2).mean().sqrt())
    events, start = [], 0
    for label, clip, gap in zip(labels.tolist(), clips, gaps.tolist()):
        start += gap
        stream[start : start + CLIP_SAMPLES] += clip
        events.append(
            {
                "label": CLASSES[label],
                "start": start / SAMPLE_RATE,
                "end": (start + CLIP_SAMPLES) / SAMPLE_RATE,
            }
        )
        start += CLIP_SAMPLES
    return stream, events


class StreamWindows(Dataset):
    """Training windows of a generated stream: ``(WINDOW_FRAMES * 160,)`` samples ending at each
    chosen sample, zero-padded before the stream's start, and their labels."""

    def __init__(self, stream: Tensor, ends: Tensor, labels: Tensor) -> None:
        self.stream, self.ends, self.labels = stream, ends, labels
        self.length = WINDOW_FRAMES * HOP

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        end = int(self.ends[index])
        window = self.stream[max(end - self.length, 0) : end]
        return nn.functional.pad(window, (self.length - len(window), 0)), int(self.labels[index])


def stream_windows(per_class: int, seed: int) -> StreamWindows:
    """``per_class`` keywords per class on average (a window just after each) and as many
    ``_none_`` windows elsewhere in the same generated stream, none near a keyword's end."""
    stream, events = keyword_stream(per_class * len(PATTERNS), seed)
    generator = torch.Generator().manual_seed(seed * 7919 + 17)  # not another stream's seed
    ends = torch.tensor([event["end"] for event in events])
    low, high = POSITIVE
    positive = ends + low + (high - low) * torch.rand(len(ends), generator=generator)
    candidates = torch.rand(8 * len(ends), generator=generator) * len(stream) / SAMPLE_RATE
    offset = candidates[:, None] - ends[None, :]
    clear = ~((offset > AMBIGUOUS[0]) & (offset < AMBIGUOUS[1])).any(dim=1)
    negative = candidates[clear][: len(ends)]
    seconds = torch.cat((positive, negative))
    labels = torch.tensor(
        [CLASSES.index(event["label"]) for event in events] + [len(PATTERNS)] * len(negative)
    )
    return StreamWindows(stream, (seconds * SAMPLE_RATE).long().clamp(1, len(stream)), labels)


def embedded(args: argparse.Namespace) -> Splits:
    """Train, validation and test windows, each set from its own generated stream."""
    size = "smoke" if args.smoke else "full"
    per_class = (args.keywords_per_class or TRAIN_PER_CLASS[size], EVAL_PER_CLASS[size], EVAL_PER_CLASS[size])
    sets = [stream_windows(count, args.seed * 1009 + offset) for offset, count in enumerate(per_class)]
    info = {
        "source": f"windows of generated keyword streams, seed {args.seed}",
        "keywords_per_class": list(per_class),
    }
    return Splits(*sets, CLASSES, info)


# ----------------------------------------------------------------------------------------- model


class LastFrame(nn.Module):
    """Trains a causal per-frame model (``net``: ``(N, 1, mels, frames)`` to ``(N, classes, 1, T)``)
    as a clip classifier: its logits at the last output, which has seen the whole window."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, :, 0, -1]


def streaming_model() -> LastFrame:
    """``recnext_audio_causal_tiny`` with one output per class of :data:`CLASSES`."""
    return LastFrame(recnext_audio_causal_tiny(num_classes=len(CLASSES)))


def band_statistics(dataset: Dataset, count: int = 256) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation per mel band of the log-mels of ``dataset``'s first ``count`` inputs."""
    waves = torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    features = CausalLogMel(AUGMENTATION).eval().log_mel(waves)
    return features.mean(dim=(0, 2)), features.std(dim=(0, 2))


def train(args: argparse.Namespace) -> tuple[LastFrame, CausalLogMel, Path]:
    """Train the model on the embedded task through the examples' harness; the trained model, its
    front end and checkpoint."""
    with harness.distributed(args.device) as runtime:
        if runtime.world_size > 1:
            raise UsageError("this example trains on one process; run it without torchrun")
        splits = embedded(args)
        mean, std = band_statistics(splits.train)
        front_end = CausalLogMel(AUGMENTATION, mean=mean, std=std)
        settings = {"kind": "causal_log_mel", "mean": mean.tolist(), "std": std.tolist()}
        # The run is defined by its embedded training data; --data-dir only chooses what is streamed.
        training_args = argparse.Namespace(**{**vars(args), "data_dir": None})
        results = harness.run(
            f"{NAME} (recnext_audio_causal_tiny)",
            training_args,
            runtime,
            splits,
            {MODEL: streaming_model},
            front_end,
            {"example": NAME, "front_end": settings, "data": splits.info},
        )
    model = streaming_model()
    model.load_state_dict(run_folder.read_checkpoint(args.out / f"{MODEL}.pt")["model"])
    return model, front_end, Path(results["models"][MODEL]["checkpoint"])


def load(path: Path) -> tuple[LastFrame, CausalLogMel]:
    """The model and front end of a checkpoint this example wrote (loaded without running its code).

    Raises:
        UsageError: For an unreadable file or another example's checkpoint.
    """
    saved = run_folder.read_checkpoint(path)
    if saved.get("example") != NAME or saved.get("classes") != CLASSES:
        raise UsageError(
            f"--checkpoint {path}: not a checkpoint of {NAME} (it was written by "
            f"{saved.get('example') or 'something else'}); train one with python examples/{NAME}.py"
        )
    model = streaming_model()
    model.load_state_dict(saved["model"])
    settings = saved["front_end"]
    front_end = CausalLogMel(
        AUGMENTATION, mean=torch.tensor(settings["mean"]), std=torch.tensor(settings["std"])
    )
    return model, front_end


# ------------------------------------------------------------------------------------- streaming


def stream(
    model: LastFrame, front_end: CausalLogMel, waveform: Tensor, chunk: int, threshold: float
) -> dict[str, Any]:
    """Stream ``waveform`` ``(L,)`` through the front end and the model in chunks of ``chunk`` samples.

    Every 16th frame the model gives class probabilities; a detection is a keyword whose
    probability crosses ``threshold`` (reported once, at the output where it first does).

    Returns:
        ``detections`` (``{"time", "label", "probability"}``), ``outputs`` (time and
        probabilities of every model output), ``latency_ms`` per chunk (front end, network and
        detection) and ``mels``, the streamed log-mel frames ``(n_mels, frames)``.
    """
    model.eval()
    front_end.eval()
    streamer = Streamer(model.net)
    state = streamer.init_state(1, (front_end.n_mels,))
    mel_state = front_end.init_state(1)
    frames_seen, previous = 0, None
    detections, outputs, latencies, mels = [], [], [], []
    with torch.inference_mode():
        for samples in waveform[None].split(chunk, dim=1):
            start = time.perf_counter()
            frames, mel_state = front_end.step(samples, mel_state)
            if frames.shape[3]:
                logits, state = streamer(frames, state)
                for j, probabilities in enumerate(logits[0, :, 0].T.softmax(dim=1)):
                    # The model's outputs are at frames 0, 16, 32, ...: the first is frame frames_seen rounded up.
                    frame = -(-frames_seen // OUTPUT_STRIDE) * OUTPUT_STRIDE + j * OUTPUT_STRIDE
                    seconds = (frame + 1) * HOP / SAMPLE_RATE
                    outputs.append((seconds, probabilities))
                    best = int(probabilities[: len(PATTERNS)].argmax())
                    fired = best if probabilities[best] >= threshold else None
                    if fired is not None and fired != previous:
                        detections.append(
                            {
                                "time": round(seconds, 3),
                                "label": CLASSES[fired],
                                "probability": round(float(probabilities[best]), 4),
                            }
                        )
                    previous = fired
                frames_seen += frames.shape[3]
                mels.append(frames[0, 0])
            latencies.append(1000 * (time.perf_counter() - start))
    return {
        "detections": detections,
        "outputs": outputs,
        "latency_ms": latencies,
        "mels": torch.cat(mels, dim=1) if mels else torch.zeros(front_end.n_mels, 0),
    }


def check_onnx_packages() -> None:
    """Check that the ONNX exporter's packages and onnxruntime are there.

    Raises:
        UsageError: If one is missing.
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise UsageError(
            f"--export-onnx needs onnx, onnxscript and onnxruntime ({err.name} is missing): "
            "pip install 'recconv[onnx]'"
        ) from err


def export_frame_model(model: LastFrame, mels: Tensor, path: Path) -> dict[str, Any]:
    """Export the network for one log-mel frame per call to ``path`` (ONNX; the fixed-shape state of a
    :class:`~recconv.Streamer` as inputs and outputs), then run the log-mel frames ``mels`` ``(n_mels,
    frames)`` through it in onnxruntime, feeding its state back, against PyTorch's streamer.

    Returns:
        The file's name, the frames checked and the largest difference of their logits.
    """
    streamer = Streamer(model.net.eval())
    state = streamer.init_state(1, (mels.shape[0],), fixed_shape=True)
    export_onnx_step(streamer, torch.zeros(1, 1, mels.shape[0], 1), state, path)
    onnx_step, onnx_state, largest = OnnxStep(path), state, 0.0
    frames = mels[None, None].split(1, dim=3) if mels.shape[1] else ()
    with torch.inference_mode():
        for frame in frames:
            out, onnx_state = onnx_step(frame, onnx_state)
            expected, state = streamer(frame, state)
            largest = max(largest, (out - expected).abs().max().item())
    return {"file": path.name, "frames_checked": len(frames), "max_abs_difference": largest}


def score(detections: list[dict[str, Any]], events: list[dict[str, Any]]) -> dict[str, int]:
    """Keywords found (a detection of their class near their end, :data:`MATCH`), confused (only
    other classes detected there), missed, and false alarms (detections near no keyword)."""
    counts = {"keywords": len(events), "found": 0, "confused": 0, "missed": 0, "false_alarms": 0}
    near = [[] for _ in events]
    for detection in detections:
        matches = [i for i, e in enumerate(events) if MATCH[0] <= detection["time"] - e["end"] <= MATCH[1]]
        if not matches:
            counts["false_alarms"] += 1
        for i in matches:
            near[i].append(detection["label"])
    for event, labels in zip(events, near):
        outcome = "found" if event["label"] in labels else "confused" if labels else "missed"
        counts[outcome] += 1
    return counts


def latency_summary(latencies: list[float], chunk_ms: float) -> dict[str, float]:
    """Median, 90th and 99th percentile, mean and worst latency per chunk (ms), and the share of
    chunks processed in less time than they last (real time)."""
    values = torch.tensor(latencies, dtype=torch.float64)
    quantiles = torch.quantile(values, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)).tolist()
    return {
        "median": round(quantiles[0], 3),
        "p90": round(quantiles[1], 3),
        "p99": round(quantiles[2], 3),
        "mean": round(float(values.mean()), 3),
        "max": round(float(values.max()), 3),
        "real_time_share": round(float((values < chunk_ms).double().mean()), 4),
    }


def plot_stream(
    waveform: Tensor,
    streamed: dict[str, Any],
    events: list[dict[str, Any]],
    chunk_ms: float,
    title: str,
    path: Path,
) -> None:
    """Waveform and streamed log-mels, keyword probabilities with the detections (and the true
    keywords when known), and the latency of every chunk."""
    plt = _pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(12, 9), sharex=True, height_ratios=(1, 1.4, 1.4, 1.2))
    seconds = len(waveform) / SAMPLE_RATE
    times = torch.arange(len(waveform)) / SAMPLE_RATE
    axes[0].plot(times[::4].numpy(), waveform[::4].numpy(), lw=0.3, color="0.3")
    axes[0].set(ylabel="waveform", title=title)
    mels = streamed["mels"]
    axes[1].imshow(
        mels.numpy(),
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, mels.shape[1] * HOP / SAMPLE_RATE, 0, mels.shape[0]),
    )
    axes[1].set(ylabel="mel band (streamed)")
    colors = plt.get_cmap("tab10")
    if streamed["outputs"]:
        output_times = [t for t, _ in streamed["outputs"]]
        probabilities = torch.stack([p for _, p in streamed["outputs"]])
        for index, name in enumerate(PATTERNS):
            axes[2].plot(
                output_times, probabilities[:, index].numpy(), lw=0.8, color=colors(index), label=name
            )
    for event in events:
        index = PATTERNS.index(event["label"])
        for ax in axes[:2]:
            ax.axvspan(event["start"], event["end"], color=colors(index), alpha=0.12, lw=0)
        axes[2].text(event["end"], 1.04, event["label"], color=colors(index), ha="right", fontsize=7)
    for detection in streamed["detections"]:
        index = PATTERNS.index(detection["label"])
        axes[2].plot(detection["time"], detection["probability"], "v", color=colors(index), ms=6)
    axes[2].set(ylabel="keyword probability", ylim=(0, 1.12))
    axes[2].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    chunk_times = [(i + 1) * chunk_ms / 1000 for i in range(len(streamed["latency_ms"]))]
    axes[3].plot(chunk_times, streamed["latency_ms"], ".", ms=1.5, color="C0")
    axes[3].axhline(chunk_ms, color="C3", lw=0.8, label=f"real time ({chunk_ms:g} ms per chunk)")
    axes[3].set(ylabel="latency per chunk (ms)", xlabel="stream time (s)", yscale="log", xlim=(0, seconds))
    axes[3].legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_stream(path: Path) -> Tensor:
    """One 16 kHz WAV file's samples, or a :class:`UsageError` naming the file."""
    try:
        samples, rate = read_wav(path)
    except (wave.Error, EOFError, OSError) as err:
        raise UsageError(f"--data-dir: {path} is not a readable PCM WAV file ({err})") from None
    if rate != SAMPLE_RATE:
        raise UsageError(f"--data-dir: {path} is sampled at {rate} Hz; the model expects {SAMPLE_RATE} Hz")
    return samples


def recordings(args: argparse.Namespace) -> list[tuple[str, Tensor, list[dict[str, Any]]]]:
    """What to stream: ``(name, waveform, known keywords)`` for the generated stream, or for every
    WAV file of ``--data-dir`` (no known keywords)."""
    if args.data_dir is None:
        seconds = args.stream_seconds or STREAM_SECONDS["smoke" if args.smoke else "full"]
        keywords = max(1, round(seconds / (1 + sum(GAP_SECONDS) / 2)))
        waveform, events = keyword_stream(keywords, seed=args.seed * 1009 + 3)  # not a training stream
        return [("generated", waveform, events)]
    if not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: no such folder; expected a folder of 16 kHz WAV files")
    files = sorted(p for p in args.data_dir.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    if not files:
        raise UsageError(f"--data-dir {args.data_dir}: no .wav files to stream")
    return [(path.name, read_stream(path), []) for path in files]


# ------------------------------------------------------------------------------ command line


def _positive(kind: type, upper: float = math.inf) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < upper:
            bound = f" and below {upper:g}" if math.isfinite(upper) else ""
            raise argparse.ArgumentTypeError(f"expected a number above 0{bound}, got {text!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def parser() -> ExampleParser:
    """The shared training flags and this example's streaming flags."""
    parser = ExampleParser(__doc__, DEFAULTS, out=f"runs/{NAME}")
    parser.set_defaults(data_dir=None)
    parser.add_argument(
        "--keywords-per-class",
        type=at_least(1),
        help=f"training keywords per class (default {TRAIN_PER_CLASS['full']}; {TRAIN_PER_CLASS['smoke']} with "
        "--smoke), each with a window just after it and one _none_ window elsewhere",
    )
    group = parser.add_argument_group("streaming flags")
    group.add_argument("--checkpoint", type=Path, help=f"reuse a trained {MODEL}.pt instead of training")
    group.add_argument(
        "--chunk-ms", type=_positive(float), default=10.0, help="audio per step, in ms (default %(default)s)"
    )
    group.add_argument(
        "--stream-seconds",
        type=_positive(float),
        help=f"length of the generated stream (default {STREAM_SECONDS['full']:g}; {STREAM_SECONDS['smoke']:g} with --smoke)",
    )
    group.add_argument(
        "--threshold",
        type=_positive(float, 1.0),
        default=0.6,
        help="keyword probability that counts as a detection (default %(default)s)",
    )
    group.add_argument(
        "--threads", type=at_least(1), default=1, help="CPU threads while streaming (default %(default)s)"
    )
    group.add_argument(
        "--export-onnx",
        action="store_true",
        help="also write frame.onnx, the network for one 10 ms log-mel frame per call, checked against "
        "PyTorch (needs the onnx extra)",
    )
    for action in parser._actions:  # this example streams --data-dir; it trains on the embedded task
        if action.dest == "data_dir":
            action.help = "a folder of 16 kHz WAV files to stream instead of the generated stream"
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train (or load with ``--checkpoint``), then stream; returns the content of ``stream.json``."""
    parse = parser()
    args = parse.parse_args(argv)
    chunk = round(args.chunk_ms * SAMPLE_RATE / 1000)
    if chunk < 1:
        parse.error(f"--chunk-ms {args.chunk_ms:g}: less than one sample at {SAMPLE_RATE} Hz")
    training_flags = {
        "--epochs": args.epochs_given,
        "--batch-size": args.batch_size_given,
        "--keywords-per-class": args.keywords_per_class is not None,
        "--resume": args.resume,
    }
    if args.checkpoint is not None and any(training_flags.values()):
        given = " and ".join(flag for flag, on in training_flags.items() if on)
        parse.error(f"{given} set training; --checkpoint reuses a trained model and trains nothing")
    try:
        written = sorted(
            [*args.out.glob("stream.json"), *args.out.glob("stream*.png"), *args.out.glob("frame.onnx")]
        )
        if written and not args.overwrite:
            raise UsageError(
                f"--out {args.out} holds a streaming run ({', '.join(p.name for p in written)}); "
                "replace it with --overwrite, or choose another --out"
            )
        if args.checkpoint is None:
            run_folder.check_out(args.out, [MODEL], resume=args.resume, overwrite=args.overwrite)
        elif args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {args.out}: is a file; expected a folder for stream.json and figures")
        if args.export_onnx:
            check_onnx_packages()  # before training: a missing package fails at once
        if args.checkpoint is not None:
            model, front_end = load(args.checkpoint)
            checkpoint = args.checkpoint
        sources = recordings(args)  # before training: a bad --data-dir fails at once
        if args.checkpoint is None:
            model, front_end, checkpoint = train(args)
            checkpoint = args.out / checkpoint
    except UsageError as err:
        parse.error(str(err))
    model, front_end = model.cpu(), front_end.cpu()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "example": NAME,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "checkpoint": str(checkpoint),
        "chunk_ms": chunk * 1000 / SAMPLE_RATE,
        "chunk_samples": chunk,
        "threshold": args.threshold,
        "threads": args.threads,
        "torch": torch.__version__,
        "streams": {},
    }
    streamed_mels = {}
    for name, waveform, events in sources:
        streamed = stream(model, front_end, waveform, chunk, args.threshold)
        streamed_mels[name] = streamed["mels"]
        latency = latency_summary(streamed["latency_ms"], results["chunk_ms"])
        summary: dict[str, Any] = {
            "seconds": len(waveform) / SAMPLE_RATE,
            "chunks": len(streamed["latency_ms"]),
            "latency_ms": latency,
            "detections": streamed["detections"],
        }
        print(
            f"{name}: {summary['seconds']:.1f} s in {summary['chunks']} chunks of {results['chunk_ms']:g} ms"
        )
        for detection in streamed["detections"]:
            print(
                f"  {detection['time']:8.2f} s  {detection['label']}  ({100 * detection['probability']:.0f}%)"
            )
        if events:
            summary["keywords"] = events
            summary["score"] = score(streamed["detections"], events)
            print("  " + ", ".join(f"{key} {value}" for key, value in summary["score"].items()))
        print(
            f"  latency per chunk: median {latency['median']:.2f} ms, 99th percentile {latency['p99']:.2f} ms, "
            f"worst {latency['max']:.2f} ms; {100 * latency['real_time_share']:.1f}% of chunks faster than real time"
        )
        summary["latency_per_chunk_ms"] = [round(value, 4) for value in streamed["latency_ms"]]
        results["streams"][name] = summary
        figure = "stream.png" if name == "generated" else f"stream_{Path(name).stem}.png"
        plot_stream(waveform, streamed, events, results["chunk_ms"], f"{NAME}: {name}", args.out / figure)
    if args.export_onnx:
        first = next(iter(results["streams"]))
        mels = streamed_mels[first][:, :EXPORT_CHECK_FRAMES]
        results["onnx"] = export_frame_model(model, mels, args.out / "frame.onnx")
        print(
            f"wrote frame.onnx: one log-mel frame per call; over the first {results['onnx']['frames_checked']} "
            f"frames of {first}, its logits differ from PyTorch's by at most "
            f"{results['onnx']['max_abs_difference']:.2g}"
        )
    partial = args.out / "stream.json.partial"  # written whole, then renamed: never half a file
    partial.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(partial, args.out / "stream.json")
    print(
        f"wrote stream.json and {'stream.png' if args.data_dir is None else 'stream_<file>.png'} to {args.out}"
    )
    return results


if __name__ == "__main__":
    main()
