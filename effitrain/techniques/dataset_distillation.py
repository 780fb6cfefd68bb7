"""Dataset distillation: a few synthetic training examples, learned in embedding space.

    E = teacher.encoder.tok.weight                          # a fixed embedding space (V, H)
    d = distill_dataset(task, E, per_class=2, length=16)    # K·C learned (L, H) examples (+ soft labels)
    train_on(d, task, E)                                    # test accuracy of a fresh learner trained on them
    train_on(random_subset(task, 2, seed), task, E)         # ... on a random real subset of the same size
    train_on(None, task, E)                                 # ... on the full training split (same steps)
    nearest_tokens(d, tokenizer, E, k=3)                    # which real words the learned vectors are near

A functional core with no trainer hook (it trains small classifiers, not the MLM). The lesson's
comparison table is `effitrain.lab.tables.distillation_table`, its live plot
`effitrain.lab.figures.ObjectivePlot`. Knowledge distillation (a teacher's soft targets while
pre-training) is the registered technique in `knowledge_distillation`.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F

from effitrain.config import ConfigError, ModelConfig

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from tokenizers import Tokenizer

    from effitrain.data.downstream import ClassificationTask

PAD = 0


# ================================================================================================
# Dataset distillation: learners
# ================================================================================================
class Learner:
    """A small classifier written as a pure function of a parameter dict, so an optimiser can be unrolled.

    `init(g)` draws fresh parameters from generator `g`; `logits(params, embeds, mask)` maps input
    embeddings (B, T, H) (mask (B, T) bool or None) to class logits (B, C). The token embedding table
    is *not* a parameter: real examples enter as `E[ids]`, synthetic ones as learned vectors.
    """

    name = ""

    def __init__(self, hidden: int, num_classes: int, max_len: int):
        self.hidden, self.num_classes, self.max_len = hidden, num_classes, max_len

    def init(self, g: torch.Generator) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def logits(self, params: dict[str, torch.Tensor], embeds: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def context(self) -> contextlib.AbstractContextManager:
        """Where second derivatives must work (the unrolled inner loop)."""
        return contextlib.nullcontext()


class BagLearner(Learner):
    """Mean of the input vectors over real positions → LayerNorm → ReLU MLP → logits.

    Trains reliably with plain SGD in a few steps, which is what makes unrolling it cheap and stable.
    """

    name = "bag"

    def __init__(self, hidden: int, num_classes: int, max_len: int, width: int = 128):
        super().__init__(hidden, num_classes, max_len)
        self.width = width

    def init(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        H, W, C = self.hidden, self.width, self.num_classes
        return {"w1": torch.randn(H, W, generator=g) / math.sqrt(H), "b1": torch.zeros(W),
                "w2": torch.randn(W, C, generator=g) / math.sqrt(W), "b2": torch.zeros(C)}

    def logits(self, params, embeds, mask):
        if mask is None:
            x = embeds.mean(1)
        else:
            m = mask.to(embeds.dtype).unsqueeze(-1)
            x = (embeds * m).sum(1) / m.sum(1).clamp_min(1.0)
        x = F.layer_norm(x, (x.shape[-1],))
        return F.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


class EncoderLearner(Learner):
    """A 1-layer pre-LN BERT encoder + [CLS] classifier (`BertForClassification` through `embeds=`).

    Linear weights start at N(0, 1/fan_in) (not BERT's 0.02, under which plain SGD barely moves in a
    few steps); position embeddings at N(0, 0.02²). Attention runs on PyTorch's math kernel inside
    the unrolled loop, because the fused CPU kernel has no second derivative.
    """

    name = "encoder"

    def __init__(self, hidden: int, num_classes: int, max_len: int, heads: int = 2):
        super().__init__(hidden, num_classes, max_len)
        from effitrain.model import BertForClassification
        cfg = ModelConfig(preset="tiny", hidden=hidden, layers=1, heads=heads, ffn=2 * hidden, dropout=0.0,
                          norm="pre", max_positions=max_len)
        self.module = BertForClassification(cfg, 1, num_classes)  # vocabulary 1: its table is never used
        self.shapes = {n: p.shape for n, p in self.module.named_parameters() if n != "encoder.tok.weight"}

    def init(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        out = {}
        for n, shape in self.shapes.items():
            if ".ln" in n or n.startswith("encoder.ln"):
                out[n] = torch.ones(shape) if n.endswith("weight") else torch.zeros(shape)
            elif n.endswith("bias"):
                out[n] = torch.zeros(shape)
            elif n == "encoder.pos.weight":
                out[n] = 0.02 * torch.randn(shape, generator=g)
            else:
                out[n] = torch.randn(shape, generator=g) / math.sqrt(shape[-1])
        return out

    def logits(self, params, embeds, mask):
        from torch.func import functional_call
        return functional_call(self.module, params, (None, mask), {"embeds": embeds})

    def context(self):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.MATH)


LEARNERS = {"bag": BagLearner, "encoder": EncoderLearner}


def make_learner(kind: str, hidden: int, num_classes: int, max_len: int) -> Learner:
    if kind not in LEARNERS:
        raise ConfigError(f"learner must be one of {', '.join(LEARNERS)}; got {kind!r}")
    return LEARNERS[kind](hidden, num_classes, max_len)


@contextlib.contextmanager
def one_thread():
    """Run tiny-tensor work on one CPU thread (restored afterwards).

    The distillation learners are so small that a second thread buys nothing, and on a busy machine
    threads waiting for each other made an outer step up to 100× slower than on one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def on_one_thread(fn: Callable) -> Callable:
    """Decorator: run `fn` inside `one_thread()`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_thread():
            return fn(*args, **kwargs)
    return wrapper


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with class indices (N,) or probability rows (N, C)."""
    if targets.dtype.is_floating_point:
        return -(targets * F.log_softmax(logits, -1)).sum(-1).mean()
    return F.cross_entropy(logits, targets)


