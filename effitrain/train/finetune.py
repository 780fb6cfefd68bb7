"""Judge a pre-trained encoder on a classification task: fine-tune it, or fit a linear probe on its features.

    r = evaluate_downstream(run.model, task, method="probe")      # or "finetune"; seeds=(0, 1, 2)
    r.accuracy, r.ci, r.per_seed, r.majority                     # mean, 95% half-width, per seed, floor
    r = evaluate_downstream(run.model, task, floor=True)          # + the same judge on a random init:
    r.floor.accuracy, r.gain, r.gain_ci                          # its accuracy, the paired gain ± 95%
    random_init_floor(cfg, task, method="probe")                  # the random-init floor alone
    downstream_table({"baseline": m0, "technique": m1}, [task])   # a DataFrame for lessons

What the judge can and cannot see is measured in docs/downstream.md: the sotu tasks are mostly
lexical (a bag-of-words logistic regression beats every encoder of the cpu profile on them), so a
random init fine-tuned on a few thousand labelled paragraphs learns most of what pre-training
gives, and a pre-trained encoder's lead over its random-init floor is a few points. Read a
verdict against the floor (``floor=True``: same seeds, paired), never against the majority class.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from effitrain.config import Config
from effitrain.data.downstream import ClassificationTask
from effitrain.data.tokenizer import PAD
from effitrain.model import BertForClassification, BertForMLM, Encoder
from effitrain.stats import mean_ci
from effitrain.train.footprint import optimizer_state_bytes
from effitrain.train.sparse_update import apply_update, check_update
from effitrain.train.step import keep_rng


@dataclass
class FinetuneResult:
    accuracy: float
    train_accuracy: float  # on up to TRAIN_SAMPLE training rows drawn at random (the same rows every run)
    seconds: float
    steps: int
    val_accuracy: float = math.nan  # on `validation`'s test split, where one was given
    trainable_params: int = 0  # parameters the optimizer updated (`update`: all, adapters, biases, last blocks)
    optimizer_bytes: int = 0  # AdamW's state after training, each storage once


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
             batch_size: int = 32, lr: float = 1e-4, seed: int = 0, device: str | torch.device = "cpu",
             validation: ClassificationTask | None = None, update: str = "full", rank: int = 8,
             last: int = 1) -> FinetuneResult:
    """Train encoder + classifier on the task's training split for `steps`; test accuracy at the end.

    `pretrained=None` trains from random initialisation (give `config`) — the no-pre-training control.
    The pre-trained model is copied, never changed. `validation`: a task whose test split is also
    scored (``val_accuracy``), for choosing settings without looking at the test split.
    `update`, `rank`, `last`: which parameters train (`effitrain.train.sparse_update.apply_update`);
    the result counts them (``trainable_params``) and AdamW's state bytes (``optimizer_bytes``).
    """
    model, seconds, optimizer = _train_classifier(pretrained, task, config=config, steps=steps,
                                                  batch_size=batch_size, lr=lr, seed=seed, device=device,
                                                  update=update, rank=rank, last=last)
    val = math.nan if validation is None else accuracy(model, validation.test_ids, validation.test_y)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return FinetuneResult(accuracy(model, task.test_ids, task.test_y), train_sample_accuracy(model, task),
                          seconds, steps, val, trainable, optimizer_state_bytes(optimizer))


TRAIN_SAMPLE = 512  # training rows scored for FinetuneResult.train_accuracy


def train_sample_accuracy(model: torch.nn.Module, task: ClassificationTask) -> float:
    """Accuracy on up to TRAIN_SAMPLE training rows drawn at random (the same rows every time)."""
    sample = torch.randperm(len(task.train_ids), generator=torch.Generator().manual_seed(0))[:TRAIN_SAMPLE]
    return accuracy(model, task.train_ids[sample], task.train_y[sample])


def train_classifier(pretrained: BertForMLM | None, task: ClassificationTask, *, config=None, steps: int = 200,
                     batch_size: int = 32, lr: float = 1e-4, seed: int = 0, device: str | torch.device = "cpu",
                     on_step: Callable[[int, torch.Tensor], None] | None = None, update: str = "full",
                     rank: int = 8, last: int = 1) -> tuple[BertForClassification, float]:
    """(the fine-tuned classifier, training seconds): `finetune` without the scoring.

    `on_step(step, loss)`, where given, is called after every optimizer step with the step's loss
    (a detached tensor: reading it is the caller's sync), e.g. for a progress bar.
    `update` ("full", "lora", "bias", "last"), `rank`, `last`: which parameters train
    (`effitrain.train.sparse_update.apply_update`, applied to the freshly built classifier); AdamW
    holds state for those only. "full" trains everything."""
    model, seconds, _ = _train_classifier(pretrained, task, config=config, steps=steps, batch_size=batch_size,
                                          lr=lr, seed=seed, device=device, on_step=on_step, update=update,
                                          rank=rank, last=last)
    return model, seconds


def _train_classifier(pretrained, task: ClassificationTask, *, config, steps: int, batch_size: int, lr: float,
                      seed: int, device, update: str, rank: int, last: int,
                      on_step=None) -> tuple[BertForClassification, float, torch.optim.Optimizer]:
    """`train_classifier`, also returning the optimizer (its state is what `finetune` measures)."""
    torch.manual_seed(seed)
    if pretrained is not None:
        cfg, vocab = pretrained.cfg, pretrained.vocab_size
        encoder = copy.deepcopy(pretrained.encoder)
    else:
        if config is None:
            raise ValueError("finetune without a pre-trained model needs config= (a ModelConfig and vocab size)")
        cfg, vocab = config
        encoder = None
    model = BertForClassification(cfg, vocab, task.num_classes, encoder)
    apply_update(model, update, rank=rank, last=last)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
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
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step, loss.detach())
    return model, time.perf_counter() - t0, optimizer


# -- evaluating a pre-trained encoder downstream: fine-tuning or a linear probe, over seeds ----------
METHODS = ("finetune", "probe")
# Fine-tuning's learning rate is chosen per model and seed from LR_GRID on a validation split cut out of
# the training split: on smoke an MLM encoder did best at 5e-4 and an ELECTRA discriminator at 2e-3
# (at 5e-4 it stayed at the majority class), so one fixed rate would judge the objective by the rate.
LR_GRID = (5e-4, 2e-3)
VALIDATION_FRACTION = 0.2
DEFAULTS = {"finetune": {"steps": 200, "lr": LR_GRID, "batch_size": 32},
            "probe": {"steps": 300, "lr": 1e-2, "batch_size": 512}}
PROBE_WEIGHT_DECAY = 1e-2


def _parts(model) -> tuple[torch.nn.Module, object, int]:
    """(encoder, model config, vocab size) of a BertForMLM-like model (``.encoder``, ``.cfg``,
    ``.vocab_size``), a bare `Encoder`, or anything holding one as ``.model`` (a `Run`)."""
    if not hasattr(model, "encoder") and isinstance(getattr(model, "model", None), torch.nn.Module):
        model = model.model
    encoder = getattr(model, "encoder", None)
    if encoder is None and isinstance(model, Encoder):
        encoder = model
    if not isinstance(encoder, torch.nn.Module):
        raise TypeError(f"evaluate_downstream needs a model with an .encoder (like BertForMLM), got {type(model).__name__}")
    cfg = getattr(model, "cfg", None) or getattr(encoder, "cfg", None)
    vocab = getattr(model, "vocab_size", None) or encoder.tok.num_embeddings
    return encoder, cfg, int(vocab)


@torch.no_grad()
def mean_pooled(encoder: torch.nn.Module, ids: torch.Tensor, batch_size: int = 256,
                device: str | torch.device | None = None) -> torch.Tensor:
    """(N, H) float32 features: the encoder's last hidden states averaged over the non-PAD tokens.

    Computed in eval mode under no_grad; the encoder's train/eval modes are restored afterwards.
    """
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    modes = {m: m.training for m in encoder.modules()}
    encoder.eval()
    try:
        out = []
        for i in range(0, len(ids), batch_size):
            x = ids[i:i + batch_size].to(device)
            keep = x != PAD
            h = encoder(x, keep).float()  # (B, T, H)
            w = keep.unsqueeze(-1).float()
            out.append(((h * w).sum(1) / w.sum(1).clamp_min(1)).cpu())
        return torch.cat(out) if out else torch.zeros(0, getattr(encoder.cfg, "hidden", 0))
    finally:
        for m, mode in modes.items():
            m.train(mode)


def pooled_rows(encoder: torch.nn.Module, ids: torch.Tensor, cache: dict | None = None,
                device: str | torch.device | None = None) -> torch.Tensor:
    """`mean_pooled(encoder, ids)`, reusing the rows already in `cache` (keyed by a row's token ids).

    A row's features depend only on its ids, so two tasks cut from the same texts (sotu-era and
    sotu-party) pay for one feature pass; the cache belongs to one encoder and must not outlive its
    weights. `cache=None` is `mean_pooled`.
    """
    if cache is None:
        return mean_pooled(encoder, ids, device=device)
    keys = [row.numpy().tobytes() for row in ids.cpu()]
    todo = sorted({i for i, k in enumerate(keys) if k not in cache}, key=lambda i: keys[i])
    seen: dict[bytes, int] = {}
    todo = [i for i in todo if seen.setdefault(keys[i], i) == i]  # each missing row once
    if todo:
        for i, feat in zip(todo, mean_pooled(encoder, ids[todo], device=device)):
            cache[keys[i]] = feat
    if not keys:
        return mean_pooled(encoder, ids, device=device)
    return torch.stack([cache[k] for k in keys])


def fit_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, *, steps: int = 300, lr: float = 1e-2,
              batch_size: int = 512, weight_decay: float = PROBE_WEIGHT_DECAY, seed: int = 0) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised features, AdamW, seeded init and mini-batches.

    Deterministic for a seed (its own generator; the global RNG is untouched). The returned layer
    takes *raw* features: the standardisation is folded into its weights.
    """
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    z = (train_x - mean) / std
    g = torch.Generator().manual_seed(seed)
    with keep_rng(torch.device("cpu")):  # Linear's own init draws from the global RNG; it is overwritten
        layer = torch.nn.Linear(z.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.01)
        layer.bias.zero_()
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(z)
    b = min(batch_size, n)
    order, pos = torch.randperm(n, generator=g), 0
    for step in range(steps):
        if b == n:
            idx = order
        else:
            if pos + b > n:
                order, pos = torch.randperm(n, generator=g), 0
            idx, pos = order[pos:pos + b], pos + b
        for group in optimizer.param_groups:  # cosine decay to 0
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = F.cross_entropy(layer(z[idx]), train_y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # fold the standardisation in: W((x-m)/s)+c = (W/s)x + (c - W(m/s))
        w = layer.weight / std
        layer.bias.sub_(w @ mean)
        layer.weight.copy_(w)
    return layer


@dataclass
class DownstreamResult:
    """Test accuracy of one model on one task by one method, over seeds."""

    task: str
    method: str
    accuracy: float  # mean test accuracy over seeds
    ci: float  # half-width of the 95% Student-t interval over seeds (NaN with one seed)
    per_seed: list[float]
    seeds: list[int]
    majority: float  # test accuracy of always answering the most common training label
    # seconds per seed: fine-tuning, every rate of the grid; the probe, its fit *and* the feature pass
    # (computed once and shared by the seeds, so each seed's entry is what one probe costs)
    seconds: list[float]
    train_accuracy: list[float]
    feature_seconds: float = 0.0  # the probe's feature pass (0 where `feature_cache` had every row)
    settings: dict = field(default_factory=dict)  # steps, lr (a number, or the grid chosen from), batch_size
    chosen_lr: list[float] = field(default_factory=list)  # fine-tuning: the rate each seed's verdict used
    val_accuracy: list[float] = field(default_factory=list)  # fine-tuning with a grid: the chosen rate's
    labels: list[str] = field(default_factory=list)
    n_train: int = 0
    n_test: int = 0
    # floor=True: the same judge (method, settings, seeds) on a random init of the same shape, and the
    # gain over it, paired by seed (mean of per-seed differences, 95% Student-t half-width)
    floor: "DownstreamResult | None" = None
    gain: float = math.nan
    gain_ci: float = math.nan

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        ci = "" if math.isnan(self.ci) else f" ± {self.ci:.3f}"
        text = (f"{self.task} {self.method}: {self.accuracy:.3f}{ci} (95%, {len(self.seeds)} seeds; "
                f"majority {self.majority:.3f}")
        if self.floor is not None:
            gci = "" if math.isnan(self.gain_ci) else f" ± {self.gain_ci:.3f}"
            text += f"; random init {self.floor.accuracy:.3f}, gain {self.gain:+.3f}{gci} paired"
        return text + ")"


def _progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar (cleared when done), or None."""
    if not enabled or total <= 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)


def evaluate_downstream(model, task: ClassificationTask, *, method: str = "finetune", seeds=(0, 1, 2),
                        steps: int | None = None, lr: "float | Sequence[float] | None" = None,
                        batch_size: int | None = None, device: str | torch.device | None = None,
                        feature_cache: dict | None = None, floor: bool = False,
                        progress: bool = True, update: str = "full", rank: int = 8,
                        last: int = 1) -> DownstreamResult:
    """Test accuracy of a pre-trained encoder on `task`, mean ± 95% interval over `seeds`.

    method="finetune": encoder + [CLS] classifier trained together (`finetune`) on a copy, per seed.
    method="probe": a linear classifier (`fit_probe`) on frozen mean-pooled encoder features
    (`mean_pooled`, PAD masked out), computed once; the seed changes the classifier's init and batches.
    `model` is a BertForMLM (or anything with ``.encoder``, ``.cfg``, ``.vocab_size``, or a `Run`);
    it is never changed. Defaults for steps / lr / batch_size per method are in `DEFAULTS`.
    `device` defaults to the model's.

    Fine-tuning with several learning rates (the default, `LR_GRID`): each seed fine-tunes once per
    rate on the training split less a validation part (`ClassificationTask.split_validation`), keeps
    the rate with the best validation accuracy (the first on a tie), and reports that model's test
    accuracy; the test split never chooses anything. One rate trains on the whole training split.
    `feature_cache`: a dict the probe keeps this encoder's features in (`pooled_rows`), for several
    tasks over the same texts.

    floor=True: also judge a random init of the same shape with the same method, settings and seeds
    (`random_init_floor`) and report it as ``.floor``, with ``.gain`` ± ``.gain_ci``: the mean per-seed
    difference (paired: seed s of both uses the same fine-tuning seed), the number to read before
    saying pre-training helped. It doubles the cost.
    progress: a tqdm bar over the fine-tuning steps (all seeds and rates), cleared when done;
    False for none. The probe takes seconds and shows none.
    update, rank, last: which parameters fine-tuning trains (`effitrain.train.sparse_update`; "full",
    the default, all of them); recorded in ``settings`` where not "full". The probe trains its linear
    layer only and takes update="full".
    """

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    seeds = [int(s) for s in ([seeds] if isinstance(seeds, int) else seeds)]
    if not seeds:
        raise ValueError("evaluate_downstream needs at least one seed")
    encoder, cfg, vocab = _parts(model)
    if update != "full":
        check_update(update, rank=rank, last=last, layers=len(encoder.blocks), hidden=encoder.tok.embedding_dim)
        if method == "probe":
            raise ValueError(f"update={update!r}: the probe trains a linear layer on frozen features; "
                             "update is for method='finetune'")
    top = int(max(task.train_ids.max(), task.test_ids.max())) if task.train_ids.numel() and task.test_ids.numel() else -1
    if top >= vocab:
        raise ValueError(f"task {task.name!r} holds token id {top}, but the model's vocabulary has {vocab} ids: the "
                         "model and the task use different tokenizers (build the task with the model's pre-training "
                         "data: downstream_task(name, data))")
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    d = DEFAULTS[method]
    rates = d["lr"] if lr is None else lr
    rates = [float(x) for x in (rates if isinstance(rates, (list, tuple)) else [rates])]
    if not rates or any(not (x > 0 and math.isfinite(x)) for x in rates):
        raise ValueError(f"lr must be a positive number or a non-empty list of them, got {lr!r}")
    if method == "probe" and len(rates) > 1:
        raise ValueError("lr: the probe takes one learning rate; a grid is for method='finetune'")
    settings = {"steps": d["steps"] if steps is None else int(steps), "lr": rates[0] if len(rates) == 1 else rates,
                "batch_size": d["batch_size"] if batch_size is None else int(batch_size)}
    extra = {"update": update, "rank": rank, "last": last}  # which parameters fine-tuning trains
    if update != "full":  # the record says what trained
        settings["update"] = update
        if update == "lora":
            settings["rank"] = rank
        if update == "last":
            settings["last"] = last
    accs, train_accs, seconds, feature_seconds, chosen, val_accs = [], [], [], 0.0, [], []
    if method == "finetune":
        holder = SimpleNamespace(encoder=encoder, cfg=cfg, vocab_size=vocab)
        fit, val = task.split_validation(VALIDATION_FRACTION) if len(rates) > 1 else (task, None)
        bar = _progress_bar(progress, len(seeds) * len(rates) * settings["steps"], f"fine-tune {task.name}")
        try:
            for seed in seeds:
                # (validation accuracy, index, model); only the chosen one meets the test split
                best, spent = None, 0.0
                for i, rate in enumerate(rates):
                    if bar is not None:
                        bar.set_postfix_str(f"seed {seed} lr {rate:g}", refresh=False)
                    clf, secs = train_classifier(holder, fit, seed=seed, device=device, steps=settings["steps"],
                                                 batch_size=settings["batch_size"], lr=rate, **extra,
                                                 on_step=None if bar is None else (lambda step, loss: bar.update()))
                    spent += secs
                    score = accuracy(clf, val.test_ids, val.test_y) if val is not None else 0.0
                    if best is None or score > best[0]:
                        best = (score, i, clf)
                score, i, clf = best
                accs.append(accuracy(clf, fit.test_ids, fit.test_y))
                train_accs.append(train_sample_accuracy(clf, fit))
                seconds.append(spent)
                chosen.append(rates[i])
                if val is not None:
                    val_accs.append(score)
        finally:
            if bar is not None:
                bar.close()
    else:
        t0 = time.perf_counter()
        train_x = pooled_rows(encoder, task.train_ids, feature_cache, device=device)
        test_x = pooled_rows(encoder, task.test_ids, feature_cache, device=device)
        feature_seconds = time.perf_counter() - t0
        for seed in seeds:
            t0 = time.perf_counter()
            layer = fit_probe(train_x, task.train_y, task.num_classes, seed=seed, **settings)
            seconds.append(feature_seconds + time.perf_counter() - t0)
            with torch.no_grad():
                accs.append(float((layer(test_x).argmax(-1) == task.test_y).float().mean()))
                train_accs.append(float((layer(train_x).argmax(-1) == task.train_y).float().mean()))
    mean, half = mean_ci(accs)
    result = DownstreamResult(task.name, method, mean, half, accs, seeds, task.majority_accuracy(), seconds,
                              train_accs, feature_seconds, settings, chosen, val_accs, list(task.labels),
                              len(task.train_ids), len(task.test_ids))
    if floor:
        base = random_init_floor(SimpleNamespace(encoder=encoder, cfg=cfg, vocab_size=vocab), task, method=method,
                                 seeds=seeds, steps=settings["steps"], lr=settings["lr"],
                                 batch_size=settings["batch_size"], device=device, progress=progress, **extra)
        result.floor = base
        result.gain, result.gain_ci = mean_ci([a - b for a, b in zip(accs, base.per_seed)])
    return result


def random_init(config, seed: int = 0) -> BertForMLM:
    """An untrained BertForMLM of the shape `config` gives, initialised from `seed` (the global RNG is untouched).

    `config`: a `Config` (model and data.vocab_size), a (ModelConfig, vocab size) pair, or a model /
    `Run` to copy the shape of (its encoder's vocabulary, so the task's token ids fit)."""
    if isinstance(config, tuple) and len(config) == 2:
        cfg, vocab = config
    elif isinstance(config, Config):
        cfg, vocab = config.model, config.data.vocab_size
    else:
        _, cfg, vocab = _parts(config)
    with keep_rng(torch.device("cpu")):
        torch.manual_seed(seed)
        return BertForMLM(cfg, int(vocab))


def random_init_floor(config, task: ClassificationTask, *, method: str = "finetune", seeds=(0, 1, 2),
                      **kw) -> DownstreamResult:
    """The random-init floor: `evaluate_downstream` of an untrained encoder of the same shape, one
    random init per seed (seed s: init from s, fine-tuned or probed with seed s), so the ± covers the
    init as well as the fine-tuning. What pre-training must beat; the majority class is a lower bar.

    `config`: a `Config`, a (ModelConfig, vocab size) pair, or a pre-trained model / `Run` whose
    shape is copied. `kw` go to `evaluate_downstream` (steps, lr, batch_size, device, progress)."""

    seeds = [int(s) for s in ([seeds] if isinstance(seeds, int) else seeds)]
    if not seeds:
        raise ValueError("random_init_floor needs at least one seed")
    if kw.pop("floor", False):
        raise ValueError("random_init_floor is the floor; floor=True is for evaluate_downstream")
    parts = [evaluate_downstream(random_init(config, seed), task, method=method, seeds=[seed], **kw) for seed in seeds]
    first = parts[0]
    accs = [a for r in parts for a in r.per_seed]
    mean, half = mean_ci(accs)
    cat = lambda name: [x for r in parts for x in getattr(r, name)]  # noqa: E731
    return DownstreamResult(first.task, method, mean, half, accs, seeds, first.majority, cat("seconds"),
                            cat("train_accuracy"), sum(r.feature_seconds for r in parts), first.settings,
                            cat("chosen_lr"), cat("val_accuracy"), first.labels, first.n_train, first.n_test)


def downstream_table(models: dict, tasks, methods=("probe", "finetune"), **kw):
    """A pandas DataFrame, one row per model × task × method: accuracy, ± 95%, majority, seeds, seconds.

    `tasks` is a list of `ClassificationTask`s (or a dict name → task); `kw` go to `evaluate_downstream`
    (``floor=True`` adds the columns "random init" and "gain" ± "gain ± 95%", paired by seed).
    "seconds" is the wall time of the row's evaluation (the probe's feature pass included).
    The full results are in ``df.attrs["results"]``.
    """
    import pandas as pd

    task_list = list(tasks.values()) if isinstance(tasks, dict) else list(tasks)
    floor = bool(kw.get("floor", False))
    columns = ["model", "task", "method", "accuracy", "± 95%", "majority", "seeds", "seconds"]
    if floor:
        columns[6:6] = ["random init", "gain", "gain ± 95%"]
    rows, results = [], []
    for model_name, model in models.items():
        for task in task_list:
            for method in methods:
                t0 = time.perf_counter()
                r = evaluate_downstream(model, task, method=method, **kw)
                results.append(r)
                row = {"model": model_name, "task": task.name, "method": method, "accuracy": r.accuracy,
                       "± 95%": r.ci, "majority": r.majority, "seeds": len(r.seeds),
                       "seconds": time.perf_counter() - t0}
                if floor:
                    row.update({"random init": r.floor.accuracy, "gain": r.gain, "gain ± 95%": r.gain_ci})
                rows.append(row)
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["results"] = results
    df.attrs["notes"] = ["accuracy: mean test accuracy over seeds; ± 95%: Student-t half-width over seeds; "
                         "majority: always answering the most common training label"]
    if floor:
        df.attrs["notes"].append("random init: the same judge on an untrained encoder of the same shape; gain: "
                                 "accuracy − random init, paired by seed, ± its 95% half-width")
    return df
