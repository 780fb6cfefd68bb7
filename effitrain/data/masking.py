"""Masked-LM corruption as in the original BERT pre-training data code.

Each sequence gets exactly ``max(1, round(p · n))`` predicted positions, n = its real (non-special,
non-pad) tokens; of those 80% become [MASK], 10% a random token, 10% stay. Returning the positions
lets the head compute logits only where there is something to predict (sparse prediction), and the
fixed count keeps the FLOPs of a step the same from batch to batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from effitrain.data.tokenizer import MASK, PAD, SPECIAL_TOKENS


@dataclass
class MaskedBatch:
    input_ids: torch.Tensor  # (B, T) corrupted ids
    attention_mask: torch.Tensor | None  # (B, T) bool, None when nothing is padded
    positions: torch.Tensor  # (M,) flat indices into B*T of the predicted positions
    labels: torch.Tensor  # (M,) original ids there

    def to(self, device: torch.device) -> "MaskedBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return MaskedBatch(move(self.input_ids), move(self.attention_mask), move(self.positions), move(self.labels))

    @property
    def num_tokens(self) -> int:
        if self.attention_mask is None:
            return self.input_ids.numel()
        return int(self.attention_mask.sum())


def mask_tokens(input_ids: torch.Tensor, mask_prob: float, vocab_size: int,
                generator: torch.Generator) -> MaskedBatch:
    """Corrupt a (B, T) batch of ids for MLM; deterministic given the generator's state."""
    ids = input_ids.clone()
    B, T = ids.shape
    candidates = ids >= len(SPECIAL_TOKENS)  # (B, T)
    n_real = candidates.sum(dim=1)
    n_predict = torch.clamp(torch.round(n_real.float() * mask_prob).long(), min=1)
    n_predict = torch.minimum(n_predict, n_real)
    scores = torch.rand(B, T, generator=generator)
    scores[~candidates] = 2.0  # never chosen before a real token
    ranks = scores.argsort(dim=1).argsort(dim=1)
    chosen = ranks < n_predict[:, None]  # (B, T)
    positions = chosen.flatten().nonzero().squeeze(1)
    labels = ids.flatten()[positions]

    action = torch.rand(positions.shape[0], generator=generator)
    random_ids = torch.randint(len(SPECIAL_TOKENS), vocab_size, (positions.shape[0],), generator=generator)
    flat = ids.view(-1)
    flat[positions[action < 0.8]] = MASK
    swap = (action >= 0.8) & (action < 0.9)
    flat[positions[swap]] = random_ids[swap]
    pad = input_ids == PAD
    return MaskedBatch(ids, ~pad if bool(pad.any()) else None, positions, labels)
