# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version,-jupytext.formats
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · Training under a memory budget: checkpointing, low-bit optimizer state, accumulation, fewer trainable weights
#
# Lessons 00–08 spent *time*. On a laptop, a small GPU or a phone the first wall a learner hits is
# **memory**: the model, its gradients, the optimizer's state and the activations kept for the
# backward must all fit at once. This lesson measures where a training step's bytes go, what each
# memory-saving method removes and what it costs in seconds, and then spends the saving: a model
# with five times the weights trains inside the budget of the small one.
#
# ## What you will learn
# - to count a step's memory: weights, gradients, AdamW's two moments, and the activations autograd
#   saves for the backward (measured with `saved_tensors_hooks`, and predicted by a formula);
# - what activation checkpointing, 8- and 4-bit optimizer state, gradient accumulation and bf16 each
#   remove, and their price in seconds per step (measured, alternating, with intervals);
# - to set a memory budget (`run.memory_budget`) and fit a bigger model into it, and whether that
#   bigger model is worth its time;
# - to fine-tune with a fraction of the weights (LoRA through `peft`, biases only, the last block):
#   what it saves, and what it costs in accuracy.
#
# **Prerequisites**: lesson 00 (seeds and intervals), lesson 06 (timing a step, bf16, SDPA).
#
# **Expected run time** (the whole notebook). The profile comes from `EFFITRAIN_PROFILE`, else `gpu`
# when CUDA is available, else `cpu`.
#
# | profile | memory table | bigger model | fine-tuning | whole notebook |
# |---|---|---|---|---|
# | `smoke` (CI) | 2 rounds × 2 steps | 2 seeds × 10 steps | 2 seeds × 10 steps, one rate | 35 s measured under nbmake (2-core CPU, 2026-12-07) |
# | `cpu` (laptop) | 3 rounds × 6 steps | 3 seeds × 800 steps | 3 seeds × 90 steps, 2 rates | 7.5 min measured with every cache cold (quiet 2-core Intel Xeon, bf16, 2026-12-07; 9–10 min on the same machine when it ran a quarter slower) |
# | `gpu` (one GPU) | 5 rounds × 10 steps | 3 seeds × 2,000 steps | 3 seeds × 200 steps, 2 rates | not measured yet (no GPU was available) |

# %% [markdown]
# ## The claim
# > Under a fixed memory budget, activation checkpointing, low-bit optimizer state and gradient
# > accumulation let a **bigger model** train, at a measured price in seconds per step; trained on the
# > same tokens it reaches a lower loss. And fine-tuning a fraction of the weights reaches nearly full
# > fine-tuning's accuracy with a fraction of its memory.
#
# The budget is what the profile's small model needs for one training step, plus 20%, rounded up to a
# whole MB (`budget_for`): the small model fits it as it is; the next preset does not, until the
# methods make room. (`cpu` and `smoke`: the `tiny` model, and `mini` as the bigger one; `gpu`:
# `small`, and `base`.)

# %%
import effitrain as et
from IPython.display import display
from effitrain.lab import LivePlot, Panel, tables
from effitrain.lab.design import seed_runs
from effitrain.lab.memory import budget_for, finetune_table, footprint_figure, memory_scatter, memory_table, preset_table
from effitrain.train.footprint import activation_formula, format_bytes, measure_footprint
from effitrain.data.downstream import sotu_era_task

# %%
PROFILE, SIZE = et.default_profile(), et.profile_size()
S = {"smoke": dict(rounds=2, steps=2, train="10steps", evals=2, seeds=(0, 1), ft_steps=10, ft_lr=2e-3, small="tiny",
                   big={"layers": 4}, methods=(1, False)),
     "cpu": dict(rounds=3, steps=6, train="800steps", evals=16, seeds=(0, 1, 2), ft_steps=90, ft_lr=None, small="tiny",
                 big={"layers": 4}, methods=(1, False)),
     "gpu": dict(rounds=5, steps=10, train="2000steps", evals=10, seeds=(0, 1, 2), ft_steps=200, ft_lr=None, small="small",
                 big={"preset": "base"}, methods=(4, True))}[SIZE]  # methods: (micro-batches, 4-bit AdamW)
cfg = et.profile_config(PROFILE, preset=S["small"])
data = et.prepare_data(cfg.data)
BUDGET = budget_for(cfg, data.vocab_size, slack=1.2)  # the small model's step, +20%, rounded up to a whole MB
print(f"profile {PROFILE}: {cfg.model.preset} BERT, {cfg.run.batch_size} × {cfg.data.seq_len} tokens a step, "
      f"{cfg.run.precision}; budget {BUDGET}")

