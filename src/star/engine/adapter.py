"""The live LoRA adapter of a loaded model (whole or sharded): fresh init, save and load, off, MC dropout."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from star.errors import RunStateError
from star.parallel import params
from star.store.io import fsync_dir, temp_path, write_failed
from star.store.validate import adapter_problem


def lora_layers(model: nn.Module) -> Iterator[nn.Module]:
    """Every peft LoRA layer of `model`."""
    from peft.tuners.lora import LoraLayer

    return (m for m in model.modules() if isinstance(m, LoraLayer))


def reset_adapter(model: nn.Module, seed: int) -> None:
    """A fresh adapter: A re-drawn (Kaiming, seeded), B zeroed, so the model equals the base."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in lora_layers(model):
            for name in layer.lora_A:
                if params.is_sharded(layer.lora_A[name].weight):  # FSDP: drawn whole, as peft does, then sharded
                    params.fresh_lora_(layer.lora_A[name].weight, layer.lora_B[name].weight)
                else:
                    layer.reset_lora_parameters(name, init_lora_weights=True)


def lora_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(A parameters, B parameters) of the adapter: the only trainable tensors."""
    a, b = [], []
    for name, p in model.named_parameters():
        if "lora_A" in name:
            a.append(p)
        elif "lora_B" in name:
            b.append(p)
    return a, b


@contextlib.contextmanager
def dropout_rate(model: nn.Module, p: float | None) -> Iterator[None]:
    """LoRA's dropout probability set to `p` for the block, restored after; None leaves it as trained (lora.dropout).

    MC-dropout scoring can so use another p (`al.mc_dropout_p`) than training. Only the rate
    changes: each row's mask is still drawn from its own seed (`seeded_dropout`).
    """
    if p is None:
        yield
        return
    layers = [d for layer in lora_layers(model) for d in layer.lora_dropout.values() if hasattr(d, "p")]
    before = [d.p for d in layers]
    for d in layers:
        d.p = float(p)
    try:
        yield
    finally:
        for d, old in zip(layers, before):
            d.p = old


@contextlib.contextmanager
def mc_dropout(model: nn.Module, enabled: bool = True, p: float | None = None) -> Iterator[None]:
    """Eval mode everywhere except LoRA's dropout (on A's input), which stays stochastic, with
    probability `p` when given (None: lora.dropout)."""
    was_training = model.training
    model.eval()
    if enabled:
        for name, module in model.named_modules():
            if ".lora_dropout." in name:
                module.train()
    try:
        with dropout_rate(model, p if enabled else None):
            yield
    finally:
        model.train(was_training)
        if not was_training:
            model.eval()


def adapter_disabled(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """The base model: the adapter switched off (peft's disable_adapter)."""
    return model.disable_adapter()


def save_adapter(model: nn.Module, folder: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """Adapter weights + config as safetensors, whole or not at all.

    peft writes into a hidden temp folder beside `folder`; its files are fsynced and checked,
    then it is renamed into place and the parent folder fsynced. A failed save (disk full)
    removes the temp folder, leaves `folder` as it was, and raises StorageError.
    `state`: the adapter's whole tensors (`params.adapter_state`) when the model is FSDP-sharded.
    """
    tmp, old = temp_path(folder), temp_path(folder)
    try:
        model.save_pretrained(tmp, **({"state_dict": state} if state is not None else {}))
        for file in tmp.iterdir():
            _fsync(file)
        if (problem := adapter_problem(tmp)) is not None:
            raise OSError(errno.EIO, f"the saved adapter is not whole ({problem})")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        fsync_dir(folder.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            old.rename(folder)  # put the previous adapter back
        if isinstance(e, (OSError, SafetensorError)):
            raise write_failed(folder, _as_os_error(e)) from e
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_os_error(e: BaseException) -> BaseException:
    """safetensors reports a full disk as text ('No space left on device'): as the OSError it is."""
    return OSError(errno.ENOSPC, "No space left on device") if "No space left" in str(e) else e


def load_adapter_weights(model: nn.Module, folder: Path) -> None:
    """Load saved adapter weights into the live 'default' adapter; a damaged save raises RunStateError, never loads."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if (problem := adapter_problem(folder)) is not None:
        raise RunStateError(f"the adapter in {folder} is damaged ({problem})",
                            hint="`star run --resume DIR` redoes the round it belongs to")
    state = load_file(str(folder / "adapter_model.safetensors"))
    if any(params.is_sharded(p) for p in model.parameters()):
        params.load_adapter_state(model, state)
    else:
        set_peft_model_state_dict(model, state)
