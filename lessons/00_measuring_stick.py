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
# # 00 · The measuring stick
#
# Every later lesson claims that some technique makes BERT training faster. This lesson builds the
# stick those claims are measured with, and tries it on one real speed-up.
#
# ## What you will learn
# - to train the baseline BERT and watch its loss live, against optimizer steps, training seconds or FLOPs;
# - how effitrain counts FLOPs (measured by PyTorch's FLOP counter, checked against 6·N·tokens plus
#   attention) and what MFU, the *model FLOPs utilization*, says about a run;
# - **time to target**: why a speed-up only means something at equal quality;
# - why one run is not a measurement: seeds, bands, and a 95% interval for the speed-up;
# - to measure a speed-up yourself with the control panel: bf16 autocast.
#
# **Prerequisites**: Python, and what a PyTorch training step does (forward, loss, backward,
# optimizer step). Masked-language-model (MLM) pre-training in one sentence: hide 15% of the tokens
# and train the model to predict them. No GPU needed.
#
# **Expected run time** (the whole notebook; every run trains for the budget set in the first code cell).
# The profile comes from `EFFITRAIN_PROFILE`, else `gpu` when CUDA is available, else `cpu`.
#
# | profile | model | budget per run | runs | whole notebook |
# |---|---|---|---|---|
# | `smoke` (CI) | tiny, 0.7 M parameters | 3 s | 6 | about 30 s, measured (nbmake, 2-core CPU, 2026-11) |
# | `cpu` (laptop) | mini, 5.5 M | 60 s | 6 | about 7 min: 6 × 60 s of training plus evaluation and start-up (estimate) |
# | `gpu` (one GPU) | base, 99 M | 120 s | 6 | about 14 min: 6 × 120 s plus evaluation and start-up (estimate) |
#
# The first run on a new profile also trains the tokenizer and packs the corpus; that is cached on disk.

# %% [markdown]
# ## The claim
# > A speed-up only means something **at equal quality, measured over seeds**: the time a run needs to
# > reach a target validation loss, as a mean with an interval over at least three seeds.
# > With that stick, **bf16 autocast changes training tokens/s by a measurable factor** on hardware
# > with bfloat16 matrix units (recent GPUs; CPUs with AVX-512-BF16 or AMX), and because the loss
# > per step barely changes, it reaches the baseline's loss sooner by about that factor.
#
# You will check the second half on *your* machine at the end of the lesson. On a CPU without
# bfloat16 units autocast can be slower; the table will say so.

# %% [markdown]
# ## Setup
# The data is the offline default corpus: State of the Union addresses 1790–2026, split by speech into
# training and validation text. The one place that sets how long runs train is `BUDGET`.

# %%
import effitrain as et
from IPython.display import display
from effitrain.lab import LivePlot, Panel, aggregate_curves, compare, styled
from effitrain.lab.reference import add_reference, reference_note, reference_sets
from effitrain.model import matmul_parameters
from effitrain.train import flops_breakdown

PROFILE, SIZE = et.default_profile(), et.profile_size()  # EFFITRAIN_PROFILE, else gpu with CUDA, else cpu
BUDGET = {"smoke": "3s", "cpu": "60s", "gpu": "120s"}[SIZE]  # training seconds per run
SEEDS = 3
cfg = et.profile_config(PROFILE, budget=BUDGET, precision="fp32")  # the baseline: full precision
data = et.prepare_data(cfg.data)  # tokenizer + packed blocks, cached on disk
print(f"profile {PROFILE}: {cfg.model.preset} BERT, {cfg.tokens_per_step:,} tokens per step, "
      f"budget {cfg.budget} per run, device {cfg.run.resolved_device()}")
print(f"{len(data.train):,} training blocks of {cfg.data.seq_len} tokens, vocabulary {data.vocab_size:,}")

