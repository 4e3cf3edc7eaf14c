"""The keyword-spotting example: smoke runs, torchrun, the synthetic task, Speech Commands folders."""

from __future__ import annotations

import hashlib
import json
import math
import wave
from pathlib import Path

import pytest
import torch
import torchaudio

from examples import audio_keywords
from examples.kit import audio_data
from examples.kit.data import UsageError
from recconv.models import PRESETS, create_model, load_checkpoint

WORDS = {"yes": 440.0, "no": 660.0, "up": 880.0}  # tone frequency per keyword
OTHERS = {"cat": 330.0, "dog": 550.0}  # words that become _unknown_
SPEAKERS = [f"{i:08x}" for i in range(0xC0FFEE00, 0xC0FFEE00 + 24)]


def write_wav(path: Path, samples: torch.Tensor, rate: int = 16_000, width: int = 2) -> None:
    """Write ``samples`` (frames, channels) in [-1, 1] as integer PCM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scaled = torch.round(samples * (2 ** (8 * width - 1) - 1)).long()
    if width == 1:
        data = (scaled + 128).to(torch.uint8).numpy().tobytes()
    elif width == 3:
        data = b"".join(int(v).to_bytes(3, "little", signed=True) for v in scaled.flatten())
    else:
        data = scaled.to(torch.int16 if width == 2 else torch.int32).numpy().tobytes()
    with wave.open(str(path), "wb") as file:
        file.setnchannels(samples.shape[1])
        file.setsampwidth(width)
        file.setframerate(rate)
        file.writeframes(data)


def tone(frequency: float, seconds: float = 0.25, rate: int = 16_000) -> torch.Tensor:
    t = torch.arange(round(seconds * rate)) / rate
    return (0.5 * torch.sin(2 * math.pi * frequency * t)).unsqueeze(1)


def write_folder(root: Path, speakers: list[str] = SPEAKERS, background: bool = True) -> list[str]:
    """A tiny Speech Commands folder of tones; returns the relative paths of its word files."""
    paths = []
    for words, who in ((WORDS, speakers), (OTHERS, speakers[:8])):
        for word, frequency in words.items():
            for speaker in who:
                for n in range(2 if speaker == speakers[0] else 1):
                    relative = f"{word}/{speaker}_nohash_{n}.wav"
                    write_wav(root / relative, tone(frequency * (1 + n / 10)))
                    paths.append(relative)
    if background:
        write_wav(root / audio_data.BACKGROUND / "hum.wav", 0.3 * torch.rand(40_000, 1) - 0.15)
    return paths


def reference_split(relative: str) -> str:
    """The Speech Commands README's rule, written out independently."""
    speaker = relative.split("/")[-1].split("_nohash_")[0]
    value = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % 2**27
    percent = value * 100.0 / (2**27 - 1)
    return "val" if percent < 10 else "test" if percent < 20 else "train"


def split_paths(dataset: audio_data.SpeechCommandsClips) -> set[str]:
    return {path for path, _ in dataset.items if path is not None}


# ---------------------------------------------------------------- the synthetic task and front end


def test_keyword_layout_follows_the_patterns() -> None:
    labels = torch.arange(len(audio_data.PATTERNS)).repeat_interleave(40)
    layout = audio_data.keyword_layout(labels, torch.Generator().manual_seed(3))
    vowels = len(audio_data.VOWELS)
    for row, label in zip(layout.tolist(), labels.tolist()):
        slots = [i for i, kind in enumerate(row) if 0 <= kind < vowels]
        assert len(slots) == 3 and slots[1] - slots[0] >= 2 and slots[2] - slots[1] >= 2
        first_seen: dict[int, str] = {}
        pattern = "".join(first_seen.setdefault(row[s], "ABC"[len(first_seen)]) for s in slots)
        assert pattern == audio_data.PATTERNS[label]
        assert all(kind == -1 or kind >= vowels for i, kind in enumerate(row) if i not in slots)
    for label in range(len(audio_data.PATTERNS)):  # every class uses every vowel
        rows = layout[labels == label]
        assert set(rows[(rows >= 0) & (rows < vowels)].tolist()) == set(range(vowels))


