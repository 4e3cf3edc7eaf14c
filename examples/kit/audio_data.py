"""Data for the keyword-spotting example: the embedded synthetic task, Speech Commands folders
and the log-mel front end."""

from __future__ import annotations

import hashlib
import itertools
import re
import warnings
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from .data import Splits, UsageError, check_classes, listed, warn_skipped

SAMPLE_RATE = 16_000
CLIP_SAMPLES = SAMPLE_RATE  # every example is one second
UNKNOWN, SILENCE = "_unknown_", "_silence_"
BACKGROUND = "_background_noise_"
LAYOUT = "DIR/<word>/<speaker>_nohash_<n>.wav (16 kHz PCM WAV), as in Google Speech Commands"


# The embedded task. Every clip holds 8 syllable slots of 120 ms. Three slots, at least two slots
# apart, hold vowels; the other slots hold consonant-like noise bursts or silence. The class is
# the pattern of repeats among the three vowels, whatever the vowels are: "ABA" is a.i.a as well as
# u.o.u. Every class uses every vowel and every consonant, so no syllable tells the class; ABA and
# ABC differ only in whether the first vowel returns 600-900 ms later (docs/audio.md says why a
# small receptive field cannot tell such classes apart).
PATTERNS = ("AAA", "AAB", "ABA", "ABB", "ABC")
VOWELS = {  # formant frequencies in Hz (F1, F2, F3); o and u are close, as in speech
    "a": (750, 1200, 2600),
    "e": (500, 1800, 2600),
    "i": (300, 2300, 3000),
    "o": (500, 900, 2500),
    "u": (350, 800, 2400),
}
CONSONANTS = {  # noise-band centres in Hz and burst length in s
    "s": ((4500, 6000, 7000), 0.05),
    "f": ((1500, 3000, 4500), 0.05),
    "k": ((2000, 3500, 5000), 0.02),
}
SLOTS, SLOT_SECONDS, SYLLABLE_SECONDS = 8, 0.12, 0.11
# Neighbouring vowels at least 2 slots apart, the first and last at least 5 (600 ms).
_VOWEL_SLOTS = [
    c
    for c in itertools.combinations(range(SLOTS), 3)
    if c[1] - c[0] >= 2 and c[2] - c[1] >= 2 and c[2] - c[0] >= 5
]


def _formants(source: Tensor, centres: Sequence[float], scale: Tensor, bandwidth: float) -> Tensor:
    """Filter ``source`` (n, L) with Gaussian resonances at ``centres * scale`` (n, 1)."""
    freqs = torch.fft.rfftfreq(source.shape[1], 1 / SAMPLE_RATE)
    response = sum(
        0.6**i * torch.exp(-0.5 * ((freqs - f * scale) / (bandwidth * f * scale)) ** 2)
        for i, f in enumerate(centres)
    )
    return torch.fft.irfft(torch.fft.rfft(source) * response, n=source.shape[1])


def _syllables(kind: str, scale: Tensor, generator: torch.Generator) -> Tensor:
    """``len(scale)`` syllables of one kind, ``SYLLABLE_SECONDS`` long, unit RMS.

    Vowels: a sawtooth at a random pitch (90-260 Hz, gliding up to 30 % up or down) through the
    vowel's formants; consonants: white noise through a high band. ``scale`` shifts all
    formants of a clip together, like a speaker's vocal tract length.
    """
    n, length = len(scale), round(SYLLABLE_SECONDS * SAMPLE_RATE)
    t = torch.arange(length) / SAMPLE_RATE
    if kind in VOWELS:
        duration = 0.07 + 0.04 * torch.rand(n, 1, generator=generator)
        pitch = 90 + 170 * torch.rand(n, 1, generator=generator)
        glide = 0.6 * (torch.rand(n, 1, generator=generator) - 0.5)
        phase = torch.cumsum(pitch * (1 + glide * t / SYLLABLE_SECONDS) / SAMPLE_RATE, dim=1)
        x = _formants(2 * (phase % 1) - 1, VOWELS[kind], scale, bandwidth=0.15)
    else:
        band, shortest = CONSONANTS[kind]
        duration = shortest + 0.04 * torch.rand(n, 1, generator=generator)
        x = _formants(torch.randn(n, length, generator=generator), band, scale, bandwidth=0.25)
    x = x * torch.clamp(torch.minimum(t / 0.005, (duration - t) / 0.02), 0, 1)  # 5 ms attack, 20 ms release
    return x / x.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)


