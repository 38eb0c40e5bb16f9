"""An adapter is saved whole or not at all, and a damaged one is never loaded."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from star.engine.adapter import load_adapter_weights, reset_adapter, save_adapter
from star.errors import RunStateError, StorageError


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    from star.config import LoraSettings
    from star.engine.modeling import attach_lora

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return attach_lora(base, LoraSettings(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"]))


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def _fail_saving(monkeypatch, how: str) -> None:
    """peft's safetensors write fails as a full disk does: a Python OSError, or safetensors' own error text."""
    from peft import peft_model
    from safetensors import SafetensorError

    def failing(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x10\x00\x00\x00")  # a few bytes land, then the disk is full
        if how == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              'message: "No space left on device" })')

    monkeypatch.setattr(peft_model, "safe_save_file", failing)


@pytest.mark.parametrize("how", ["oserror", "safetensors"])
def test_a_full_disk_while_saving_keeps_the_previous_adapter(lora_model, tmp_path, monkeypatch, how):
    folder = tmp_path / "round-0" / "adapter"
    reset_adapter(lora_model, seed=1)
    with torch.no_grad():
        for p in _state_params(lora_model):
            p.add_(0.25)
    save_adapter(lora_model, folder)
    saved = _state(lora_model)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    reset_adapter(lora_model, seed=2)
    _fail_saving(monkeypatch, how)
    with pytest.raises(StorageError, match="could not write .*adapter: No space left on device"):
        save_adapter(lora_model, folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir()] == ["adapter"]  # no temp folder left
    load_adapter_weights(lora_model, folder)
    for key, value in _state(lora_model).items():
        torch.testing.assert_close(value, saved[key])


def _state_params(model):
    return [p for k, p in model.named_parameters() if "lora_B" in k]


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "adapter_config.json"])
def test_a_cut_adapter_is_refused_not_loaded(lora_model, tmp_path, name):
    folder = tmp_path / "adapter"
    save_adapter(lora_model, folder)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    before = _state(lora_model)
    with pytest.raises(RunStateError, match=f"{name}: .*cut short|{name}: not valid JSON"):
        load_adapter_weights(lora_model, folder)
    assert all(torch.equal(v, before[k]) for k, v in _state(lora_model).items())


def test_saving_over_an_adapter_replaces_it_whole(lora_model, tmp_path):
    folder = tmp_path / "adapter"
    reset_adapter(lora_model, seed=3)
    save_adapter(lora_model, folder)
    with torch.no_grad():
        for p in _state_params(lora_model):
            p.add_(1.0)
    save_adapter(lora_model, folder)
    expected = _state(lora_model)
    reset_adapter(lora_model, seed=4)
    load_adapter_weights(lora_model, folder)
    assert all(torch.equal(v, expected[k]) for k, v in _state(lora_model).items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