# %% [markdown]
# ## 1. The baseline, live
# `LivePlot` draws each run while it trains: the thin faint line is the training loss of every step,
# the thick line with markers is the validation loss (fixed masks on held-out speeches), evaluated
# before training and then evenly over the budget. Evaluation time is **not** counted as training time.
#
# Use the toggle above the plot to put **seconds** or **FLOPs** on the x axis instead of steps.
# All three are recorded for every logged step; which one you plot decides what "faster" means.

# %%
plot = LivePlot(x="step", title="baseline: MLM loss")
display(plot)
baseline = et.train(cfg, data=data, callbacks=[plot.callback()], progress=False)
s = baseline.summary()  # a dict: steps, tokens, seconds, FLOPs, losses, …
print(baseline.summary_line())
print(f"unigram baseline (predict by word frequency alone): {baseline.extra['unigram_val_loss']:.3f}")

# %% [markdown]
# The val loss starts near ln(vocabulary), the loss of a uniform guess. The *unigram* line is what
# a model gets by predicting every masked token from word frequencies alone: below it, the model uses
# context. A 3-second `smoke` run gets only about as far as that line; give it 300 steps and it goes below.
# The line is drawn dashed in every plot: a curve falls to it, flattens there for a while (the *plateau*:
# the model has learned which words are common, not yet how the words around a gap predict it) and then
# drops below it as attention starts to use the context; how far below it a run ends is its *context
# gain* (`s["context_gain"]`, in nats), and a comparison whose target lies above the line is made on the
# plateau and says nothing about a technique, so `compare` warns about it.

# %% [markdown]
# ## 2. Counting FLOPs, and MFU
# A matmul of a token's vector with an $n_{in} \times n_{out}$ weight costs $2\,n_{in} n_{out}$
# FLOPs (a multiply and an add). The backward pass needs two such products (gradient of the input and
# of the weight), so forward + backward costs **6 FLOPs per weight per token**: with $N$ weights in
# the matmuls of the blocks and $D$ tokens, $C_{blocks} = 6ND$.
#
# Attention adds work that no weight accounts for: the scores $QK^\top$ and the mixing $AV$ cost
# $2TH$ FLOPs each per token and layer ($T$ sequence length, $H$ hidden size), so $4TH$ forward and
# $8TH$ backward, plus $2TH$ when the backward recomputes the scores (flash-style kernels do):
# $C_{attn} = 14\,L\,T\,H\,D$ for $L$ layers. The MLM head only runs on the $M$ masked positions:
# $C_{head} = 6M(H^2 + HV)$ for a vocabulary of $V$.
#
# The trainer counts what actually runs with `torch.utils.flop_counter` (once per batch shape) and
# also keeps the analytic sum term by term; `flops_breakdown(run)` lays them side by side. **MFU** (model FLOPs utilization) is achieved FLOP/s ÷ the peak FLOP/s
# of the device, where the peak is measured here with a large matmul rather than read off a spec sheet.

# %%
display(flops_breakdown(baseline).style.format({"FLOPs": "{:.4g}", "per step": "{:.4g}", "share of analytic": "{:.1%}"}))
device = cfg.run.resolved_device().type
peak = et.measure_peak_flops(device, cfg.run.precision)
achieved = s["flops_measured"] / s["seconds"]
print(f"N = {matmul_parameters(cfg.model):,} weights in the blocks' matmuls")
print(f"achieved {achieved / 1e9:.1f} GFLOP/s; matmul peak of this {device} in {cfg.run.precision}: {peak / 1e9:.1f} GFLOP/s")
print(f"MFU = {achieved / peak:.0%}")

# %% [markdown]
# What keeps MFU below 100%: matmuls too small to keep the hardware busy, and work that counts no
# model FLOPs (layer norms, softmax, masking, the optimizer step). On a GPU a small model stays far
# from the peak. Treat the CPU number as a yardstick: one matmul size does not reach the true peak on
# every CPU (an MFU above 100% means the peak was measured too low), and a busy machine lowers both.