SYLLABLES = (*VOWELS, *CONSONANTS)  # the indices keyword_layout uses


def keyword_layout(labels: Tensor, generator: torch.Generator) -> Tensor:
    """What each of the ``SLOTS`` slots of each clip holds: an index into ``SYLLABLES``, or -1.

    Three slots, at least two apart, hold vowels whose repeats follow ``PATTERNS[label]``, with
    the vowels drawn at random (distinct letters get distinct vowels); every other slot holds a
    random consonant, or silence (30 %).
    """
    n = len(labels)
    consonants = torch.arange(len(VOWELS), len(SYLLABLES))
    content = consonants[torch.randint(len(consonants), (n, SLOTS), generator=generator)]
    content[torch.rand(n, SLOTS, generator=generator) < 0.3] = -1
    slots = torch.tensor(_VOWEL_SLOTS)[torch.randint(len(_VOWEL_SLOTS), (n,), generator=generator)]
    letters = torch.tensor([[ord(c) - ord("A") for c in pattern] for pattern in PATTERNS])[labels]
    vowels = torch.rand(n, len(VOWELS), generator=generator).argsort(dim=1).gather(1, letters)
    return content.scatter_(1, slots, vowels)


def synthesize_keywords(labels: Tensor, generator: torch.Generator) -> Tensor:
    """One-second clips ``(len(labels), 16000)`` laid out by :func:`keyword_layout`.

    Random per clip besides the layout: onsets (+-15 ms), each syllable's pitch, glide, length
    and loudness (+-6 dB), a speaker scale of the formants (+-12 %), pink background noise at
    0-20 dB SNR and the overall level.
    """
    n = len(labels)
    content = keyword_layout(labels, generator)
    scale = 0.88 + 0.24 * torch.rand(n, 1, generator=generator)
    jitter = 0.03 * (torch.rand(n, SLOTS, generator=generator) - 0.5)
    onsets = 0.02 + 0.02 * torch.rand(n, 1, generator=generator) + SLOT_SECONDS * torch.arange(SLOTS) + jitter
    gains = 0.3 * 10 ** ((12 * torch.rand(n, SLOTS, generator=generator) - 6) / 20)
    waves = torch.zeros(n * CLIP_SAMPLES)
    offsets = torch.arange(round(SYLLABLE_SECONDS * SAMPLE_RATE))
    for index, kind in enumerate(SYLLABLES):
        clip, slot = (content == index).nonzero(as_tuple=True)
        if len(clip) == 0:
            continue
        sound = _syllables(kind, scale[clip], generator) * gains[clip, slot, None]
        position = (onsets[clip, slot] * SAMPLE_RATE).long()[:, None] + offsets
        inside = position < CLIP_SAMPLES  # onsets are >= 5 ms; the last syllable may run past the end
        waves.index_add_(0, (clip[:, None] * CLIP_SAMPLES + position)[inside], sound[inside])
    waves = waves.view(n, CLIP_SAMPLES)

    pink = torch.fft.irfft(
        torch.fft.rfft(torch.randn(n, CLIP_SAMPLES, generator=generator))
        / torch.fft.rfftfreq(CLIP_SAMPLES, 1 / SAMPLE_RATE).clamp_min(50).sqrt(),
        n=CLIP_SAMPLES,
    )
    snr_db = 20 * torch.rand(n, 1, generator=generator)
    signal_rms = waves.pow(2).mean(1, keepdim=True).sqrt()
    waves = waves + pink / pink.pow(2).mean(1, keepdim=True).sqrt() * signal_rms * 10 ** (-snr_db / 20)
    level = 0.1 + 0.8 * torch.rand(n, 1, generator=generator)
    return waves / waves.abs().amax(1, keepdim=True) * level