def test_synthetic_keywords_are_deterministic_for_a_seed() -> None:
    first = audio_data.synthetic_keywords(2, 1, 1, seed=5)
    again = audio_data.synthetic_keywords(2, 1, 1, seed=5)
    other = audio_data.synthetic_keywords(2, 1, 1, seed=6)
    assert first.classes == list(audio_data.PATTERNS)
    assert [len(first.train), len(first.val), len(first.test)] == [10, 5, 5]
    waves, labels = first.train.tensors
    assert waves.shape == (10, 16_000) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert waves.abs().amax(dim=1).min() > 0.09 and waves.abs().max() <= 0.9 + 1e-6
    assert torch.equal(waves, again.train.tensors[0]) and torch.equal(
        first.test.tensors[0], again.test.tensors[0]
    )
    assert not torch.allclose(waves, other.train.tensors[0])
    assert not torch.allclose(first.val.tensors[0][:5], first.test.tensors[0][:5])


def test_front_end_features_and_training_augmentation() -> None:
    front = audio_data.LogMelFrontEnd(audio_data.SPEECH_AUGMENTATION).eval()
    waves = audio_data.synthetic_keywords(1, 1, 1, seed=0).train.tensors[0]
    mel = torchaudio.transforms.MelSpectrogram(16_000, n_fft=480, win_length=480, hop_length=160, n_mels=40)
    expected = torch.log(mel(waves) + 1e-6)
    expected = (expected - expected.mean(dim=(1, 2), keepdim=True)) / (
        expected.std(dim=(1, 2), keepdim=True) + 1e-5
    )
    features = front(waves)
    assert features.shape == (5, 1, 40, 101)
    torch.testing.assert_close(features[:, 0], expected)
    sequence = audio_data.LogMelFrontEnd(audio_data.SPEECH_AUGMENTATION, sequence=True).eval()
    torch.testing.assert_close(sequence(waves), expected)
    torch.manual_seed(0)
    augmented = front.train()(waves)
    assert augmented.shape == features.shape and not torch.allclose(augmented, features)
    assert (augmented == 0).any()  # SpecAugment masks


# ---------------------------------------------------------------- reading WAV files


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_read_wav_integer_pcm(tmp_path: Path, width: int, channels: int) -> None:
    samples = torch.linspace(-0.9, 0.9, 50).unsqueeze(1).repeat(1, channels)
    if channels == 2:
        samples[:, 1] = 0.5  # read as the mean of both channels
    write_wav(tmp_path / "a.wav", samples, rate=8_000, width=width)
    read, rate = audio_data.read_wav(tmp_path / "a.wav")
    assert rate == 8_000 and read.shape == (50,)
    torch.testing.assert_close(read, samples.mean(dim=1), atol=2.0 / 2 ** (8 * width - 1), rtol=0)


def test_speaker_split_is_the_readme_rule() -> None:
    names = [
        f"{word}/{speaker}_nohash_{n}.wav" for word in ("yes", "cat") for speaker in SPEAKERS for n in (0, 3)
    ]
    assert [audio_data.speaker_split(name) for name in names] == [reference_split(name) for name in names]
    assert {reference_split(name) for name in names} == {
        "train",
        "val",
        "test",
    }  # the fixture covers all splits


# ---------------------------------------------------------------- Speech Commands folders


def test_folder_without_lists_splits_by_speaker(tmp_path: Path) -> None:
    paths = write_folder(tmp_path)
    splits = audio_data.load_speech_commands(tmp_path)
    assert splits.classes == ["cat", "dog", "no", "up", "yes"]  # every word; no _unknown_ or _silence_
    assert splits.info["split"] == "by speaker (SHA-1 rule)" and splits.info["skipped_unreadable"] == 0
    for name, dataset in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        assert split_paths(dataset) == {p for p in paths if reference_split(p) == name}
        for path, label in dataset.items:
            assert splits.classes[label] == path.split("/")[0]
    waveform, label = splits.train[0]
    assert waveform.shape == (16_000,) and (waveform[4_000:] == 0).all()  # 0.25 s padded to 1 s