# %% [markdown]
# ## 3. Time to target
# Tokens/s alone cannot tell you whether a change trains *faster*: a change that makes each step
# cheaper but each step less useful (lower precision that hurts, data thrown away, a smaller model)
# can win on tokens/s and lose on what you wanted, a good model. So fix the quality and measure the cost:
#
# **time to target** = the first training time at which the validation loss reaches a target
# $\ell^*$, interpolated linearly between evaluations (and the same for FLOPs, tokens, steps).
# A run that never reaches $\ell^*$ says "not reached", never a made-up number. The **speed-up** of a
# change is $t_{baseline}(\ell^*) / t_{change}(\ell^*)$: both sides at equal quality.

# %%
target = s["val_loss_last"]  # for now: where this baseline ended
hit = et.time_to_target(baseline.history, val_loss=target)
plot.set_target(target)  # a dashed line and a ★ where the run reaches it, in the plot above
print(f"val loss {target:.3f} reached at step {hit['step']:.0f}, {hit['seconds']:.2f} s, {hit['flops']:.3g} FLOPs")
print("a target 1 nat lower:", et.time_to_target(baseline.history, val_loss=target - 1.0))

# %% [markdown]
# ## 4. One run is not a measurement
# The seed sets the initial weights, the order of the data and which tokens are masked. Train the
# same configuration with other seeds and the curve moves; a speed-up smaller than that wobble is not
# a speed-up. Here are `SEEDS` seeds with their mean and min–max band (`aggregate_curves`).

# %%
seed_plot = LivePlot(x="step", show_train=False, title="baseline: validation loss over seeds")
display(seed_plot)
seed_plot.add_run(baseline)
seed_runs = [baseline] + [et.train(cfg.replace(seed=seed), data=data, callbacks=[seed_plot.callback()], progress=False)
                          for seed in range(1, SEEDS)]
seed_plot.add_band(seed_runs, label="baseline")
aggregate_curves(seed_runs, x="step").round(3).tail()

# %% [markdown]
# With $n$ seeds of time to target $t_1 \dots t_n$ (mean $\bar t$, standard deviation $s$), the 95%
# interval is $\bar t \pm t_{0.975,\,n-1}\, s/\sqrt n$. Student's $t$ is large for few seeds
# ($t_{0.975,2} = 4.30$ for three), so three seeds give a wide but honest interval, and one seed gives
# none. `compare` puts this into a table, one row per group of seeds. With only the baseline,
# its target is the **highest** final val loss of its seeds, which every seed reaches by definition.

# %%
styled(compare(seed_runs))

# %% [markdown]
# **The same measurement at the larger scale.** A reference set holds runs measured on another
# machine, here the `gpu` profile's baseline (a base-size BERT, three seeds) trained on a GPU by
# `scripts/gpu_check.py`: histories only, no weights, each labelled with its device and date. Compare
# its band with yours by steps (seconds are a fact about one machine). Where no set is stored yet,
# the line below says so; nothing is made up to fill the plot.

# %%
gpu_sets = reference_sets("gpu", "gpu baseline")
print(reference_note("gpu", "gpu baseline"))
if gpu_sets:
    ref_plot = LivePlot(x="step", show_train=False, title="the gpu profile's baseline, measured on a GPU")
    add_reference(ref_plot, gpu_sets)
    display(ref_plot)

# %% [markdown]
# ## 5. Measure a speed-up: bf16 autocast
# `torch.autocast(dtype=torch.bfloat16)` runs the matmuls in bfloat16 (fp32's 8 exponent bits, but 7
# mantissa bits instead of 23) while the weights, the optimizer and the loss stay in fp32. The model and the data are the
# same, so the loss per step should barely change, and each step is cheaper where the hardware has
# bfloat16 units.
#
# The panel below holds the fp32 seeds from above. **Choose `bf16` as precision and press Run**: it trains
# one run per seed in the background; the curves join live (x = training seconds) and the table
# gains a row. On a GPU you can tick `torch.compile` as well. The next cell does the same from code,
# so the notebook also runs top to bottom.

