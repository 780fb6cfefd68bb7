# ---
# jupyter:
#   jupytext:
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
# # 03 · Curriculum learning: easy examples first
#
# People learn arithmetic before calculus. Does a BERT model, too, learn faster when it sees easy
# examples first? This lesson builds the competence-based curriculum of Platanios et al. (2019)
# and a close cousin, sequence-length warmup, and measures both against the baseline.
#
# ## What you will learn
# - two ways to score how hard a training example is, by its **length** or by the **rarity** of its
#   words, and how an empirical CDF turns any score into a number in [0, 1];
# - the **competence** schedules $c_{linear}$ and $c_{sqrt}$, and how a sampler admits harder
#   examples as training goes on;
# - **sequence-length warmup**: short prefixes first, with FLOPs that follow the length;
# - to rebuild the lecture's curriculum table from your own runs: time to the baseline's quality as
#   a ratio to the baseline, with 95% intervals over seeds, by training seconds and by FLOPs.
#
# **Prerequisites**: lesson 00 (time to target, seeds, `compare`, the panel). The idea of a
# probability distribution and its cumulative distribution function (CDF).
#
# **Expected run time** (the whole notebook; every run has the same number of optimizer steps, set
# by the comparison design in the first code cell). `cpu` runs go well below the unigram line
# (lesson 00's plateau); `smoke` runs only check the code.
#
# | profile | model | steps per run | runs | whole notebook |
# |---|---|---|---|---|
# | `smoke` (CI) | tiny, 128 tokens, batch 16 | 40 | 4 × 2 + 1 | 37 s measured (nbmake, fresh cache, quiet 2-core Intel Xeon, 2026-12-07) |
# | `cpu` (laptop) | tiny, 128 tokens, batch 16 | 1,000 (the last 500 after a shared warm start) | 4 × 3 + 1 | 8.3 min from a fully cold cache, under 30 s warm (quiet 2-core Intel Xeon, 2026-12-07) |
# | `gpu` (one GPU) | base, 128 tokens, batch 128 | 2,000 | 6 × 3 + 1 | not yet measured |
#
# `smoke` and `cpu` train the $c_{sqrt}$ curricula only (section 4 says how to add $c_{linear}$).
# Unpacked paragraphs are tokenized on first use and cached on disk.

# %% [markdown]
# ## The claim
# > Platanios et al. trained Transformers for machine translation with a curriculum and reached the
# > plain model's BLEU in **31–58% of its training time** (the lecture's table: rarity with
# > $c_{sqrt}$ was best, 0.31 on En→Vi), and ended at a final BLEU close to or above the plain
# > model's (the time ratios are relative to the paper's stronger baseline, Plain* in the table).
#
# Translation is not masked-language modelling, and State of the Union paragraphs are not
# WMT sentences. **Does a curriculum make MLM pre-training reach the baseline's quality sooner
# here?** We measure it with the stick of lesson 00: the same step budget for every variant, the
# time (and FLOPs) to reach the baseline's final validation loss, over seeds, as a ratio to the baseline.

# %% [markdown]
# ## Setup
# A curriculum by length needs examples of different lengths, so this lesson does **not** pack
# the corpus into full blocks: each example is one paragraph, `[CLS] words [SEP]` and padding, cut
# at the sequence length. The baseline uses the very same data, so the comparison is fair. The
# trainer trims every batch to its longest row (rounded up to 8), so a batch of short paragraphs
# is cheaper.

# %%
import dataclasses
import effitrain as et
import numpy as np
from IPython.display import display
from effitrain.lab import LivePlot, Panel, common_target, compare, styled, figures, tables
from effitrain.lab.design import design, seed_runs
from effitrain.techniques import curriculum as cu

PROFILE, SIZE = et.default_profile(), et.profile_size()  # EFFITRAIN_PROFILE, else gpu with CUDA, else cpu
# paragraphs, not packed blocks; the profiles' 64 tokens would cut 4 paragraphs in 5, so every profile uses 128,
# and smoke and cpu take batches of 16 paragraphs: 2,048 token positions per step, as the profile's 32 × 64
SHAPE = {"smoke": {"batch_size": 16, "data.seq_len": 128}, "cpu": {"batch_size": 16, "data.seq_len": 128},
        "gpu": {}}[SIZE]
