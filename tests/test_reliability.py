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