# %%
panel = Panel(cfg, plot=LivePlot(x="seconds", title="fp32 vs bf16: MLM loss"), data=data)
panel.seeds.value = SEEDS
panel.add_runs(seed_runs)  # the fp32 seeds are the baseline group
panel

# %%
panel.precision.value = "bf16"  # the same as choosing bf16 in the panel
bf16_runs = panel.run_now()  # the same as pressing Run (in JupyterLab it trains in the background)

# %%
panel.wait()  # in JupyterLab: until the background runs are done
table = compare(panel.runs)
styled(table)

# %% [markdown]
# **Reading the table.** One row per group; a group is the runs that differ only in their seed.
# *time to target* is the mean over seeds ± the 95% interval. *speedup* is the baseline's time ÷ the
# group's, as a ratio of geometric means, with a 95% interval built on the log scale (where 2× faster
# and 2× slower are equally far from 1), so it is asymmetric and stays positive. Here the bf16 group
# holds the same seeds as the fp32 group, and the same seed means the same initial weights and data
# order, so `compare` **pairs** them: the interval is Student's $t$ over the per-seed log ratios
# $\log(t_{b,i}/t_{g,i})$ (`scipy.stats.ttest_rel`), and what the two runs of a seed share cancels.
# Groups with different seeds get Welch's interval instead. The *verdict* column words it: *faster by
# [lo, hi]*, *slower by [lo, hi]*, *no effect beyond ±X% here*, or *undecided* when the interval
# holds 1 and is wider than ×/÷1.15 (then it names the seeds that would resolve it; docs/power.md).
# **If the interval excludes 1, the speed-up is measurable with this many seeds**; if it straddles 1,
# it is not, whatever the mean says. Compare the *tokens/s* column too: at equal quality the
# speed-up to target should be near the tokens/s ratio, because bf16 changes the cost of a step,
# not what a step learns (evaluations are few, so interpolating between them adds noise). Switch
# the panel's x axis to *step*: the curves lie on top of each other.
#
# Timings are only as clean as the machine: on a computer with few cores, the browser drawing live
# curves and any other busy program take CPU from training. The seeds and the interval show how much
# that noise matters; close other work before you trust a number.

# %% [markdown]
# ## Summary
# - A run records steps, tokens, training seconds (evaluation excluded) and FLOPs; plot the loss
#   against the one that matches your question.
# - FLOPs are measured and cross-checked: $6ND$ for the weights, $14LTHD$ for attention, and the
#   sparse MLM head. MFU compares achieved FLOP/s with this device's measured matmul peak.
# - A speed-up is a ratio of **times to the same target loss**, never of tokens/s or of final losses
#   alone, and it is reported over seeds with an interval; "not reached" is a result, not a gap to fill.
# - `compare` and the `Panel` do this bookkeeping; every later lesson uses them.
#
# ## Exercises
# 1. In the panel, switch x between *step*, *seconds* and *FLOPs*. On which axis does bf16 pull
#    ahead, and why do the curves coincide on the other two?
# 2. Type a target into *target val loss* that the baseline reaches at about half its budget, and
#    press Run again with one seed. How do the time to target and the speed-up change?
# 3. Set *seeds* to 1 and press Run. Why does the new row have no interval? How many seeds would
#    you need to halve the width of an interval (the answer is not 2)?
# 4. Compute the MFU of a bf16 run against `et.measure_peak_flops(device, "bf16")`. Does bf16 use
#    the hardware better, or does the same work just finish sooner?
# 5. Set `BUDGET` to a step budget such as `"100steps"` and run the notebook again. Which column of the
#    table changes meaning, and does the bf16 speed-up survive?
# 6. Double the sequence length (`cfg.replace(seq_len=2 * cfg.data.seq_len)`). Predict the new
#    share of 6·N·D in the FLOPs of a step from the formula, then measure it.