UNPACKED = {"data.pack": False, **SHAPE}
# the toolkit's comparison design (section 4 says why); cpu trains 3 seeds per variant to stay within ten minutes
D = dataclasses.replace(design(PROFILE), **({"seeds": (0, 1, 2)} if SIZE == "cpu" else {}))

# %%
data = et.prepare_data(D.config(**UNPACKED).data)
cfg = D.config(**UNPACKED)  # from scratch: what the schedules below are drawn for
lengths = data.train.features["length"].float()
print(f"profile {PROFILE}: {cfg.model.preset} BERT, {cfg.budget} per run, {cfg.run.batch_size} paragraphs per step, "
      f"{len(D.seeds)} seeds; {len(data.train):,} paragraphs, mean {lengths.mean():.0f} tokens, "
      f"{(lengths == cfg.data.seq_len).float().mean():.0%} cut at {cfg.data.seq_len}")

# %% [markdown]
# ## 1. How hard is an example?
# Platanios et al. use two scores for a sentence $s = (w_1 \dots w_n)$:
#
# - **length**: $d_{length}(s) = n$, here the real tokens of the paragraph;
# - **rarity**: $d_{rarity}(s) = -\sum_{k=1}^{n} \log \hat p(w_k)$, with $\hat p$ the unigram
#   frequency of each token in the training corpus. A paragraph of common words scores low. It is a
#   *sum*, so long paragraphs also score high: the two scores are related.
#
# Scores have different units, so each is mapped through its **empirical CDF**,
# $\mathrm{CDF}(s) = |\{s' : d(s') \le d(s)\}| / N$: the share of examples at most as hard as $s$.
# It lies in (0, 1]. The easiest and hardest paragraphs by rarity and by length (score in brackets):

# %%
for kind in ("rarity", "length"):
    for which, texts in cu.extremes(data, kind).items():
        print(f"{kind:>6} {which}:", *texts, sep="\n    ")
raw = {kind: cu.difficulty(data.train, kind, data.unigram_counts) for kind in cu.DIFFICULTIES}
cdf = {kind: cu.difficulty_cdf(score) for kind, score in raw.items()}
rank_corr = float(np.corrcoef(cdf["length"], cdf["rarity"])[0, 1])
print(f"rank correlation of the two difficulties: {rank_corr:.2f}")

# %% [markdown]
# The hardest paragraphs by rarity are the statistical tables some presidents read into their
# addresses: numbers and abbreviations are rare tokens.

# %% [markdown]
# ## 2. Competence: what the model may see, and when
# At the fraction $t \in [0, 1]$ of the training budget the model has **competence** $c(t)$, and
# each batch is drawn uniformly from the examples with $\mathrm{CDF} \le c(t)$. With $c_0$ the share
# admitted at the start and $T$ the fraction of the budget after which everything is admitted:
#
# $$c_{linear}(t) = \min\!\Big(1,\; t\,\frac{1 - c_0}{T} + c_0\Big) \qquad
#   c_{sqrt}(t) = \min\!\Big(1,\; \sqrt{t\,\frac{1 - c_0^2}{T} + c_0^2}\Big)$$
#
# Why a square root: with $c_{linear}$ the few examples admitted first are drawn again and again
# while the pool is small. If instead the *area* under $c^2$ grows linearly, every newly admitted
# example gets about the same number of draws; that gives $c_{sqrt}$, which admits faster early.
# $c_{sqrt} \ge c_{linear}$ always: the squares differ by $(t/T)(1 - t/T)(1 - c_0)^2 \ge 0$.
#
# The paper's $T$ is a number of steps; here it is a fraction of the budget, `duration`, so the
# schedule ends where the budget says whatever its unit. The two histograms show the raw scores; the
# right panel, the share of paragraphs each curriculum admits over the budget ($c_0 = 0.01$, $T = 0.5$).

