"""Fine-tune a pre-trained encoder on a classification task and report test accuracy."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from effitrain.data.downstream import ClassificationTask
from effitrain.data.tokenizer import PAD
from effitrain.model import BertForClassification, BertForMLM


@dataclass
class FinetuneResult:
    accuracy: float
    train_accuracy: float
    seconds: float
    steps: int


@torch.no_grad()
def accuracy(model: torch.nn.Module, ids: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(ids), batch_size):
        x = ids[i:i + batch_size].to(device)
        correct += int((model(x, x != PAD).argmax(-1).cpu() == y[i:i + batch_size]).sum())
    return correct / max(1, len(ids))


def finetune(pretrained: BertForMLM | None, task: ClassificationTask, *, config=None, steps: int = 200,
             batch_size: int = 32, lr: float = 1e-4, seed: int = 0, device: str | torch.device = "cpu") -> FinetuneResult:
    """Train encoder + classifier on the task's training split for `steps`; test accuracy at the end.

    `pretrained=None` trains from random initialisation (give `config`) — the no-pre-training control.
    The pre-trained model is copied, never changed.
    """
    torch.manual_seed(seed)
    if pretrained is not None:
        cfg, vocab = pretrained.cfg, pretrained.vocab_size
        encoder = copy.deepcopy(pretrained.encoder)
    else:
        if config is None:
            raise ValueError("finetune without a pre-trained model needs config= (a ModelConfig and vocab size)")
        cfg, vocab = config
        encoder = None
    model = BertForClassification(cfg, vocab, task.num_classes, encoder).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    n = len(task.train_ids)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(n, (min(batch_size, n),), generator=g)
        x, y = task.train_ids[idx].to(device), task.train_y[idx].to(device)
        for group in optimizer.param_groups:  # linear warm-up over 10%, then linear decay
            f = step / steps
            group["lr"] = lr * (f / 0.1 if f < 0.1 else (1 - f) / 0.9)
        loss = F.cross_entropy(model(x, x != PAD), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    return FinetuneResult(accuracy(model, task.test_ids, task.test_y),
                          accuracy(model, task.train_ids[:1024], task.train_y[:1024]), seconds, steps)