def synthetic_keywords(
    train_per_class: int, val_per_class: int, test_per_class: int, seed: int = 0
) -> Splits:
    """The embedded task: balanced train, validation and test sets generated from ``seed``."""
    sets = []
    for offset, per_class in enumerate((train_per_class, val_per_class, test_per_class)):
        labels = torch.arange(len(PATTERNS)).repeat_interleave(per_class)
        generator = torch.Generator().manual_seed(seed * 1009 + offset)
        waves = [synthesize_keywords(chunk, generator) for chunk in labels.split(500)]  # bounded memory
        sets.append(TensorDataset(torch.cat(waves), labels))
    info = {
        "source": f"embedded synthetic keywords, seed {seed}",
        "per_class": [train_per_class, val_per_class, test_per_class],
    }
    return Splits(*sets, list(PATTERNS), info)


def read_wav(path: str | Path) -> tuple[Tensor, int]:
    """Samples in [-1, 1] (channels averaged to mono) and the sample rate of a PCM WAV file.

    Uses the standard library's :mod:`wave` (8, 16, 24 or 32-bit integer PCM), so no FFmpeg or
    torchcodec is needed. Raises ``wave.Error``, ``EOFError`` or ``OSError`` for unreadable files.
    """
    with wave.open(str(path), "rb") as file:
        channels, width, rate = file.getnchannels(), file.getsampwidth(), file.getframerate()
        raw = file.readframes(file.getnframes())
    count = len(raw) // (width * channels) * channels
    data = (
        torch.frombuffer(bytearray(raw[: count * width]), dtype=torch.uint8)
        if count
        else torch.zeros(0, dtype=torch.uint8)
    )
    if width == 1:  # 8-bit WAV is unsigned
        samples = (data.float() - 128.0) / 128.0
    elif width == 3:  # little-endian 24-bit: assemble, then sign-extend
        b = data.view(-1, 3).int()
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        samples = torch.where(value >= 1 << 23, value - (1 << 24), value).float() / float(1 << 23)
    elif width in (2, 4):
        dtype = torch.int16 if width == 2 else torch.int32
        samples = data.view(dtype).float() / float(1 << (8 * width - 1))
    else:
        raise wave.Error(f"unsupported sample width {width} bytes")
    return samples.view(-1, channels).mean(dim=1), rate


def fit_length(samples: Tensor, length: int = CLIP_SAMPLES) -> Tensor:
    """Zero-pad at the end or cut the end to ``length`` samples."""
    if samples.shape[-1] >= length:
        return samples[..., :length]
    return nn.functional.pad(samples, (0, length - samples.shape[-1]))


def speaker_split(filename: str, validation_percent: float = 10.0, testing_percent: float = 10.0) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a Speech Commands file name, by its speaker.

    The rule of the dataset's README (and TensorFlow's ``input_data.which_set``): the SHA-1 of the
    name up to ``_nohash_`` picks a stable percentage, so a speaker's files stay in one split
    and the split never changes as files are added.
    """
    speaker = re.sub(r"_nohash_.*$", "", Path(filename).name)
    most = 2**27 - 1
    percent = (int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % (most + 1)) * (100.0 / most)
    if percent < validation_percent:
        return "val"
    if percent < validation_percent + testing_percent:
        return "test"
    return "train"


def _files(count: int, kind: str = "") -> str:
    return f"{count} {kind}WAV file{'' if count == 1 else 's'}"


@dataclass
class _Scan:
    """What scanning a folder's WAV files found besides the good ones (relative paths)."""

    unreadable: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)  # shorter than their header says
    wrong_rate: list[str] = field(default_factory=list)
    long: list[str] = field(default_factory=list)  # longer than CLIP_SAMPLES: the end is cut


def _scan(root: Path, folder: Path, scan: _Scan) -> list[str]:
    """Relative paths of the readable 16 kHz WAV files (``.wav`` in any case) in ``folder``;
    the others are listed in ``scan``. Reads headers and each file's last frame, not the samples."""
    found = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and p.is_file()):
        relative = path.relative_to(root).as_posix()
        try:
            with wave.open(str(path), "rb") as file:
                rate, frames = file.getframerate(), file.getnframes()
                if frames == 0:
                    raise EOFError("no samples")
                file.setpos(frames - 1)
                complete = len(file.readframes(1)) == file.getsampwidth() * file.getnchannels()
        except (wave.Error, EOFError, OSError):
            scan.unreadable.append(relative)
            continue
        if not complete:
            scan.truncated.append(relative)
        elif rate != SAMPLE_RATE:
            scan.wrong_rate.append(f"{relative} ({rate} Hz)")
        else:
            found.append(relative)
            if frames > CLIP_SAMPLES:
                scan.long.append(relative)
    return found