# %%
figures.plot_difficulty(data, c0=0.01, duration=0.5)

# %% [markdown]
# Look at the length curves. Every paragraph longer than the sequence length is cut to it, so they
# all share the top length and the same CDF value, 1.0. A length curriculum can therefore admit only
# the uncut paragraphs until competence reaches 1, then everything at once. Rarity has no such ties:
# its admitted share follows the competence curve itself.

# %% [markdown]
# ## 3. Sequence-length warmup
# A different kind of "easy first": every example, but only its first $L(t)$ tokens, with
#
# $$L(t) = 8\Big\lfloor \frac{L_0 + (L_{full} - L_0)\, t / T_w}{8} \Big\rfloor \text{ for } t < T_w,
#   \qquad L(t) = L_{full} \text{ afterwards.}$$
#
# A step costs about $6 N B L$ FLOPs for the weights plus $14\,\ell\, B L^2 H$ for attention
# (lesson 00), so short early steps are cheap. Li et al. (2022) found that early long sequences cause
# the loss spikes that make GPT training unstable; warming the length up let them use larger batches
# and learning rates. `[CLS]` stays first; a row longer than $L$ loses its end, `[SEP]` included.
# The trainer counts FLOPs per batch shape, so each short step is charged what it costs. (Section 4
# starts every run from a warm start; there the same schedule is laid over the steps after it.)

# %%
steps = int(cfg.budget.amount)
schedule = [cu.seqlen_schedule(s / steps, 8, cfg.data.seq_len, 0.3) for s in range(steps)]
starts = {length: step for step, length in reversed(list(enumerate(schedule)))}  # the first step of each length
print(f"sequence length by step, start_len 8, warmup over 30% of {steps} steps (length from step):")
print(", ".join(f"{length} from {step}" for length, step in sorted(starts.items())))

# %% [markdown]
# ## 4. The baseline, then every variant, live
# **The design.** From scratch, the step at which a seed leaves the unigram plateau varies by about a
# third between seeds, and anything that changes the early batches moves it; three seeds from scratch
# gave every curriculum an interval holding 1.00 with room to spare (length 1.09 [0.63, 1.88] by
# FLOPs, docs/power.md). So every run here, baseline or curriculum, starts from **one baseline state
# past the plateau**: this data's baseline seed 0 at its first evaluation 1 nat below the unigram line
# (`run.warm_start`, trained once and cached). From there each curriculum runs its *whole* schedule
# over the remaining steps, as it would from scratch (the competence and the length warm-up read the
# share of the budget after the warm start); the seeds are paired and the target lies 1.5 nats below
# the unigram line. This asks "does easy-first order make the main phase of training faster?"; what
# a curriculum does to the plateau itself is a from-scratch question (exercise 6).
#
# First the baseline seeds. The plot shows validation loss against **FLOPs** (use the toggle for
# steps or seconds); seeds of one variant share a colour.

# %%
warm = D.warm(data, **UNPACKED)
target = D.target(data)
print(f"every run starts from seed {D.warm_seed}'s baseline state at step {warm.run.warm_start} of {warm.budget}; "
      f"target {target:.3f} ({D.gap:g} nats below the unigram line)")
plot = LivePlot(x="flops", show_train=False, color_by="group", title="curriculum variants: validation loss")
display(plot)
runs = seed_runs(warm, [], D.seeds, data, name="baseline", callbacks=[plot.callback()])

# %% [markdown]
# Now the curricula of the lecture's table, {length, rarity} × {$c_{linear}$, $c_{sqrt}$}, with the
# paper's $c_0 = 0.01$ and $T = 0.5$ (of the steps after the warm start), and sequence-length warmup.
# Same steps, same seeds. The curves join the plot above while they train. To stay within ten
# minutes, `smoke` and `cpu` train only $c_{sqrt}$ (the paper's better schedule); add `"linear"` to
# `COMPETENCES` for all four. Every run goes through the run cache: run the cell again and they load.

