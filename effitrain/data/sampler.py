"""The default order of training examples: every epoch visits each row once, freshly shuffled."""
from __future__ import annotations

from typing import Any

import torch


class EpochSampler:
    """Each epoch visits every example once in a fresh random order (seeded by seed and epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.cursor = n, seed, 0, 0
        self._order = self._permutation()

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def next(self, batch_size: int, ctx: Any = None) -> torch.Tensor:
        out = []
        while batch_size > 0:
            take = min(batch_size, self.n - self.cursor)
            out.append(self._order[self.cursor:self.cursor + take])
            self.cursor += take
            batch_size -= take
            if self.cursor == self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation()
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation()