class SpeechCommandsClips(Dataset):
    """One-second waveforms ``(16000,)`` and labels of Speech Commands files, read on access.

    ``None`` paths are ``_silence_`` examples: a one-second stretch of background noise at a
    random volume, the same for a given index every time (zeros without background noise).
    """

    def __init__(
        self, root: Path, items: list[tuple[str | None, int]], background: list[Tensor], seed: int
    ) -> None:
        self.root, self.items, self.background, self.seed = root, items, background, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.items[index]
        if path is not None:
            return fit_length(read_wav(self.root / path)[0]), label
        if not self.background:
            return torch.zeros(CLIP_SAMPLES), label
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        noise = self.background[int(torch.randint(len(self.background), (1,), generator=generator))]
        start = int(torch.randint(noise.shape[0] - CLIP_SAMPLES + 1, (1,), generator=generator))
        return noise[start : start + CLIP_SAMPLES] * torch.rand(1, generator=generator), label


def _read_lists(root: Path) -> dict[str, str] | None:
    """Relative path -> split from ``validation_list.txt`` and ``testing_list.txt``, or ``None``."""
    present = {name: (root / f"{name}_list.txt").is_file() for name in ("validation", "testing")}
    if not any(present.values()):
        return None
    if not all(present.values()):
        found = next(name for name, here in present.items() if here)
        missing = next(name for name, here in present.items() if not here)
        raise UsageError(
            f"--data-dir {root}: found {found}_list.txt but not {missing}_list.txt; "
            "give both, or neither for a split by speaker"
        )
    splits = {}
    for name, split in (("validation", "val"), ("testing", "test")):
        for line in (root / f"{name}_list.txt").read_text().splitlines():
            if line.strip():
                splits[line.strip()] = split
    return splits


def _load_background(root: Path, scan: _Scan) -> list[Tensor]:
    folder = root / BACKGROUND
    if not folder.is_dir():
        return []
    background = _Scan(scan.unreadable, scan.truncated, scan.wrong_rate)  # noise files may be long
    noises = [read_wav(root / path)[0] for path in _scan(root, folder, background)]
    return [noise for noise in noises if noise.shape[0] >= CLIP_SAMPLES]