# %%
COMPETENCES = ("linear", "sqrt") if SIZE == "gpu" else ("sqrt",)
VARIANTS = {f"{d} · c_{c}": (lambda d=d, c=c: cu.Curriculum(difficulty=d, competence=c, c0=0.01, duration=0.5))
            for d in ("length", "rarity") for c in COMPETENCES}
VARIANTS["seqlen warmup"] = lambda: cu.SeqLenWarmup(start_len=8, warmup_fraction=0.3)
for label, make in VARIANTS.items():
    runs += seed_runs(warm, [make()], D.seeds, data, name=label, callbacks=[plot.callback()])

# %% [markdown]
# ## 5. The lecture's table, measured here
# Each column is a variant (its seeds); **time** and **FLOPs** are the mean training seconds and
# measured FLOPs to reach the design's target, counted from the warm start, divided by the
# baseline's (so the baseline is 1.00 and smaller is faster), with the 95% interval of that ratio
# over the paired seeds. "not reached" means at least one seed never got there within the budget.
# The verdict rows put the same ratio the other way up, as a speed-up (baseline ÷ variant): faster,
# slower, or no effect beyond a stated bound.
# **Final val loss** is the quality at the end of the same number of steps (lower is better; the
# paper reports BLEU, higher is better).

# %%
table = tables.curriculum_table(runs, baseline="baseline", target_val_loss=target, resolve=D.resolve)
plot.set_target(target)  # the dashed line in the plot above
print("\n".join(table.attrs["notes"]))
tables.format_curriculum_table(table)

# %% [markdown]
# The same runs in lesson 00's format, with speed-ups (baseline ÷ variant) by FLOPs; switch
# `speedup_by` to `"seconds"` for wall time:

# %%
styled(compare(runs, baseline="baseline", target_val_loss=target, speedup_by="flops", resolve=D.resolve))

# %% [markdown]
# **Reading the table.** Compare the time ratios with the lecture's 0.31–0.58. Keep three things
# apart:
#
# 1. *Cheaper steps.* A curriculum by length and sequence-length warmup make early batches short,
#    so the same number of steps costs fewer FLOPs and seconds. That alone moves the time and FLOPs
#    columns below 1 **if** the loss per step does not suffer.
# 2. *Better steps.* Whether easy examples first make each update more useful shows in the steps
#    to target and in the final val loss at equal steps; the validation set has every kind of
#    paragraph, easy and hard, so a model that has seen only easy ones for half its budget may be
#    behind at the end.
# 3. *Noise.* The verdict says whether the interval decides: a ratio whose interval holds 1.00 and
#    is wider than ×/÷1.15 is not a measured difference. Seconds on a shared CPU are noisier than FLOPs.
#
# In the paper the models trained for tens of thousands of steps and the curriculum was a small
# part of that; here the curriculum acts over a few hundred steps after the warm start, and $T$ is
# half of them.

# %% [markdown]
# **What this measured** on the `cpu` profile (quiet 2-core Intel Xeon, bf16, 3 paired seeds from
# the shared warm start at step 500, 2026-12-07; the tables above are yours). Every variant reached
# the design's target (4.781, 1.5 nats below the unigram line) in every seed, and none beat the
# baseline. By FLOPs, speed-up = baseline ÷ variant: length · $c_{sqrt}$ 0.77× [0.60, 1.00] (slower),
# rarity · $c_{sqrt}$ 0.99× [0.81, 1.20] and sequence-length warmup 1.08× [0.93, 1.26] (both
# undecided at three seeds; about four pairs would resolve ×/÷1.15). At the later target below
# (4.672) the intervals narrow: length slower by [0.65, 0.81], sequence-length warmup slower by
# [0.86, 1.00], rarity no effect beyond ±16%. By seconds all three were slower (length
# [0.40, 0.77], rarity [0.61, 0.79], warmup [0.66, 0.97]): short and filtered batches run at fewer
# tokens per second on this CPU (28k against the baseline's 32k), so cheaper steps did not mean
# faster ones. After the same 1,000 steps the baseline ended lowest, 4.570 ± 0.014, against 4.608
# (rarity), 4.641 (warmup) and 4.666 (length). Before the warm-start design, three seeds from
# scratch gave intervals like 1.09 [0.63, 1.88] that decided nothing (docs/power.md). The lecture's
# 0.31–0.58 comes from translation models trained for tens of thousands of steps; on this task and
# budget the claim does not hold.
#
# **A later target.** `common_target` is the highest final val loss of *all* runs, a target every
# run reaches by the end of the budget, so every cell gets a ratio with its interval even where a
# variant missed the design's target: after the schedule has admitted everything, does the variant
# catch up, or stay behind?