def sgd_unroll(learner: Learner, params: dict[str, torch.Tensor], embeds: torch.Tensor, targets: torch.Tensor,
               mask: torch.Tensor | None, steps: int, lr: float, differentiable: bool) -> dict[str, torch.Tensor]:
    """`steps` full-batch SGD steps θ ← θ − η ∇θ ℓ(θ; X, Y). differentiable: keep the graph to X, Y."""
    params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    for _ in range(steps):
        loss = _soft_ce(learner.logits(params, embeds, mask), targets)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=differentiable)
        params = {k: v - lr * g for (k, v), g in zip(params.items(), grads)}
        if not differentiable:
            params = {k: v.detach().requires_grad_() for k, v in params.items()}
    return params


# ================================================================================================
# Dataset distillation: the set, and how to learn it
# ================================================================================================
@dataclass
class DistilledSet:
    """K synthetic examples per class in an embedding space, with their (soft) labels."""

    embeds: torch.Tensor  # (K·C, L, H) learned input vectors
    labels: torch.Tensor  # (K·C, C) label distributions (rows sum to 1; one-hot when not learned)
    classes: torch.Tensor  # (K·C,) the class each example was made for
    init_ids: torch.Tensor | None  # (K·C, L) real token ids it started from (init="real"), else None
    seconds: float  # wall time spent distilling
    flops: float  # FLOPs spent distilling (FlopCounterMode on one outer step × steps)
    history: list[dict] = field(default_factory=list)  # {"step", "loss"} of the outer objective
    settings: dict = field(default_factory=dict)
    init_rows: torch.Tensor | None = None  # (K·C,) training rows it started from (init="real")

    @property
    def per_class(self) -> int:
        return int(self.settings.get("per_class", 0))

    def __len__(self) -> int:
        return len(self.embeds)