def test_folder_with_lists_follows_them(tmp_path: Path) -> None:
    paths = write_folder(tmp_path)
    val, test = paths[:5], paths[5:12]
    (tmp_path / "validation_list.txt").write_text("\n".join(val) + "\n")
    (tmp_path / "testing_list.txt").write_text("\n".join(test) + "\n")
    splits = audio_data.load_speech_commands(tmp_path)
    assert splits.info["split"] == "validation_list.txt / testing_list.txt"
    assert split_paths(splits.val) == set(val) and split_paths(splits.test) == set(test)
    assert split_paths(splits.train) == set(paths) - set(val) - set(test)


def test_words_protocol_adds_unknown_and_silence(tmp_path: Path) -> None:
    write_folder(tmp_path)
    splits = audio_data.load_speech_commands(tmp_path, ["yes", "no", "up"], seed=1)
    assert splits.classes == ["yes", "no", "up", "_unknown_", "_silence_"]
    for dataset in (splits.train, splits.val, splits.test):
        labels = [label for _, label in dataset.items]
        per_word = round(sum(label < 3 for label in labels) / 3)
        assert labels.count(3) == min(
            per_word, len([p for p in split_paths(dataset) if p.split("/")[0] in OTHERS])
        )
        assert labels.count(4) == per_word
        for path, label in dataset.items:
            if label == 3:
                assert path.split("/")[0] in OTHERS
    silence = [i for i, (path, _) in enumerate(splits.train.items) if path is None]
    first, again = splits.train[silence[0]][0], splits.train[silence[0]][0]
    assert first.shape == (16_000,) and torch.equal(first, again) and first.abs().max() > 0
    assert audio_data.background_crops(splits, count=3).shape == (3, 16_000)
    assert (
        audio_data.load_speech_commands(tmp_path, ["yes", "no", "up"], seed=1).train.items
        == splits.train.items
    )


def test_silence_without_background_noise_is_zeros(tmp_path: Path) -> None:
    write_folder(tmp_path, background=False)
    splits = audio_data.load_speech_commands(tmp_path, ["yes"])
    silence = next(i for i, (path, _) in enumerate(splits.train.items) if path is None)
    assert torch.equal(splits.train[silence][0], torch.zeros(16_000))
    assert audio_data.background_crops(splits) is None


def test_unreadable_files_are_skipped_with_a_warning(tmp_path: Path) -> None:
    paths = write_folder(tmp_path)
    (tmp_path / "yes" / "broken_nohash_0.wav").write_bytes(b"RIFF\x00\x00garbage")
    (tmp_path / "no" / "empty_nohash_0.wav").write_bytes(b"")
    with pytest.warns(
        UserWarning,
        match=r"skipped 2 unreadable WAV files \(no/empty_nohash_0.wav, yes/broken_nohash_0.wav\)",
    ):
        splits = audio_data.load_speech_commands(tmp_path)
    assert splits.info["skipped_unreadable"] == 2
    assert split_paths(splits.train) | split_paths(splits.val) | split_paths(splits.test) == set(paths)


def _wrong_rate(root: Path) -> None:
    write_folder(root)
    write_wav(root / "up" / "loud_nohash_0.wav", tone(300.0, rate=44_100), rate=44_100)


def _one_list(root: Path) -> None:
    write_folder(root)
    (root / "testing_list.txt").write_text("yes/" + SPEAKERS[0] + "_nohash_0.wav\n")


def _one_speaker(root: Path) -> None:
    train_speaker = next(s for s in SPEAKERS if reference_split(f"{s}_nohash_0.wav") == "train")
    write_folder(root, speakers=[train_speaker])