# %%
late = common_target(runs)
print(f"later target: val loss {late:.3f} (the design's: {target:.3f})")
tables.format_curriculum_table(tables.curriculum_table(runs, baseline="baseline", target_val_loss=late,
                                                       resolve=D.resolve))

# %% [markdown]
# ## 6. Try your own curriculum in the panel
# The panel holds all runs above. Below, code ticks `curriculum` and chooses rarity with $c_{sqrt}$,
# a larger start $c_0 = 0.1$ and a shorter $T = 0.25$, then presses Run, with one seed to keep the
# lesson short (a `cpu` run from the warm start takes about 30 s; the design's seeds give an interval). Change the
# widgets and press Run again to try your own; the table under the panel gains a row each time, and
# a setting run before loads from the run cache.

# %%
panel = Panel(warm, plot=LivePlot(x="flops", show_train=False, color_by="group", title="panel: curriculum"))
panel.seeds.value = 1
panel.add_runs(runs)
panel

# %%
panel.technique_boxes["curriculum"].value = True  # the same as ticking the box
for field, value in {"difficulty": "rarity", "competence": "sqrt", "c0": 0.1, "duration": 0.25}.items():
    panel.param_widgets["curriculum"][field].value = value
panel_runs = panel.run_now()  # the same as pressing Run
panel.wait()
print(tables.curriculum_text(tables.curriculum_table(panel.runs, baseline="baseline", target_val_loss=target)))

# %% [markdown]
# ## Summary
# - A curriculum needs a **difficulty** per example (length, or rarity: $-\sum \log \hat p(w)$)
#   mapped through its empirical CDF to [0, 1], and a **competence** $c(t)$ that says which share of
#   the data may be sampled at each point of the budget; $c_{sqrt}$ admits faster than $c_{linear}$.
# - Ties matter: paragraphs cut at the sequence length all look equally hard by length, so a
#   length curriculum admits them all at once when competence reaches 1.
# - Sequence-length warmup trains on prefixes; its early steps cost a fraction of a full step and
#   the trainer's FLOP counter charges exactly that.
# - The lecture's time column is *time to the baseline's quality ÷ the baseline's time*. Measured
#   here with seeds and intervals, it separates cheaper steps from better steps, and reports
#   "not reached" or an interval across 1.00 when the claim does not hold on this task and budget.
#
# ## Exercises
# 1. Which variant reached the baseline's target soonest by FLOPs, and does its interval exclude
#    1.00? Is its final val loss better, the same or worse than the baseline's?
# 2. In the panel, set `duration` to 0.1 and then 1.0 with rarity and $c_{sqrt}$. How does $T$
#    move the time to target and the final loss? Explain with the right panel of section 2
#    (`figures.plot_difficulty(data, c0=..., duration=...)` redraws it).
# 3. The rarity score is a sum, so it grows with length. Write the mean instead,
#    $-\frac1n\sum \log \hat p(w_k)$ (use `cu.token_surprisal(data.unigram_counts)`), and compare its
#    rank correlation with length to the sum's.
# 4. The validation set mixes easy and hard paragraphs. Split it by rarity and compare the
#    baseline and a rarity curriculum on the easy and the hard half: where does the curriculum
#    lose or gain?
# 5. Sequence-length warmup with `start_len` 8 changes the cost of the first 30% of the steps.
#    Predict from $6NBL + 14\ell BL^2H$ the FLOPs of the whole run relative to the baseline, then
#    check it against the table.
# 6. Train the baseline and the best curriculum with twice the steps. Does the speed-up grow,
#    shrink or vanish as the budget grows?
