"""Shared fixtures: a tiny random Llama with a byte-level tokenizer, saved as a local model folder."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def make_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide Llama with a byte-level tokenizer (no network, ~1 s)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<pad>", "<eos>", "<bos>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the tiny random model, usable as `model.name`."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_run_settings(tiny_model_dir: Path) -> dict:
    """A micro run on the tiny model and the built-in task (seconds on a CPU), without an output_dir."""
    return {
        "seed": 0,
        "model": {"name": str(tiny_model_dir), "threads": 1},
        "task": {"name": "arithmetic", "pool_size": 24, "test_size": 6, "max_steps": 2},
        "al": {"initial": 4, "query": 4, "rounds": 3, "strategy": "pe-dynamic", "mc_passes": 2,
               "batch_size": 8, "max_new_tokens": 8},
        "lora": {"r": 2, "alpha": 4, "dropout": 0.1},
        "train": {"epochs": 1, "batch_size": 4, "max_prompt_tokens": 96, "max_answer_tokens": 48},
        "eval": {"max_new_tokens": 8, "batch_size": 8},
    }


@pytest.fixture
def tiny_run_config(tiny_run_settings: dict, tmp_path: Path) -> dict:
    """`tiny_run_settings` writing to tmp_path/run (a fresh copy per test)."""
    return {**copy.deepcopy(tiny_run_settings), "output_dir": str(tmp_path / "run")}


@pytest.fixture
def make_waiting_run():
    """Factory: a run directory waiting for round 0's human labels (config + query file, no model).

    make_waiting_run(folder, task=None, n=4, rounds=2) -> (run path, the n query ids).
    """
    from star.annotation.queries import query_row, write_batch
    from star.config import build_config, dump_config
    from star.store.runs import RunDir
    from star.tasks import build_task

    def make(folder: Path, task: dict | None = None, n: int = 4, rounds: int = 2) -> tuple[Path, list[str]]:
        cfg = build_config({"output_dir": str(folder / "run"),
                            "task": task or {"name": "arithmetic", "pool_size": 12, "test_size": 4, "max_steps": 2},
                            "al": {"initial": n, "query": 2, "rounds": rounds, "annotator": "human"}})
        run = RunDir.create(cfg.output_dir)
        run.config_path.write_text(dump_config(cfg), encoding="utf-8")
        t = build_task(cfg.task)
        pool = t.load("pool")[:n]
        write_batch(run, 0, "query", [query_row(t, 0, e.id, e.question, "The final answer is 3", 0.5) for e in pool])
        return run.path, [e.id for e in pool]

    return make