def load_speech_commands(root: str | Path, words: Sequence[str] | None = None, seed: int = 0) -> Splits:
    """Train, validation and test sets of a folder in the Google Speech Commands layout.

    Every folder of ``root`` not starting with ``_`` is a word. The split follows
    ``validation_list.txt`` and ``testing_list.txt`` when both exist, otherwise
    :func:`speaker_split`. Without ``words`` every word is a class (35 for Speech Commands v2).
    With ``words`` the classes are those words, ``_unknown_`` (the other words) and
    ``_silence_`` (background noise), as in the 12-class protocol; each split gets as many
    ``_unknown_`` (drawn with ``seed``) and ``_silence_`` examples as its average word has.

    Files that the :mod:`wave` module cannot read, or that are shorter than their header says
    (truncated), are skipped with a warning that counts them (``skipped_unreadable`` and
    ``skipped_truncated`` in ``info``). Clips longer than one second are cut to their first
    second, said once in a warning (``cut_to_one_second``). Files at another sample rate are
    refused, not resampled: a mixed folder usually means a mistake, and a silent resample would
    hide it. A class missing from the training set is an error; one missing from validation or
    test a warning (``classes_missing``).

    Raises:
        UsageError: (a ``ValueError``) if ``root`` is not a folder, holds no word folders with WAV files, has
            files at a sample rate other than 16 kHz, names words it lacks, has only one of
            the two list files, or leaves a split empty.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"--data-dir {root}: no such folder; expected {LAYOUT}")
    scan = _Scan()
    files: dict[str, list[str]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        found = _scan(root, folder, scan)
        if found:
            files[folder.name] = found
    background = _load_background(root, scan)
    if scan.wrong_rate:
        raise UsageError(
            f"--data-dir {root}: {_files(len(scan.wrong_rate))} not sampled at {SAMPLE_RATE} Hz "
            f"({listed(scan.wrong_rate)}); this example does not resample: convert them first "
            f"(e.g. torchaudio.functional.resample, or sox in.wav -r {SAMPLE_RATE} out.wav)"
        )
    warn_skipped(root, scan.unreadable, "unreadable WAV files")
    warn_skipped(root, scan.truncated, "truncated WAV files (shorter than their header says)")
    if scan.long:
        warnings.warn(
            f"--data-dir {root}: {_files(len(scan.long))} longer than the model's one second "
            f"({listed(scan.long)}); each is cut to its first second",
            UserWarning,
            stacklevel=2,
        )
    if not files:
        raise UsageError(f"--data-dir {root}: no word folders with readable .wav files; expected {LAYOUT}")
    if words is not None:
        missing = [word for word in words if word not in files]
        if missing:
            raise UsageError(f"--words: {root} has no folder for {missing}; it has {sorted(files)}")

    lists = _read_lists(root)
    by_split: dict[str, dict[str, list[str]]] = {split: {} for split in ("train", "val", "test")}
    for word, paths in files.items():
        for path in paths:
            split = lists.get(path, "train") if lists is not None else speaker_split(path)
            by_split[split].setdefault(word, []).append(path)

    classes = list(files) if words is None else [*words, UNKNOWN, SILENCE]
    datasets = {}
    for offset, (split, found) in enumerate(by_split.items()):
        if words is None:
            items: list[tuple[str | None, int]] = [
                (p, classes.index(w)) for w, paths in found.items() for p in paths
            ]
        else:
            items = [(p, classes.index(w)) for w in words for p in found.get(w, [])]
            per_class = round(len(items) / len(words))
            others = [p for w, paths in found.items() if w not in words for p in paths]
            generator = torch.Generator().manual_seed(seed * 7919 + offset)
            chosen = torch.randperm(len(others), generator=generator)[:per_class].sort().values
            items += [(others[i], classes.index(UNKNOWN)) for i in chosen.tolist()]
            items += [(None, classes.index(SILENCE))] * per_class
        if not items:
            rule = "validation_list.txt/testing_list.txt" if lists is not None else "the split by speaker"
            raise UsageError(
                f"--data-dir {root}: {rule} leaves the {split} set empty; add more speakers or give both list files"
            )
        datasets[split] = SpeechCommandsClips(root, items, background, seed * 31 + offset)

    info: dict[str, Any] = {
        "source": f"Speech Commands layout at {root}",
        "split": "validation_list.txt / testing_list.txt" if lists is not None else "by speaker (SHA-1 rule)",
        "skipped_unreadable": len(scan.unreadable),
        "skipped_truncated": len(scan.truncated),
        "cut_to_one_second": len(scan.long),
        "background_noise_files": len(background),
        "classes_missing": check_classes(
            root, classes, {split: [label for _, label in data.items] for split, data in datasets.items()}
        ),
    }
    return Splits(datasets["train"], datasets["val"], datasets["test"], classes, info)


def background_crops(splits: Splits, count: int = 256, seed: int = 0) -> Tensor | None:
    """``count`` one-second crops of the background noise of a Speech Commands split, or ``None``."""
    background = getattr(splits.train, "background", [])
    if not background:
        return None
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for _ in range(count):
        noise = background[int(torch.randint(len(background), (1,), generator=generator))]
        start = int(torch.randint(noise.shape[0] - CLIP_SAMPLES + 1, (1,), generator=generator))
        crops.append(noise[start : start + CLIP_SAMPLES])
    return torch.stack(crops)


class Augmentation(NamedTuple):
    """Training-time augmentation of :class:`LogMelFrontEnd`.

    Attributes:
        shift_ms: Largest time shift of a clip (zero-filled).
        noise_probability: Share of clips that get noise mixed in.
        snr_db: Range of the signal-to-noise ratio of that noise.
        freq_masks: SpecAugment frequency masks per clip, each up to ``freq_mask_bands`` wide.
        freq_mask_bands: Widest frequency mask, in mel bands.
        time_masks: SpecAugment time masks per clip, each up to ``time_mask_frames`` wide.
        time_mask_frames: Widest time mask, in frames.
    """

    shift_ms: float
    noise_probability: float
    snr_db: tuple[float, float]
    freq_masks: int
    freq_mask_bands: int
    time_masks: int
    time_mask_frames: int


# Speech Commands: the usual +-100 ms shift and background noise, and SpecAugment's masks.
SPEECH_AUGMENTATION = Augmentation(100.0, 0.8, (5.0, 30.0), 2, 6, 2, 6)
# The synthetic clips already vary in timing, loudness and noise, and a vowel lasts 7-11 frames:
# milder settings keep the syllables that decide the class (a 100 ms shift could push the last
# vowel out of the clip).
SYNTHETIC_AUGMENTATION = Augmentation(30.0, 0.5, (15.0, 40.0), 1, 4, 1, 4)


class LogMelFrontEnd(nn.Module):
    """Waveforms ``(N, 16000)`` to normalised log-mel spectrograms, augmented in training mode.

    40 mel bands from 30 ms windows every 10 ms (101 frames per second), log-compressed, then
    standardised per clip. In ``train()`` mode it first shifts each clip in time and mixes in
    noise (background crops when given, white noise otherwise) at a random SNR, and afterwards
    applies SpecAugment frequency and time masks, as ``augmentation`` says. In ``eval()`` mode it
    only computes the features.

    Args:
        augmentation: What to do in training mode.
        sequence: Return ``(N, n_mels, frames)`` for 1D models instead of ``(N, 1, n_mels, frames)``.
        n_mels: Mel bands.
        noise: Noise clips ``(K, 16000)`` to mix in, or ``None`` for white noise.
    """

    def __init__(
        self,
        augmentation: Augmentation,
        *,
        sequence: bool = False,
        n_mels: int = 40,
        noise: Tensor | None = None,
    ) -> None:
        super().__init__()
        import torchaudio

        window = round(0.030 * SAMPLE_RATE)
        self.melspec = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=window, win_length=window, hop_length=round(0.010 * SAMPLE_RATE), n_mels=n_mels
        )
        self.augmentation = augmentation
        self.freq_mask = torchaudio.transforms.FrequencyMasking(augmentation.freq_mask_bands, iid_masks=True)
        self.time_mask = torchaudio.transforms.TimeMasking(augmentation.time_mask_frames, iid_masks=True)
        self.sequence, self.n_mels = sequence, n_mels
        self.shift = round(augmentation.shift_ms / 1000 * SAMPLE_RATE)
        self.register_buffer("noise", noise, persistent=False)

    def _augment_waveform(self, x: Tensor) -> Tensor:
        n, length = x.shape
        shifts = torch.randint(-self.shift, self.shift + 1, (n, 1), device=x.device)
        source = torch.arange(length, device=x.device) - shifts
        x = torch.where((source >= 0) & (source < length), x.gather(1, source.clamp(0, length - 1)), 0.0)
        if self.noise is None:
            noise = torch.randn_like(x)
        else:
            noise = self.noise[torch.randint(len(self.noise), (n,), device=x.device)]
        low, high = self.augmentation.snr_db
        snr = low + (high - low) * torch.rand(n, 1, device=x.device)
        scale = x.pow(2).mean(1, keepdim=True).sqrt() / noise.pow(2).mean(1, keepdim=True).sqrt().clamp_min(
            1e-8
        )
        gate = (torch.rand(n, 1, device=x.device) < self.augmentation.noise_probability).float()
        return x + gate * scale * 10 ** (-snr / 20) * noise

    def forward(self, waveforms: Tensor) -> Tensor:
        x = self._augment_waveform(waveforms) if self.training else waveforms
        x = torch.log(self.melspec(x) + 1e-6)
        x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True) + 1e-5)
        x = x.unsqueeze(1)
        if self.training:
            for _ in range(self.augmentation.freq_masks):
                x = self.freq_mask(x)
            for _ in range(self.augmentation.time_masks):
                x = self.time_mask(x)
        return x.squeeze(1) if self.sequence else x
