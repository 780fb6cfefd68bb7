#!/usr/bin/env python
"""effitrain's training step against Hugging Face `transformers` BertForMaskedLM, same model, same data.

    python scripts/bench_vs_hf.py                      # fp32, 5 rounds × 10 timed steps each
    python scripts/bench_vs_hf.py --precision bf16     # fp32, then bf16 autocast as a second comparison
    python scripts/bench_vs_hf.py --json               # last line of stdout: one JSON object
    python scripts/bench_vs_hf.py --no-plain           # only effitrain and HF
    python scripts/bench_vs_hf.py --compile            # every side's forward torch.compile'd

Both models: vocab 8192, hidden 256, 4 layers, 4 heads, FFN 1024, post-LN, GELU, tied decoder,
dropout 0, random init; batches of 32 × 128 packed tokens with 15% masked (80/10/10), the same
batches for both. Both steps: forward, MLM cross-entropy, backward, clip to norm 1, AdamW, zero_grad.

  effitrain  `BertForMLM` with SDPA attention and the sparse MLM head (logits only at the masked
             positions), stepped by the trainer's own pieces (`mlm_loss_inputs`, `make_optimizer`:
             fused AdamW where available, no decay on biases / norms / embeddings).
  HF         `BertForMaskedLM(attn_implementation="sdpa")`, labels -100 except at masked positions
             (so logits for every position, as HF computes them), plain `torch.optim.AdamW`.
  plain      the same BERT written in plain PyTorch: `nn.TransformerEncoder` (post-LN, GELU) under
             learned token and position embeddings, and the same sparse head (transform, LayerNorm,
             tied decoder, logits only at the masked positions), plain `torch.optim.AdamW`. What a
             user would write without the package: effitrain should be no slower (≥ 1.0×).

The sparse head is part of what is compared: it is a design choice of the effitrain model, not a
trick of the benchmark. The two are timed alternately in one process, step by step (A B A B …),
in rounds whose first side alternates, after a warm-up of each, so that whatever else the machine
is doing falls on both alike. Each step is timed on its own; reported are the median tokens/s of
each side and their ratio, the median ratio of adjacent (A, B) steps and the ratio of the fastest
steps (the least disturbed by other processes). Needs the optional extra: pip install 'effitrain[bench]'.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from typing import Any, Callable


def _die(message: str, code: int = 2) -> None:
    print(f"bench_vs_hf: error: {message}", file=sys.stderr)
    sys.exit(code)


try:
    import transformers
    from transformers import BertConfig, BertForMaskedLM
except ImportError:
    _die("Hugging Face transformers is not installed; install the bench extra: pip install 'effitrain[bench]'")

import torch  # noqa: E402

import effitrain as et  # noqa: E402
from effitrain.bench import (autocast_for, device_name, finite_or_none, make_train_step, synthetic_batches, sync,  # noqa: E402
                             time_steps)
from effitrain.data import MaskedBatch  # noqa: E402
from effitrain.model import BertForMLM, count_parameters  # noqa: E402
from effitrain.train.flops import count_flops  # noqa: E402
from effitrain.train.step import make_optimizer, mlm_loss_inputs  # noqa: E402

SPARSE_NOTE = ("effitrain's MLM head computes logits only at the masked positions (sparse prediction); "
               "HF's BertForMaskedLM computes them at every position. That is part of the comparison.")


# -- the two sides ---------------------------------------------------------------------------------
def compiled(fn: Callable, cfg: et.Config) -> Callable:
    """`torch.compile(fn)` when the comparison is compiled (--compile), else `fn`: every side alike."""
    return torch.compile(fn) if cfg.run.compile else fn


def effitrain_config(args: argparse.Namespace, precision: str) -> et.Config:
    return et.profile_config("cpu").replace(
        preset="mini", hidden=256, layers=4, heads=4, ffn=1024, norm="post", ffn_kind="gelu", dropout=0.0,
        vocab_size=args.vocab, seq_len=args.seq_len, mask_prob=0.15, batch_size=args.batch, grad_accum=1,
        precision=precision, device=args.device, seed=args.seed, compile=args.compile)


def hf_config(cfg: et.Config) -> BertConfig:
    m = cfg.model
    return BertConfig(vocab_size=cfg.data.vocab_size, hidden_size=m.hidden, num_hidden_layers=m.layers,
                      num_attention_heads=m.heads, intermediate_size=m.ffn, hidden_act="gelu",
                      max_position_embeddings=m.max_positions, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, initializer_range=m.init_std,
                      tie_word_embeddings=True, attn_implementation="sdpa")


def hf_labels(batch: MaskedBatch) -> torch.Tensor:
    """(B, T) labels as HF expects them: the original id at masked positions, -100 elsewhere."""
    labels = torch.full_like(batch.input_ids, -100)
    labels.view(-1)[batch.positions] = batch.labels
    return labels


class Side:
    """One model with its optimizer, step function and FLOP count."""

    def __init__(self, name: str, step: Callable[[int], torch.Tensor], forward_backward: Callable[[], None],
                 model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: Callable[[MaskedBatch], torch.Tensor]):
        self.name, self.step, self.model, self.optimizer, self.loss = name, step, model, optimizer, loss
        self.flops = count_flops(forward_backward)
        optimizer.zero_grad(set_to_none=True)
        self.seconds: list[float] = []
        self.round_medians: list[float] = []


def build_effitrain(cfg: et.Config, batches: list[MaskedBatch], device: torch.device) -> Side:
    torch.manual_seed(cfg.run.seed)
    model = BertForMLM(cfg.model, cfg.data.vocab_size).to(device).train()
    optimizer = make_optimizer(model, cfg, device)
    train_step = make_train_step(model, optimizer, cfg, device, step_model=compiled(model, cfg))
    autocast = autocast_for(cfg, device)

    def forward_backward() -> None:
        with autocast():
            loss = mlm_loss_inputs(model, batches[0]).loss
        loss.backward()

    side = Side("effitrain", lambda i: train_step(batches[i % len(batches)]), forward_backward, model, optimizer,
                loss=lambda b: mlm_loss_inputs(model, b).loss)
    side.optimizer_kind = "fused AdamW" if optimizer.defaults.get("fused") else "AdamW"
    return side


def build_hf(cfg: et.Config, batches: list[MaskedBatch], device: torch.device) -> Side:
    torch.manual_seed(cfg.run.seed)
    model = BertForMaskedLM(hf_config(cfg)).to(device).train()
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                                  weight_decay=o.weight_decay)
    inputs = [(b.input_ids, hf_labels(b)) for b in batches]
    autocast = autocast_for(cfg, device)
    # the same optimizer step as effitrain's side; no padding, so no attention mask, as effitrain
    forward = compiled(model, cfg)
    step = make_train_step(model, optimizer, cfg, device, loss_of=lambda b: forward(input_ids=b[0], labels=b[1]).loss)

    def train_step(i: int) -> torch.Tensor:
        return step(inputs[i % len(inputs)])

    def forward_backward() -> None:
        with autocast():
            loss = model(input_ids=inputs[0][0], labels=inputs[0][1]).loss
        loss.backward()

    side = Side("HF", train_step, forward_backward, model, optimizer,
                loss=lambda b: model(input_ids=b.input_ids, labels=hf_labels(b)).loss)
    side.optimizer_kind = "AdamW (torch default implementation)"
    return side


class PlainBert(torch.nn.Module):
    """BERT in plain PyTorch: embeddings, `nn.TransformerEncoder`, sparse MLM head with a tied decoder."""

    def __init__(self, cfg: et.Config):
        super().__init__()
        m, nn = cfg.model, torch.nn
        self.tok = nn.Embedding(cfg.data.vocab_size, m.hidden)
        self.pos = nn.Embedding(m.max_positions, m.hidden)
        self.norm = nn.LayerNorm(m.hidden)
        layer = nn.TransformerEncoderLayer(m.hidden, m.heads, m.ffn, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, m.layers, enable_nested_tensor=False)
        self.transform = nn.Sequential(nn.Linear(m.hidden, m.hidden), nn.GELU(), nn.LayerNorm(m.hidden))
        self.bias = nn.Parameter(torch.zeros(cfg.data.vocab_size))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=m.init_std)

    def loss(self, batch: MaskedBatch) -> torch.Tensor:
        ids = batch.input_ids
        x = self.norm(self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device)))
        h = self.encoder(x).reshape(-1, x.shape[-1])[batch.positions]  # only the masked positions
        logits = self.transform(h) @ self.tok.weight.T + self.bias
        return torch.nn.functional.cross_entropy(logits.float(), batch.labels)


def build_plain(cfg: et.Config, batches: list[MaskedBatch], device: torch.device) -> Side:
    torch.manual_seed(cfg.run.seed)
    model = PlainBert(cfg).to(device).train()
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                                  weight_decay=o.weight_decay)
    autocast = autocast_for(cfg, device)
    step = make_train_step(model, optimizer, cfg, device, loss_of=compiled(model.loss, cfg))

    def forward_backward() -> None:
        with autocast():
            loss = model.loss(batches[0])
        loss.backward()

    side = Side("plain", lambda i: step(batches[i % len(batches)]), forward_backward, model, optimizer, loss=model.loss)
    side.optimizer_kind = "AdamW (torch default implementation)"
    return side


# -- one comparison -----------------------------------------------------------------------------------
def compare(args: argparse.Namespace, precision: str, device: torch.device) -> dict[str, Any]:
    cfg = effitrain_config(args, precision)
    batches = synthetic_batches(cfg, args.distinct_batches, cfg.data.vocab_size, seed=args.seed + 1, device=device)
    tokens = cfg.run.batch_size * cfg.data.seq_len
    predicted = int(batches[0].labels.numel())
    sides = [build_effitrain(cfg, batches, device), build_hf(cfg, batches, device)]
    if args.plain:
        sides.append(build_plain(cfg, batches, device))
    # the same task: all start near ln(V) on the same batch
    with torch.no_grad(), autocast_for(cfg, device)():
        first = [float(s.loss(batches[0])) for s in sides]

    print(f"\n[{precision}] warm-up: {args.warmup} steps each …", file=sys.stderr, flush=True)
    counters = {s.name: 0 for s in sides}
    for s in sides:
        time_steps(lambda i, s=s: s.step(i), 0, args.warmup, device)
        counters[s.name] += args.warmup
    pair_ratios: dict[str, list[float]] = {s.name: [] for s in sides[1:]}
    for r in range(args.rounds):
        order = sides if r % 2 == 0 else sides[::-1]  # who goes first alternates from round to round
        times: dict[str, list[float]] = {s.name: [] for s in sides}
        for _ in range(args.steps):  # A B A B …: both see the same machine, step by step
            for s in order:
                sync(device)
                t0 = time.perf_counter()
                s.step(counters[s.name])
                sync(device)
                times[s.name].append(time.perf_counter() - t0)
                counters[s.name] += 1
            for other in pair_ratios:
                pair_ratios[other].append(times[other][-1] / times["effitrain"][-1])
        for s in sides:
            s.seconds += times[s.name]
            s.round_medians.append(statistics.median(times[s.name]))
        med = {s.name: s.round_medians[-1] for s in sides}
        print(f"[{precision}] round {r + 1}/{args.rounds} ({' → '.join(s.name for s in order)}): "
              + ", ".join(f"{s.name} {tokens / med[s.name]:,.0f} tok/s" for s in sides) + "; effitrain / "
              + ", ".join(f"{o} {med[o] / med['effitrain']:.2f}×" for o in pair_ratios), file=sys.stderr, flush=True)
    with torch.no_grad(), autocast_for(cfg, device)():  # where training got to, on the first batch
        last = [float(s.loss(batches[0])) for s in sides]

    out: dict[str, Any] = {"precision": precision, "tokens_per_step": tokens, "predicted_per_step": predicted,
                           "initial_loss": {s.name: v for s, v in zip(sides, first)},
                           "final_loss": {s.name: v for s, v in zip(sides, last)}}
    for s in sides:
        med = statistics.median(s.seconds)
        out[s.name] = {
            "tokens_per_second": tokens / med,
            "median_step_seconds": med,
            "min_step_seconds": min(s.seconds),
            "max_step_seconds": max(s.seconds),
            "round_tokens_per_second": [tokens / m for m in s.round_medians],
            "flops_per_step": float(s.flops),
            "achieved_flops": s.flops / med,
            "parameters": count_parameters(s.model),
            "optimizer": s.optimizer_kind,
            "timed_steps": len(s.seconds),
        }
    out["against"] = {}
    for s in sides[1:]:  # effitrain's tokens/s over the other side's
        out["against"][s.name] = {
            "ratio": out["effitrain"]["tokens_per_second"] / out[s.name]["tokens_per_second"],
            "ratio_paired": statistics.median(pair_ratios[s.name]),  # median over adjacent (effitrain, other) steps
            "ratio_best": out[s.name]["min_step_seconds"] / out["effitrain"]["min_step_seconds"],
            "ratio_rounds": [o / e for e, o in zip(sides[0].round_medians, s.round_medians)]}
    out.update(out["against"]["HF"])  # the HF ratios at the top level, as before
    return out


def report(c: dict[str, Any]) -> str:
    lines = [f"── {c['precision']} {'(bf16 autocast)' if c['precision'] == 'bf16' else ''}".rstrip()]
    for name in ("effitrain", *c["against"]):
        d = c[name]
        lines.append(f"  {name:<10} {d['tokens_per_second']:>9,.0f} tokens/s   median step {d['median_step_seconds'] * 1e3:7.1f} ms"
                     f"   {d['flops_per_step'] / 1e9:6.1f} GFLOP/step   {d['achieved_flops'] / 1e9:6.1f} GFLOP/s"
                     f"   {d['parameters'] / 1e6:.2f}M params   loss {c['initial_loss'][name]:.3f} → {c['final_loss'][name]:.3f}")
    for other, a in c["against"].items():
        lines.append(f"  ratio      effitrain / {other} = {a['ratio']:.2f}× tokens/s (medians); "
                     f"paired steps {a['ratio_paired']:.2f}×, fastest steps {a['ratio_best']:.2f}×, "
                     f"rounds {', '.join(f'{r:.2f}' for r in a['ratio_rounds'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 only, or fp32 and then bf16 autocast as a second comparison")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per side per round (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side before the rounds (default 3)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--distinct-batches", type=int, default=4)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="end with the results as one line of JSON")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile every side's forward (compiling happens in the warm-up, which then "
                        "covers every distinct batch shape)")
    p.add_argument("--no-plain", dest="plain", action="store_false",
                   help="leave out the plain-PyTorch BERT (time only effitrain and HF)")
    args = p.parse_args(argv)
    for name in ("rounds", "steps"):
        if getattr(args, name) < 1:
            _die(f"--{name} must be >= 1; got {getattr(args, name)}")
    if args.compile:  # each distinct batch (its own count of masked positions) compiles in the warm-up, not in a timed step
        args.warmup = max(args.warmup, 2 * args.distinct_batches)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    try:
        device = effitrain_config(args, "fp32").run.resolved_device()
    except et.ConfigError as exc:
        _die(str(exc))

    precisions = ["fp32"] + (["bf16"] if args.precision == "bf16" else [])
    header = {
        "device": device_name(device),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__, "transformers": transformers.__version__, "effitrain": et.__version__,
        "model": {"vocab": args.vocab, "hidden": 256, "layers": 4, "heads": 4, "ffn": 1024},
        "batch": args.batch, "seq_len": args.seq_len, "mask_prob": 0.15,
        "rounds": args.rounds, "steps_per_round": args.steps, "warmup": args.warmup, "compile": args.compile,
    }
    print(f"device {header['device']}, torch {header['torch']}, transformers {header['transformers']}, "
          f"{header['date']}", flush=True)
    print(f"BERT vocab {args.vocab}, hidden 256, 4 layers, 4 heads, FFN 1024; batch {args.batch} × {args.seq_len}, "
          f"15% masked, dropout 0, AdamW; {args.rounds} rounds × {args.steps} timed steps each, alternating "
          f"step by step, after {args.warmup} warm-up" + (", every side compiled" if args.compile else ""), flush=True)
    print(f"note: {SPARSE_NOTE}", flush=True)
    comparisons = []
    for precision in precisions:
        c = compare(args, precision, device)
        comparisons.append(c)
        print(report(c), flush=True)
        sync(device)
    if args.json:
        print(json.dumps(finite_or_none({**header, "note": SPARSE_NOTE, "comparisons": comparisons})), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
