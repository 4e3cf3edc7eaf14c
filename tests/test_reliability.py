"""Bad arguments and bad files at the public entry points of recconv.models and the CLI: each gets
a clear error naming the file, option or flag and what was expected."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch

from recconv.models import create_model, load_checkpoint, save_checkpoint
from recconv.models.checkpoint import read_state_dict

EXPECTED = "expected a state_dict written by torch.save"


@pytest.fixture(scope="module")
def seq_state(tmp_path_factory):
    directory = tmp_path_factory.mktemp("checkpoints")
    model = create_model("recnext_seq_tiny")
    for suffix in (".pth", ".safetensors"):
        save_checkpoint(model, directory / f"good{suffix}")
    return directory


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_empty_checkpoint_names_the_file(tmp_path, suffix):
    path = _write(tmp_path / f"empty{suffix}", b"")
    with pytest.raises(ValueError, match=rf"'.*empty\{suffix}' is empty; {EXPECTED}"):
        load_checkpoint(create_model("recnext_seq_tiny"), path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_checkpoint_names_the_file(seq_state, tmp_path, suffix):
    data = (seq_state / f"good{suffix}").read_bytes()
    path = _write(tmp_path / f"cut{suffix}", data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"'.*cut\.\w+' is not a readable"):
        read_state_dict(path)


def test_truncated_legacy_pickle(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    _write(path, data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"'.*legacy.pth' is not a readable checkpoint .*; {EXPECTED}"):
        read_state_dict(path)


def test_text_file_checkpoint(tmp_path):
    path = _write(tmp_path / "notes.pth", b"hello world\n")
    with pytest.raises(
        ValueError, match=r"'.*notes.pth' is not a readable checkpoint \(neither a torch.save"
    ):
        read_state_dict(path)


def test_zip_that_torch_did_not_write(tmp_path):
    path = tmp_path / "archive.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    with pytest.raises(ValueError, match=rf"'.*archive.pth' is not a readable checkpoint .*; {EXPECTED}"):
        read_state_dict(path)


def test_garbage_safetensors(tmp_path):
    path = _write(tmp_path / "noise.safetensors", os.urandom(256))
    with pytest.raises(ValueError, match=r"'.*noise.safetensors' is not a readable .safetensors file"):
        read_state_dict(path)


@pytest.mark.parametrize("content", [[1, 2], {"model": [1]}, {"weight": 3}])
def test_pth_without_a_state_dict(tmp_path, content):
    path = tmp_path / "list.pth"
    torch.save(content, path)
    with pytest.raises(ValueError, match=r"'.*list.pth' holds no state_dict of tensors"):
        read_state_dict(path)


def test_good_checkpoints_still_load(seq_state):
    for suffix in (".pth", ".safetensors"):
        assert not any(load_checkpoint(create_model("recnext_seq_tiny"), seq_state / f"good{suffix}"))


@pytest.mark.parametrize("count", [-1, 2.0, True, "10", None])
def test_reset_classifier_refuses_bad_counts(count):
    model = create_model("recnext_seq_tiny")
    head = model.head
    with pytest.raises(ValueError, match=r"RecNeXt.reset_classifier: num_classes must be an int >= 0"):
        model.reset_classifier(count)
    assert model.head is head and model.num_classes == 10


@pytest.mark.parametrize("training", [True, False])
def test_reset_classifier_keeps_the_mode(training):
    model = create_model("recnext_seq_tiny").train(training)
    model.reset_classifier(3)
    assert all(m.training is training for m in model.modules())
    assert model(torch.randn(2, 1, 64)).shape == (2, 3)


def test_reset_classifier_on_a_fused_model_builds_one_linear():
    model = create_model("recnext_seq_tiny").to(torch.float64).eval().fuse()
    model.reset_classifier(3)
    assert type(model.head) is torch.nn.Linear
    assert (model.head.in_features, model.head.out_features) == (128, 3)
    assert model.head.weight.dtype == torch.float64 and not model.training
    assert model(torch.randn(2, 1, 64, dtype=torch.float64)).shape == (2, 3)
    model.reset_classifier(0)
    assert model(torch.randn(2, 1, 64, dtype=torch.float64)).shape == (2, 128)


def test_reset_classifier_unfused_keeps_two_heads():
    model = create_model("recnext_seq_tiny", distillation=True)
    model.reset_classifier(4)
    assert type(model.head).__name__ == "DistillationHead"
    assert [t.shape for t in model(torch.randn(2, 1, 64))] == [(2, 4), (2, 4)]


@pytest.mark.parametrize(("count", "stages"), [(1, (3,)), (2, (2, 3)), (4, (0, 1, 2, 3))])
def test_out_indices_int_means_last_stages(count, stages):
    model = create_model("recnext_seq_tiny", features_only=True, out_indices=count)
    assert model.out_indices == stages
    assert len(model(torch.randn(1, 1, 64))) == count


@pytest.mark.parametrize("bad", [0, 5, -1, True])
def test_out_indices_int_out_of_range(bad):
    message = "number of last stages" if bad is not True else "stage indices in"
    with pytest.raises(ValueError, match=message):
        create_model("recnext_seq_tiny", features_only=True, out_indices=bad)


@pytest.mark.parametrize("bad", [3.0, "01", (True,), (0, 4), (), (1.0,)])
def test_out_indices_bad_values(bad):
    with pytest.raises(ValueError, match=r"RecNeXt: out_indices must be stage indices in \[-4, 3\]"):
        create_model("recnext_seq_tiny", features_only=True, out_indices=bad)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"num_classes": "10"}, ValueError, "num_classes must be an int >= 0, got '10'"),
        ({"num_classes": 2.0}, ValueError, "num_classes must be an int >= 0, got 2.0"),
        ({"in_chans": 3.0}, ValueError, "in_chans must be a positive int, got 3.0"),
        ({"in_chans": True}, ValueError, "in_chans must be a positive int, got True"),
        ({"drop_path_rate": "0.1"}, ValueError, r"drop_path_rate must be in \[0, 1\), got '0.1'"),
        ({"drop_rate": None}, ValueError, r"drop_rate must be in \[0, 1\), got None"),
        ({"checkpoint_path": 3}, TypeError, "create_model: checkpoint_path must be a path"),
        ({"distillation": "yes"}, TypeError, "create_model: distillation must be True or False"),
        ({"features_only": 1}, TypeError, "create_model: features_only must be True or False"),
        ({"widths": 3}, ValueError, "widths must be a non-empty sequence of ints >= 1, got 3"),
    ],
)
def test_create_model_refuses_wrongly_typed_options(options, error, message):
    with pytest.raises(error, match=message):
        create_model("recnext_seq_tiny", **options)


def _cli_error(capsys, argv: list[str]) -> str:
    """The one error line of a CLI call that must end as an argparse error (exit 2, no traceback)."""
    from recconv.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["erf", "--model", "recnext_seq_tiny", "--checkpoint", "missing.pth"], "no such file 'missing.pth'"),
        (["erf", "--model", "recnext_sequence"], "unknown model 'recnext_sequence'"),
        (["erf", "--size", "0"], "argument --size: expected a positive int, got 0"),
        (["erf", "--out", "no-such-folder/erf.png"], "folder 'no-such-folder' does not exist"),
        (["costs", "--size", "abc"], "argument --size: expected an int, got 'abc'"),
        (["profile", "--max-timed-flops", "many"], "argument --max-timed-flops: expected a number"),
        (["profile", "--device", "gpu0"], "unknown device 'gpu0'"),
        (["profile", "--device", "mps"], "--device mps: not usable with this torch build or machine"),
        (["models", "recnext_m9"], "unknown model 'recnext_m9'"),
        (["swap", "sys:exit"], "sys:exit is not a model builder"),
    ],
)
def test_cli_user_mistakes_are_argparse_errors(capsys, monkeypatch, tmp_path, argv, message):
    monkeypatch.chdir(tmp_path)
    if argv[:2] == ["profile", "--device"] and argv[2] != "gpu0" and torch.backends.mps.is_available():
        pytest.skip("this machine has the device")
    line = _cli_error(capsys, argv)
    assert line.startswith(f"recconv {argv[0]}: error: ") and message in line


def test_cli_damaged_checkpoint_is_an_argparse_error(capsys, tmp_path):
    path = _write(tmp_path / "empty.pth", b"")
    line = _cli_error(capsys, ["erf", "--model", "recnext_seq_tiny", "--checkpoint", str(path)])
    assert "empty.pth' is empty" in line


def test_cli_unwritable_out_is_an_argparse_error(capsys, monkeypatch, tmp_path):
    import recconv.analysis

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(recconv.analysis, "plot_erfs", refuse)  # as root, chmod cannot refuse a write
    out = str(tmp_path / "erf.png")
    argv = ["erf", "--levels", "0", "--samples", "1", "--size", "16", "--channels", "1", "--out", out]
    line = _cli_error(capsys, argv)
    assert line == f"recconv erf: error: cannot write {out!r}: Permission denied"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: load_checkpoint("model", p), TypeError, "load_checkpoint: model must be an nn.Module"),
        (lambda p: load_checkpoint(_seq(), p, strict="no"), TypeError, "strict must be True or False"),
        (lambda p: load_checkpoint(_seq(), None), TypeError, "path must be a str or os.PathLike"),
        (lambda p: load_checkpoint(_seq(), p.parent), ValueError, "is a folder; expected a state_dict"),
        (lambda p: save_checkpoint(_seq(), p.parent / "no" / "x.pth"), FileNotFoundError, "no folder"),
    ],
)
def test_checkpoint_functions_check_their_arguments(seq_state, call, error, message):
    with pytest.raises(error, match=message):
        call(seq_state / "good.pth")


def _seq():
    return create_model("recnext_seq_tiny")


@pytest.mark.parametrize("name", [["recnext_m0"], 3])
def test_get_builder_refuses_a_non_string_name(name):
    from recconv.models import get_builder

    with pytest.raises(TypeError, match="create_model: model must be a name from"):
        get_builder(name)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"spatial_dims": 2.0}, "spatial_dims must be 1, 2 or 3, got 2.0"),
        ({"mlp_ratio": "2"}, "mlp_ratio must be a positive number, got '2'"),
        ({"mlp_ratio": 0}, "mlp_ratio must be a positive number, got 0"),
        ({"down_kernel_size": 0}, "down_kernel_size must be >= 1 on every axis"),
    ],
)
def test_recnext_refuses_bad_options(options, message):
    from recconv.models import RecNeXt

    with pytest.raises(ValueError, match=message):
        RecNeXt((8, 16), (1, 1), **options)