def random_subset(task: "ClassificationTask", per_class: int, seed: int) -> torch.Tensor:
    """Row indices of `per_class` random training examples of every class (class order)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in range(task.num_classes):
        rows = torch.nonzero(task.train_y == c).flatten()
        if len(rows) < per_class:
            raise ConfigError(f"per_class must be <= {len(rows)} (examples of class {c}); got {per_class}")
        out.append(rows[torch.randperm(len(rows), generator=g)[:per_class]])
    return torch.cat(out)


def _check_positive(name: str, value: Any, kind: type = int) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok:
        raise ConfigError(f"{name} must be a positive {'integer' if kind is int else 'number'}; got {value!r}")


@on_one_thread
def distill_dataset(task: "ClassificationTask", embedding_matrix: torch.Tensor, *, per_class: int = 2,
                    length: int = 16, steps: int = 150, inner_steps: int = 20, inner_lr: float = 0.3,
                    lr: float = 0.1, label_lr: float = 0.05, soft_labels: bool = True, init: str = "real",
                    learner: str = "bag", batch_size: int = 256, seed: int = 0,
                    callback: Callable[[int, float], None] | None = None) -> DistilledSet:
    """Learn `per_class` synthetic examples per class by unrolled optimisation (Wang et al. 2018).

    Each outer step draws a fresh learner θ₀, trains it `inner_steps` SGD steps (lr `inner_lr`) on
    the synthetic set with the graph kept, scores the result on a random real batch, and moves the
    synthetic vectors (Adam, lr `lr` × std(E)) and label logits (Adam, `label_lr`) down that loss.
    init: "real" (random real examples of each class, their first `length` token vectors) or "noise".
    callback(step, loss) is called after every outer step (e.g. to plot the objective live).
    Runs on one CPU thread (`one_thread`); the same seed gives the same set.
    """
    for name, value in (("per_class", per_class), ("length", length), ("steps", steps),
                        ("inner_steps", inner_steps), ("batch_size", batch_size)):
        _check_positive(name, value)
    for name, value in (("inner_lr", inner_lr), ("lr", lr), ("label_lr", label_lr)):
        _check_positive(name, value, float)
    if init not in ("real", "noise"):
        raise ConfigError(f"init must be 'real' or 'noise'; got {init!r}")
    if length > task.train_ids.shape[1]:
        raise ConfigError(f"length must be <= the task's sequence length {task.train_ids.shape[1]}; got {length}")
    E = embedding_matrix.detach().float().cpu()
    C, H = task.num_classes, E.shape[1]
    net = make_learner(learner, H, C, task.train_ids.shape[1])
    g = torch.Generator().manual_seed(seed)
    classes = torch.arange(C).repeat_interleave(per_class)
    init_ids = init_rows = None
    if init == "real":
        init_rows = random_subset(task, per_class, seed)
        init_ids = task.train_ids[init_rows][:, :length]
        x0 = E[init_ids]
    else:
        x0 = torch.randn(len(classes), length, H, generator=g) * E.std()
    embeds = x0.clone().requires_grad_()
    label_logits = (2.0 * F.one_hot(classes, C).float()).requires_grad_()  # softmax: 0.71 on its class
    opt = torch.optim.Adam([{"params": [embeds], "lr": lr * float(E.std())},
                            {"params": [label_logits], "lr": label_lr if soft_labels else 0.0}])
    history: list[dict] = []

    def outer_step() -> torch.Tensor:
        targets = F.softmax(label_logits, -1) if soft_labels else classes
        with net.context():
            params = sgd_unroll(net, net.init(g), embeds, targets, None, inner_steps, inner_lr, differentiable=True)
        rows = torch.randint(len(task.train_ids), (batch_size,), generator=g)
        ids = task.train_ids[rows]
        loss = F.cross_entropy(net.logits(params, E[ids], ids != PAD), task.train_y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([embeds, label_logits], 1.0)
        opt.step()
        return loss

    from effitrain.train.flops import count_flops
    flops_box: list[torch.Tensor] = []
    state = g.get_state()
    flops_per_step = count_flops(lambda: flops_box.append(outer_step()))  # counted on a copy: undo it below
    with torch.no_grad():
        embeds.copy_(x0)
        label_logits.copy_(2.0 * F.one_hot(classes, C).float())
    opt = torch.optim.Adam([{"params": [embeds], "lr": lr * float(E.std())},
                            {"params": [label_logits], "lr": label_lr if soft_labels else 0.0}])
    g.set_state(state)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        loss = float(outer_step().detach())
        history.append({"step": step, "loss": loss})
        if callback is not None:
            callback(step, loss)
    seconds = time.perf_counter() - t0
    labels = F.softmax(label_logits.detach(), -1) if soft_labels else F.one_hot(classes, C).float()
    settings = dict(per_class=per_class, length=length, steps=steps, inner_steps=inner_steps, inner_lr=inner_lr,
                    lr=lr, soft_labels=soft_labels, init=init, learner=learner, batch_size=batch_size, seed=seed)
    return DistilledSet(embeds.detach().clone(), labels, classes, init_ids, seconds,
                        float(flops_per_step) * steps, history, settings, init_rows)


@torch.no_grad()
def evaluate_learner(learner: Learner, params: dict[str, torch.Tensor], task: "ClassificationTask",
                  embedding_matrix: torch.Tensor, batch_size: int = 512) -> float:
    E, correct = embedding_matrix.detach().float().cpu(), 0
    for i in range(0, len(task.test_ids), batch_size):
        ids = task.test_ids[i:i + batch_size]
        correct += int((learner.logits(params, E[ids], ids != PAD).argmax(-1) == task.test_y[i:i + batch_size]).sum())
    return correct / max(1, len(task.test_ids))


@on_one_thread
def train_on(examples: "DistilledSet | torch.Tensor | None", task: "ClassificationTask",
             embedding_matrix: torch.Tensor, *, steps: int = 20, lr: float = 0.3, learner: str = "bag",
             batch_size: int | None = None, seed: int = 0) -> float:
    """Test accuracy of a fresh learner trained `steps` plain-SGD steps (lr `lr`), seeded by `seed`.

    examples: a `DistilledSet` (trained through its embeddings, full batch, soft labels), a tensor of
    training-row indices (a real subset, full batch), or None: the whole training split, a fresh
    random batch of `batch_size` rows each step (default: as many rows as a set of 2 per class).
    """
    _check_positive("steps", steps)
    _check_positive("lr", lr, float)
    E = embedding_matrix.detach().float().cpu()
    net = make_learner(learner, E.shape[1], task.num_classes, task.train_ids.shape[1])
    g = torch.Generator().manual_seed(10_000 + seed)
    params = net.init(g)
    if examples is None:
        n = batch_size or 2 * task.num_classes
        for _ in range(steps):
            rows = torch.randint(len(task.train_ids), (n,), generator=g)
            ids = task.train_ids[rows]
            params = sgd_unroll(net, params, E[ids], task.train_y[rows], ids != PAD, 1, lr, differentiable=False)
    elif isinstance(examples, DistilledSet):
        params = sgd_unroll(net, params, examples.embeds, examples.labels, None, steps, lr, differentiable=False)
    else:
        ids = task.train_ids[examples]
        params = sgd_unroll(net, params, E[ids], task.train_y[examples], ids != PAD, steps, lr, differentiable=False)
    return evaluate_learner(net, params, task, E)


def nearest_tokens(distilled: DistilledSet, tokenizer: "Tokenizer", embedding_matrix: torch.Tensor,
                   k: int = 3, skip_special: bool = True) -> list[list[list[str]]]:
    """For every synthetic example and position, the `k` vocabulary tokens nearest by cosine.

    Returns [example][position] → list of k token strings. skip_special: leave out [PAD], [UNK],
    [CLS], [SEP], [MASK] (ids 0-4).
    """
    _check_positive("k", k)
    E = F.normalize(embedding_matrix.detach().float().cpu(), dim=-1)
    sims = F.normalize(distilled.embeds, dim=-1) @ E.T  # (N, L, V)
    if skip_special:
        sims[..., :5] = -2.0
    top = sims.topk(k, dim=-1).indices
    return [[[tokenizer.id_to_token(int(i)) for i in pos] for pos in ex] for ex in top]


def nearest_tokens_frame(distilled: DistilledSet, tokenizer: "Tokenizer", embedding_matrix: torch.Tensor,
                         class_names: Sequence[str], positions: int = 12) -> "pd.DataFrame":
    """One row per synthetic example: its class, soft label, the 5 tokens nearest to the mean of its
    vectors (what the bag learner sees), the nearest real token at each of its first `positions`
    positions, and (init="real") the text it was initialised from."""
    import pandas as pd
    near = nearest_tokens(distilled, tokenizer, embedding_matrix, k=1)
    means = DistilledSet(distilled.embeds.mean(1, keepdim=True), distilled.labels, distilled.classes, None, 0.0, 0.0)
    near_mean = nearest_tokens(means, tokenizer, embedding_matrix, k=5)
    rows = []
    for i, ex in enumerate(near):
        row = {"class": class_names[int(distilled.classes[i])],
               "soft label": " ".join(f"{p:.2f}" for p in distilled.labels[i].tolist()),
               "nearest to its mean": " ".join(near_mean[i][0]),
               "nearest tokens now": " ".join(t[0] for t in ex[:positions])}
        if distilled.init_ids is not None:
            row["started from"] = " ".join(tokenizer.id_to_token(int(t)) for t in distilled.init_ids[i, :positions])
        rows.append(row)
    return pd.DataFrame(rows)




__all__ = ["DistilledSet", "distill_dataset", "train_on", "evaluate_learner", "random_subset", "nearest_tokens",
           "nearest_tokens_frame", "BagLearner", "EncoderLearner", "Learner", "make_learner", "sgd_unroll",
           "one_thread", "on_one_thread"]
