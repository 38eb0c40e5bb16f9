"""Log-probabilities and entropies at response positions only.

The LM head is applied only where a response token is predicted, and the full-vocabulary
log-softmax is never kept over prompt positions: for a 49k vocabulary this is most of the
memory and a large share of the time of a naive forward.
"""

from __future__ import annotations

import torch
from torch import nn

from .batching import PairBatch

LM_HEAD_CHUNK = 2048  # rows of (rows, V) logits materialised at once


def _decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(decoder returning hidden states, LM head) of a (peft-wrapped) causal LM, if exposed."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(base, "module", base)  # DDP
    get_decoder = getattr(base, "get_decoder", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or head is None:
        return None
    return decoder, head


def response_logits(model: nn.Module, batch: PairBatch) -> torch.Tensor:
    """Logits (M, V) at the M positions that predict response tokens, in row-major order."""
    parts = _decoder_and_head(model)
    if parts is None:  # generic fallback: full logits, then select
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, T, V)
        return logits[batch.predict_mask]
    decoder, head = parts
    hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state  # (B, T, H)
    selected = hidden[batch.predict_mask]  # (M, H)
    return head(selected)  # (M, V)


def token_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: log p(target) (M,) and entropy of the full distribution (M,), in fp32 chunks."""
    logp_out, ent_out = [], []
    for start in range(0, logits.shape[0], LM_HEAD_CHUNK):
        logp = torch.log_softmax(logits[start : start + LM_HEAD_CHUNK].float(), dim=-1)  # (m, V)
        tgt = targets[start : start + LM_HEAD_CHUNK]
        logp_out.append(logp.gather(1, tgt.unsqueeze(1)).squeeze(1))  # (m,)
        ent_out.append(-torch.special.xlogy(logp.exp(), logp.exp()).sum(-1))  # (m,); 0 log 0 = 0 for masked logits
    return torch.cat(logp_out), torch.cat(ent_out)


def sequence_scores(model: nn.Module, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """PE (B,) = -sum log p(s_i) and ME (B,) = sum H(p_i) over each row's response."""
    logits = response_logits(model, batch)  # (M, V)
    logp, ent = token_stats(logits, batch.targets)
    pe = torch.zeros(batch.size, dtype=torch.float32, device=logp.device).index_add_(0, batch.rows, -logp)
    me = torch.zeros(batch.size, dtype=torch.float32, device=logp.device).index_add_(0, batch.rows, ent)
    return pe, me


def response_loss(model: nn.Module, batch: PairBatch) -> torch.Tensor:
    """Mean cross-entropy over the batch's response tokens (answer tokens only)."""
    logits = response_logits(model, batch)  # (M, V)
    return torch.nn.functional.cross_entropy(logits.float(), batch.targets)