# %% [markdown]
# ## 1. Where a step's bytes go
# `measure_footprint` runs one real training step of the config and counts: the weights and their
# gradients (4 bytes each in fp32), AdamW's state (two fp32 moments per weight: 8 bytes), and every
# tensor autograd saves for the backward during the forward, counted once per storage and booked to
# the part of the model that saved it. Next to it, `activation_formula` predicts the activations from
# the shapes alone (in fp32, where it is exact to the byte for every block; see
# `effitrain/train/footprint.py`).

# %%
fp32 = cfg.replace(precision="fp32")
fp = measure_footprint(fp32, data.vocab_size)
formula = activation_formula(fp32, data.vocab_size)
print(f"fp32: weights {format_bytes(fp.parameters)}, gradients {format_bytes(fp.gradients)}, AdamW state "
      f"{format_bytes(fp.optimizer)}, activations {format_bytes(fp.activations)} "
      f"(formula {format_bytes(formula['total'])}); block 1 {fp.by_part['block 1']:,} bytes, formula "
      f"{formula['block']:,.0f}")
print({part: format_bytes(b) for part, b in fp.by_part.items()})

# %% [markdown]
# **Read it.** Activations dwarf everything else: a block keeps about ten tensors the size of its
# input ($B \cdot T \cdot H$ floats each: the input, the normalised input, q, k, the whole q|k|v
# projection, the attention output, …) plus two of the FFN's width, and the loss keeps the
# log-softmax of every masked position over the whole vocabulary. Weights, gradients and optimizer
# state grow with the parameters; activations grow with the micro-batch, the sequence and the depth.
# The methods below go after one kind each.
#
# | kind | bytes | what shrinks it |
# |---|---|---|
# | weights | 4 per weight (2 in bf16) | fewer weights; bf16 weights (not here) |
# | gradients | 4 per trainable weight | fewer trainable weights (section 4) |
# | AdamW state | 8 per trainable weight | 8-bit state ≈ 2, 4-bit ≈ 1 (`lowbit_optimizer`) |
# | activations | ≈ L·(10·B·T·H + 2·B·T·F)·4 | checkpointing (L·B·T·H + one block), accumulation (÷k), bf16 (≈ ÷2) |

# %% [markdown]
# ## 2. Each method's memory, and its price in seconds
# Every setting below is the baseline plus one method. Memory is `estimate_footprint` (the same
# counts, before the first step: it measures the activations of 1 and 2 rows and extends them to the
# micro-batch, exact against a measured step), and the diamonds are the **measured peak** of a whole
# step (`measure_peak`: forward, backward and update, transients included; on a CPU from the
# profiler's allocation records, on a GPU from CUDA's allocator); seconds per step come from short real runs of every
# setting in turn, round after round, as a ratio to the baseline paired by round (lesson 06).
# Accumulation keeps the global batch: 4 micro-batches of a quarter of the rows.