@pytest.mark.parametrize(
    ("make", "words", "message"),
    [
        (
            lambda root: None,
            None,
            r"--data-dir .*missing: no such folder; expected DIR/<word>/<speaker>_nohash_<n>.wav",
        ),
        (lambda root: root.mkdir(), None, r"no word folders with readable .wav files; expected DIR/<word>/"),
        (
            lambda root: write_wav(root / "_background_noise_" / "a.wav", tone(100.0)),
            None,
            "no word folders with readable .wav files",
        ),
        (
            _wrong_rate,
            None,
            r"1 WAV file not sampled at 16000 Hz \(up/loud_nohash_0.wav \(44100 Hz\)\); this example does not resample",
        ),
        (_one_list, None, "found testing_list.txt but not validation_list.txt; give both, or neither"),
        (
            write_folder,
            ["yes", "maybe"],
            r"--words: .* has no folder for \['maybe'\]; it has \['cat', 'dog', 'no', 'up', 'yes'\]",
        ),
        (
            _one_speaker,
            None,
            "the split by speaker leaves the val set empty; add more speakers or give both list files",
        ),
    ],
)
def test_bad_folders_are_explained(tmp_path: Path, make, words, message: str) -> None:
    root = tmp_path / "missing"
    make(root)
    with pytest.raises(UsageError, match=message):
        audio_data.load_speech_commands(root, words)


def test_command_line_reports_data_and_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv, message in (
        (["--data-dir", str(tmp_path)], "no word folders with readable .wav files"),
        (["--words", "yes,no"], "--words needs --data-dir"),
        (
            ["--words", "yes,,yes", "--data-dir", str(tmp_path)],
            "argument --words: expected distinct comma-separated words",
        ),
        (["--backbone", "3d"], "argument --backbone: invalid choice: '3d'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            audio_keywords.EXAMPLE.main([*argv, "--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- smoke runs


@pytest.mark.parametrize(
    ("backbone", "preset", "options"),
    [("seq", "recnext_seq_tiny", {"in_chans": 40})],  # the 2D default runs with every example's smoke test
)
def test_smoke_run(tmp_path: Path, backbone: str, preset: str, options: dict) -> None:
    results = audio_keywords.EXAMPLE.main(
        ["--smoke", "--backbone", backbone, "--device", "cpu", "--out", str(tmp_path)]
    )
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    assert set(results["models"]) == {"recconv", "small"}
    for name, result in results["models"].items():
        assert (
            0.0 <= result["accuracy"] <= 1.0
            and result["examples_per_second"] > 0
            and result["train_seconds"] > 0
        )
        if name == "small":
            options = {**options, "levels": (0, 0, 0, 0)}
        model = create_model(preset, num_classes=5, **options)
        assert result["params"] == sum(p.numel() for p in model.parameters())
        load_checkpoint(model, tmp_path / f"{name}.pt")  # strict: the checkpoint fits this architecture
        assert model.levels == (
            PRESETS[preset].config.get("levels", (4, 3, 2, 1)) if name == "recconv" else (0, 0, 0, 0)
        )
    assert results["models"]["recconv"]["params"] > results["models"]["small"]["params"]
    assert results["models"]["recconv"]["flops"] > results["models"]["small"]["flops"]
    assert (tmp_path / "training_curves.png").is_file() and (tmp_path / "confusion_matrix.png").is_file()


def test_smoke_run_on_a_speech_commands_folder(tmp_path: Path) -> None:
    write_folder(tmp_path / "data")
    argv = ["--smoke", "--data-dir", str(tmp_path / "data"), "--words", "yes,no,up", "--batch-size", "8"]
    results = audio_keywords.EXAMPLE.main([*argv, "--device", "cpu", "--out", str(tmp_path / "out")])
    assert results["data"]["classes"] == ["yes", "no", "up", "_unknown_", "_silence_"]
    assert results["data"]["background_noise_files"] == 1
    assert results["models"]["recconv"]["epochs"] == 1
