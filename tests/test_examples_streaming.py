"""The audio streaming example: its causal front end, the generated stream, detection, smoke runs."""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

import pytest
import torch

from examples import audio_streaming as example
from examples import registry
from examples.kit.audio_data import SAMPLE_RATE

from .test_examples_audio import tone, write_wav


def _front_end() -> example.CausalLogMel:
    generator = torch.Generator().manual_seed(0)
    mean, std = torch.randn(40, generator=generator), 1 + torch.rand(40, generator=generator)
    return example.CausalLogMel(example.AUGMENTATION, mean=mean, std=std).eval()


@pytest.mark.parametrize(
    "chunks",
    [[160] * 20, [240] * 13 + [80], [1] * 500 + [2700], [7, 153, 479, 481, 1, 2079], [3200]],
    ids=["10ms", "15ms", "single-samples", "irregular", "one-chunk"],
)
def test_front_end_frames_streamed_equal_the_offline_frames(chunks: list[int]) -> None:
    front_end = _front_end()
    waveform = torch.randn(2, sum(chunks), generator=torch.Generator().manual_seed(1))
    state, frames = front_end.init_state(2), []
    for chunk in waveform.split(chunks, dim=1):
        out, state = front_end.step(chunk, state)
        frames.append(out)
        assert out.shape[:3] == (2, 1, 40)
        assert state["tail"].shape[1] < front_end.n_fft  # bounded, whatever has been streamed
    offline = front_end(waveform)
    assert offline.shape == (2, 1, 40, sum(chunks) // example.HOP)
    torch.testing.assert_close(torch.cat(frames, dim=3), offline, atol=1e-5, rtol=1e-5)


def test_docstring_examples_run() -> None:
    failures, tried = doctest.testmod(example)
    assert tried and failures == 0


def test_front_end_is_causal_and_frames_end_at_their_hop() -> None:
    front_end = _front_end()
    waveform = torch.randn(1, 1600, generator=torch.Generator().manual_seed(2))
    changed = waveform.clone()
    changed[:, 800:] = 0  # frame i reads samples up to (i + 1) * 160 - 1
    before, after = front_end(waveform), front_end(changed)
    torch.testing.assert_close(before[..., :5], after[..., :5])
    assert not torch.allclose(before[..., 5], after[..., 5])


def test_generated_stream_and_its_training_windows() -> None:
    stream, events = example.keyword_stream(6, seed=3)
    assert [e["label"] for e in events] != [] and all(e["label"] in example.PATTERNS for e in events)
    for previous, event in zip(events, events[1:]):
        assert event["start"] - previous["end"] >= example.GAP_SECONDS[0] - 1e-3
        assert event["end"] - event["start"] == pytest.approx(1.0)
    assert events[-1]["end"] < len(stream) / SAMPLE_RATE

    windows = example.stream_windows(2, seed=3)
    ends = torch.tensor([e["end"] for e in example.keyword_stream(2 * len(example.PATTERNS), seed=3)[1]])
    none = example.CLASSES.index(example.NO_KEYWORD)
    assert (windows.labels == none).sum() == (windows.labels != none).sum()
    offsets = windows.ends[:, None] / SAMPLE_RATE - ends[None, :]
    for offset, label in zip(offsets, windows.labels.tolist()):
        if label == none:  # far from every keyword's end
            assert not ((offset > example.AMBIGUOUS[0]) & (offset < example.AMBIGUOUS[1])).any()
        else:
            assert ((offset >= example.POSITIVE[0] - 1e-3) & (offset <= example.POSITIVE[1] + 1e-3)).any()
    # Windows that end during a keyword, before the vowel that decides its class, teach waiting.
    during = ((offsets > -1.0) & (offsets <= example.AMBIGUOUS[0])).any(dim=1)
    assert (during & (windows.labels == none)).any()
    window, _ = windows[0]
    assert window.shape == (example.WINDOW_FRAMES * example.HOP,)


def test_streamed_probabilities_equal_the_offline_model() -> None:
    torch.manual_seed(0)
    model = example.streaming_model().eval()
    for module in model.modules():  # running statistics that are not the identity
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    front_end = _front_end()
    waveform = torch.randn(8000, generator=torch.Generator().manual_seed(4))
    streamed = example.stream(model, front_end, waveform, chunk=240, threshold=0.3)  # 15 ms chunks
    with torch.no_grad():
        mels = front_end(waveform[None])
        offline = model.net(mels)[0, :, 0].T.softmax(dim=1)
    torch.testing.assert_close(streamed["mels"], mels[0, 0], atol=1e-5, rtol=1e-5)
    times = [t for t, _ in streamed["outputs"]]
    assert times == pytest.approx([(16 * j + 1) * 0.01 for j in range(len(offline))])
    torch.testing.assert_close(
        torch.stack([p for _, p in streamed["outputs"]]), offline, atol=1e-5, rtol=1e-4
    )
    assert len(streamed["latency_ms"]) == -(-8000 // 240)
    for detection in streamed["detections"]:  # each where a keyword first crosses the threshold
        assert detection["probability"] >= 0.3


def test_score_counts_found_confused_missed_and_false_alarms() -> None:
    events = [
        {"label": name, "start": s - 1, "end": s} for name, s in (("ABA", 2.0), ("AAB", 5.0), ("ABC", 9.0))
    ]
    detections = [
        {"time": 2.1, "label": "AAA"},
        {"time": 2.3, "label": "ABA"},  # found, after a confusion at the same keyword
        {"time": 5.2, "label": "ABB"},  # confused
        {"time": 7.0, "label": "AAA"},  # near no keyword
    ]
    assert example.score(detections, events) == {
        "keywords": 3,
        "found": 1,
        "confused": 1,
        "missed": 1,
        "false_alarms": 1,
    }


def test_not_in_the_training_registry() -> None:
    # It trains one model and then streams: not the shape of the Example record (two models).
    assert "audio_streaming" not in registry()


def _run(argv: list[str]) -> dict:
    return example.main(["--device", "cpu", *argv])


def test_smoke_trains_and_streams(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = _run(["--smoke", "--out", str(tmp_path), "--stream-seconds", "2", "--keywords-per-class", "2"])
    assert json.loads((tmp_path / "results.json").read_text())["data"]["train"] == 2 * 2 * 5
    written = {p.name for p in tmp_path.iterdir()}
    assert {"results.json", "streaming.pt", "stream.json", "stream.png", "training_curves.png"} <= written
    saved = json.loads((tmp_path / "stream.json").read_text())
    assert saved == json.loads(json.dumps(results))
    generated = saved["streams"]["generated"]
    chunks = -(-round(generated["seconds"] * 1000) // 10)
    assert generated["chunks"] == len(generated["latency_per_chunk_ms"]) == chunks
    assert set(generated["score"]) == {"keywords", "found", "confused", "missed", "false_alarms"}
    assert "latency per chunk: median" in capsys.readouterr().out

    with pytest.raises(SystemExit):  # a second streaming run into the same folder needs --overwrite
        _run(["--checkpoint", str(tmp_path / "streaming.pt"), "--out", str(tmp_path)])
    message = "holds a streaming run (stream.json, stream.png); replace it with --overwrite"
    assert message in capsys.readouterr().err


def _untrained_checkpoint(path: Path) -> Path:
    """A checkpoint as training writes it, of an untrained model: streaming needs no training."""
    front_end = {"kind": "causal_log_mel", "mean": [-6.0] * 40, "std": [3.0] * 40}
    model = example.streaming_model().state_dict()
    torch.save(
        {"model": model, "example": example.NAME, "classes": example.CLASSES, "front_end": front_end}, path
    )
    return path


def test_checkpoint_streams_every_wav_file_of_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = _untrained_checkpoint(tmp_path / "streaming.pt")
    wavs = tmp_path / "wavs"
    write_wav(wavs / "a.wav", tone(440.0, seconds=0.5))
    write_wav(wavs / "b.WAV", tone(660.0, seconds=0.3))
    out = tmp_path / "reuse"
    argv = ["--checkpoint", str(checkpoint), "--data-dir", str(wavs), "--chunk-ms", "15"]
    results = _run([*argv, "--out", str(out)])
    assert results["chunk_samples"] == 240 and sorted(results["streams"]) == ["a.wav", "b.WAV"]
    assert results["streams"]["a.wav"]["chunks"] == -(-8000 // 240)
    assert "score" not in results["streams"]["a.wav"]  # no known keywords in a user's files
    assert {p.name for p in out.iterdir()} == {"stream.json", "stream_a.png", "stream_b.png"}

    write_wav(wavs / "c.wav", tone(440.0, seconds=0.2, rate=8000), rate=8000)
    with pytest.raises(SystemExit):
        _run([*argv, "--out", str(tmp_path / "other")])
    assert "c.wav is sampled at 8000 Hz; the model expects 16000 Hz" in capsys.readouterr().err


def test_checkpoint_of_another_example_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "recconv.pt"
    torch.save({"model": {}, "example": "audio_keywords", "classes": ["a", "b"]}, path)
    with pytest.raises(SystemExit):
        _run(["--checkpoint", str(path), "--out", str(tmp_path / "out")])
    assert "--checkpoint " + str(
        path
    ) + ": not a checkpoint of audio_streaming (it was written by audio_keywords)" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--chunk-ms", "0.01"], "--chunk-ms 0.01: less than one sample at 16000 Hz"),
        (["--chunk-ms", "-5"], "argument --chunk-ms: expected a number above 0, got '-5'"),
        (["--threshold", "1.5"], "argument --threshold: expected a number above 0 and below 1, got '1.5'"),
        (
            ["--checkpoint", "x.pt", "--epochs", "3", "--resume"],
            "--epochs and --resume set training; --checkpoint reuses a trained model and trains nothing",
        ),
    ],
)
def test_bad_streaming_flags(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        _run([*flags, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err


def test_data_dir_without_wav_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _untrained_checkpoint(tmp_path / "streaming.pt")
    with pytest.raises(SystemExit):
        _run(["--checkpoint", str(path), "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert f"--data-dir {tmp_path}: no .wav files to stream" in capsys.readouterr().err


def test_export_onnx_writes_the_network_for_one_frame_per_call(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = _untrained_checkpoint(tmp_path / "streaming.pt")
    out = tmp_path / "export"
    results = _run(
        ["--checkpoint", str(checkpoint), "--out", str(out), "--stream-seconds", "1", "--export-onnx"]
    )
    onnx = results["onnx"]
    assert onnx["file"] == "frame.onnx" and (out / "frame.onnx").is_file()
    assert not (out / "frame.onnx.data").exists()  # the weights inside: one file to ship
    assert onnx["frames_checked"] == example.EXPORT_CHECK_FRAMES
    assert onnx["max_abs_difference"] < 1e-4
    assert "wrote frame.onnx: one log-mel frame per call" in capsys.readouterr().out


def test_export_onnx_without_its_packages(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    checkpoint = _untrained_checkpoint(tmp_path / "streaming.pt")
    with pytest.raises(SystemExit):
        _run(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--export-onnx"])
    message = "--export-onnx needs onnx, onnxscript and onnxruntime (onnxruntime is missing): pip install"
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # it failed before streaming anything