# %%
B = cfg.run.batch_size
SETTINGS = {"checkpointing": [et.technique("checkpointing")],
            "8-bit AdamW": [et.technique("lowbit_optimizer", bits=8)],
            "4-bit AdamW": [et.technique("lowbit_optimizer", bits=4)],
            "accumulate ×4": ({"batch_size": B // 4, "grad_accum": 4}, [])}
FLIP = "bf16" if cfg.run.precision == "fp32" else "fp32"  # the other precision: what bf16 saves (or fp32 costs)
SETTINGS[FLIP] = ({"precision": FLIP}, [])
mem = memory_table(cfg, SETTINGS, data=data, budget=BUDGET, rounds=S["rounds"], steps=S["steps"])
display(mem.round(3))
footprint_figure(mem, BUDGET).show()
memory_scatter(mem, BUDGET).show()

# %% [markdown]
# **Read it.** Checkpointing removes most of the activations for about a third more block FLOPs;
# accumulation divides them by the number of micro-batches and pays with smaller, less efficient
# matrix products; the low-bit optimizers shrink only the optimizer state, which is small for a
# model this size, and on a CPU pay a compiled update per weight tensor; bf16 halves most saved
# activations (on `cpu` the profile already uses it, so the row is fp32: what bf16 saved). Measured
# on `cpu` (2-core Intel Xeon with AMX, bf16, 3 rounds, 2026-12-07), estimate → measured peak:
# the baseline 40.2 → 43.8 MB; checkpointing 30.3 → 24.8 MB (the estimate holds one recomputed block
# on top of the kept inputs) for 1.18× [1.08, 1.28] the seconds per step; accumulation ×4 19.2 → 20.8
# MB for 1.35× [1.14, 1.59]; 8-bit and 4-bit AdamW state 5.4 → 1.4 and 0.8 MB (peaks 39.8 and 39.1)
# for 1.69× [1.62, 1.76] and 1.53× [1.35, 1.74] (a compiled update per weight tensor, dear for a
# model this small); fp32 56.1 → 57.6 MB (its time 1.15× [0.84, 1.56], undecided in 3 rounds; 5
# rounds measured 1.14× [1.08, 1.20] earlier the same day). Which costs the least time per byte saved
# is a fact about a machine: rerun it on yours.

# %% [markdown]
# ## 3. Spend the saving: a bigger model inside the same budget
# Without any method the biggest preset that fits the budget is the profile's own; with
# checkpointing, 4-bit AdamW state and four micro-batches the next one fits too.

# %%
ALL = ({"batch_size": B // 4, "grad_accum": 4}, [et.technique("checkpointing"), et.technique("lowbit_optimizer", bits=4)])
display(preset_table(cfg, BUDGET, ALL, vocab_size=data.vocab_size).round(2))
small = cfg.replace(budget=S["train"], evals=S["evals"], memory_budget=BUDGET)
k, low_bit = S["methods"]
big = small.replace(**S["big"], batch_size=B // k, grad_accum=k)
METHODS = [et.technique("checkpointing")] + ([et.technique("lowbit_optimizer", bits=4)] if low_bit else [])
try:
    et.train(small.replace(**S["big"]), data=data, progress=False)  # the bigger model without the methods
except et.ConfigError as refusal:
    print("refused:", refusal)

# %% [markdown]
# To train a model past the plateau takes hundreds of steps, and `mini` costs about 8× `tiny`'s
# seconds per step on a CPU under these methods (section 2's prices multiply): three seeds of it past
# the plateau would take half an hour. So on `cpu` (and `smoke`) the bigger model is `tiny` with
# **twice the depth** (4 blocks), which does not fit the budget plain (the refusal above) and fits
# with checkpointing alone; on `gpu` it is `base` inside `small`'s budget, with all three methods.
# Both train on the same tokens, over the same seeds, each inside the budget. The table judges the
# final validation loss paired by seed, and the seconds it took.
#
# Why not `mini` for 300 steps on `cpu`? Measured (2026-12-07): its loss at 300 steps depended on
# *when* each seed left the plateau — two micro-batches gave 0.25 nats better than `tiny` [0.17, 0.32],
# four micro-batches (the same math, another order of sums) −0.02 [−0.35, +0.30]. A comparison made
# that close to the plateau says nothing (lesson 00); 800 steps of the deeper model do.

# %%
plot = LivePlot(x="tokens", show_train=False, color_by="group", title="the same budget: small model vs bigger model")
display(plot)
runs = {"small, plain": seed_runs(small, [], S["seeds"], data, name="small, plain", callbacks=[plot.callback()]),
        "bigger, under the budget": seed_runs(big, METHODS, S["seeds"], data, name="bigger, under the budget",
                                              callbacks=[plot.callback()])}
bigger = tables.recipe_table(runs, speedup_by="seconds", resolve_loss=0.05)
bigger

# %% [markdown]
# **Read it.** "Δ val loss" is the bigger model's final loss minus the small one's, per seed, with a
# 95% interval; its verdict says whether the bigger model is better beyond the noise between seeds.
# The speed-up column is the time to the small model's worst final loss: the bigger model learns
# more per token but pays for every token more than once (more blocks, a recomputed forward, and on
# `gpu` smaller micro-batches and a quantized update), so it may well lose on the clock. Memory was
# the constraint, not time; that trade is the lesson.
#
# Measured on `cpu` (2-core Intel Xeon, bf16, 2026-12-07, 800 steps = 1.6 M tokens, seeds 0–2):
# inside 49 MB, `tiny` with 4 blocks and checkpointing (1.07 M parameters, 38.7 MB estimated) against
# `tiny` (0.68 M, 40.2 MB): final val loss 4.55 ± 0.85 against 4.75 ± 0.56, a difference of −0.19
# [−1.09, +0.70] paired by seed: **undecided**. Per seed −0.58, −0.15 and +0.14: both models are
# 1.4–2.0 nats below the unigram line, yet each seed still carries *when* it left the plateau (the
# deeper model's seed 0 left last and never caught up), which two architectures cannot share the way
# the toolkit's warm start (`effitrain.lab.design`, lessons 01, 06, 07) shares one model's. The price is clear: 2.1× the seconds per run (70 s
# against 34 s). Deciding the loss needs many more seeds here (the spread of the differences,
# 0.36, asks for about 200 pairs for ±0.05) or a GPU's longer runs: the claim is not shown on this CPU.

# %% [markdown]
# ## 4. Fine-tuning with a fraction of the weights
# Fine-tuning the small model's encoder (seed 0 above) on the `sotu` era task (which era a paragraph
# of a State of the Union address comes from), four ways: every weight (`full`); LoRA adapters of
# rank 8 on every linear layer of the blocks, through `peft`; only the biases (BitFit); only the last
# block. The new classifier head always trains. The memory columns count one fine-tuning step of 32
# rows; a frozen linear layer keeps no copy of its input for the backward, so the activations shrink
# too. Accuracy is over seeds with the learning rate chosen per seed on a validation split.

# %%
task = sotu_era_task(data)
encoder = runs["small, plain"][0].model
HIGH = S["ft_lr"] or (2e-3, 1e-2)  # adapters and biases start near zero or move little: they take larger rates (LoRA, BitFit)
UPDATES = {"full": {}, "lora": {"rank": 8, "lr": HIGH}, "bias": {"lr": HIGH}, "last": {"last": 1}}
ft = finetune_table(encoder, task, UPDATES, seeds=S["seeds"], steps=S["ft_steps"], lr=S["ft_lr"])
print(f"{task.name}: majority class {ft.attrs['majority']:.3f}; seeds {ft.attrs['seeds']}")
ft.round(3)

# %% [markdown]
# **Read it.** The trainable share and the optimizer state fall by one to two orders of magnitude;
# the verdict column says whether accuracy fell beyond ±2 points. Measured on `cpu` (2026-12-07,
# 3 seeds, 90 steps, seed 0's 800-step encoder): full fine-tuning 0.554 ± 0.097 (majority class
# 0.295); LoRA 0.465, −0.089 [−0.241, +0.063], undecided; biases only 0.366, lower by [−0.373,
# −0.003]; the last block 0.356, −0.198 [−0.402, +0.006], undecided. (With the 300-step encoder of an
# earlier run the same day all three were lower, by 7 to 14 points, decided.) Here the claim fails:
# the cheap updates cost accuracy. The `sotu` tasks are mostly lexical (docs/downstream.md), and what
# they need lives in the word embeddings, which only full fine-tuning changes. On a large model pre-trained on far more text the features
# are good enough that adapters suffice, and this table is what makes fine-tuning fit one GPU.

# %% [markdown]
# ## 5. Try it: the panel with a budget
# Tick `checkpointing` or `lowbit_optimizer`, type changes such as `model.preset=mini` and
# `run.memory_budget=45MB` (or the budget printed above), and press Run: a run that does not fit is refused before its first step,
# with the estimate and its biggest part.

# %%
Panel(cfg.replace(budget=S["train"]), data=data)

# %% [markdown]
# ## Summary
# - A step holds weights, gradients, optimizer state and saved activations; the last usually
#   dominates, and it grows with micro-batch, sequence length and depth.
# - Checkpointing trades activations for a recomputed forward; accumulation trades them for smaller
#   matrix products; 8- and 4-bit AdamW shrink the optimizer state to about a quarter and an eighth;
#   `run.memory_budget` refuses a run that will not fit before it starts.
# - Inside the small model's budget a bigger model trains: `mini`, with five times the weights, fits
#   with all three methods; twice the depth fits with checkpointing alone, at 2.1× the seconds per
#   run on `cpu`, and whether it learned more per token stayed undecided over three seeds here.
# - Fine-tuning a fraction of the weights saves the gradients and optimizer state of the rest, and
#   some activations; on the lexical `sotu` era task it cost accuracy here (biases only: 19 points).
#
# ## Exercises
# 1. Checkpoint every other block (`et.technique("checkpointing", every=2)`): where do memory and
#    seconds per step land between none and all? With $L$ blocks in $\sqrt{L}$ segments, the kept
#    inputs and one segment's insides balance: derive the $O(\sqrt{L})$ memory of Chen et al.
# 2. Set `model.attention="math"` and rerun section 1: which new term appears in the activations,
#    and how does it grow with the sequence length (tie it to lesson 06)?
# 3. Find the smallest budget under which `mini` still trains: add `accumulate ×4` and 8-bit state;
#    what does each step cost then?
# 4. Raise LoRA's rank to 32 and 64 in section 4: how do the trainable share and the accuracy move?
# 5. With `update="last"`, train the last two blocks (`{"last": 2}`): is the accuracy back to full
#    fine-tuning's, and at what memory?
# 6. Train `mini` under the budget (`S["big"] = {"preset": "mini"}`, `S["methods"] = (4, True)`) for
#    1,000 steps: how much lower does it go than the deeper `tiny`, and what does each step cost?
