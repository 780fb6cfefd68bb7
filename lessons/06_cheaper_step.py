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
# # 06 · A cheaper step: kernels, precision, compilation, and where the time goes
#
# Every technique so far changed *what* a step computes. This lesson changes only *how*: a fused
# attention kernel instead of the textbook formula, bf16 instead of fp32, a fused optimizer, a
# compiled graph. The math stays the same, so the loss per step must stay the same too, and any
# saving shows up in seconds alone. That makes the measurement simple and the claims easy to check.
#
# ## What you will learn
# - to time a training step honestly: alternating runs, several rounds, a ratio with an interval,
#   compile time kept apart (and its break-even point);
# - to check that a change is "free": the loss per step against the noise between two seeds;
# - why a low-precision running sum stops growing, and how chunk-based accumulation fixes it;
# - to read a profile of one step: attention, FFN, embeddings and head, optimizer.
#
# **Prerequisites**: lesson 00 (time to target, seeds and intervals). What a floating-point number's
# mantissa is.
#
# **Expected run time** (the whole notebook). The profile comes from `EFFITRAIN_PROFILE`, else `gpu`
# when CUDA is available, else `cpu`.
#
# | profile | model | speed table | parity runs | time to target | whole notebook |
# |---|---|---|---|---|---|
# | `smoke` (CI) | tiny | 2 rounds × 2 steps, no compile | 10 steps | the design's: 2 × 2 seeds × 40 steps | 44 s measured under nbmake (2-core CPU, 2026-12-07) |
# | `cpu` (laptop) | tiny | 8 rounds × 10 steps | 100 steps | the design's: 2 × 5 seeds from step 575 of 1,000 | 7.5 min measured with every cache cold (quiet 2-core Intel Xeon, 2026-12-07) |
# | `gpu` (one GPU) | the profile's | 4 rounds × 20 steps | 300 steps | the design's: 2 × 3 seeds of 2,000 steps | not measured yet |

# %% [markdown]
# ## The claim
# > On this hardware each of these settings changes the **seconds per step** and not the **loss per
# > step**; together they bring the baseline to its target loss sooner by the factor their step
# > times predict. Which of them help depends on the hardware: fused attention and compilation are
# > made for GPUs, and bf16 pays only where the processor computes in it natively (this CPU has
# > AVX-512 bf16 instructions). The tables below say which helped *here*.
#
# The baseline is PyTorch as a textbook writes it: fp32, attention as
# $\mathrm{softmax}(QK^\top/\sqrt d)\,V$ in three operations, AdamW updating one parameter at a time.

# %%
import pandas as pd
import torch
import effitrain as et
from IPython.display import display
from effitrain.lab import LivePlot, Panel, compare, profile_steps, styled
from effitrain.lab import figures
from effitrain.lab.design import design, seed_runs
from effitrain.lab.speed import loss_parity, toggle_speed
from effitrain.train import chunked


# %%
PROFILE, SIZE = et.default_profile(), et.profile_size()
S = {"smoke": dict(rounds=2, bench_steps=2, parity_steps=10, compile=False, lengths=(256, 4096), micro=4),
     "cpu": dict(rounds=8, bench_steps=10, parity_steps=100, compile=True, micro=16,
                 lengths=(256, 1024, 4096, 16384, 65536)),
     "gpu": dict(rounds=4, bench_steps=20, parity_steps=300, compile=True, micro=16,
                 lengths=(256, 1024, 4096, 16384, 65536))}[SIZE]
PLAIN = {"run.precision": "fp32", "model.attention": "math", "optim.kernel": "for-loop", "run.compile": False}

# %%
D = design(PROFILE)  # the toolkit's shared comparison design (section 3)
cfg = D.config()
data = et.prepare_data(cfg.data)
base = cfg.replace(**PLAIN)
TOGGLES = {"SDPA attention": {"model.attention": "sdpa"}, "bf16 autocast": {"run.precision": "bf16"},
           "foreach AdamW": {"optim.kernel": "foreach"}, "fused AdamW": {"optim.kernel": "fused"},
           **({"torch.compile": {"run.compile": True}} if S["compile"] else {})}
print(f"profile {PROFILE}: {cfg.model.preset} BERT, {cfg.run.batch_size} × {cfg.data.seq_len} tokens per step; "
      f"baseline: fp32, math attention, for-loop AdamW; toggles: {', '.join(TOGGLES)}")

# %% [markdown]
# ## 1. Seconds per step, one toggle at a time
# `toggle_speed` times the baseline and every toggle in turn, then again, `rounds` times: a machine
# that gets faster or slower during the measurement (other programs, heat) affects every setting
# alike. Each row's tokens/s has a 95% interval over rounds, and its ratio to the baseline an
# interval too, paired by round (the two timings of a round share whatever the machine was doing
# then); the verdict says whether the ratio is faster, slower, or within ±15% of no change, or
# how many rounds would decide it. torch.compile compiles during
# the untimed warm-up: its seconds are a column of their own, and "break-even steps" is how many
# steps it must run before the compiling has paid for itself. The last two rows turn everything on,
# without and with compile.

# %%
ALL = {k: v for changes in TOGGLES.values() for k, v in changes.items()} | {"optim.kernel": "fused"}
EAGER = {**ALL, "run.compile": False}  # everything on but torch.compile (sections 3 and 4)
speed = toggle_speed(base, {**TOGGLES, "all on, eager": EAGER, "all together": ALL}, rounds=S["rounds"],
                     steps=S["bench_steps"])
print(f"{speed.attrs['rounds']} rounds of {speed.attrs['steps']} steps on {speed.attrs['device']}; "
      f"memory: {speed.attrs['memory_kind']}")
speed.round(3)

# %% [markdown]
# ## 2. The same loss per step?
# One seed of each toggle, and two seeds of the baseline: the gap between the two baseline seeds is
# what noise looks like. "max gap" is the largest difference of the validation loss from the
# baseline's at the same step. bf16 rounds every product to 8 mantissa bits, so its curve is not
# bit-identical; the question is whether it moves more than a change of seed does.

# %%
short = base.replace(budget=f"{S['parity_steps']}steps", evals=5)
plain = [et.cached_train(short.replace(seed=s), data=data, name=f"baseline s{s}", progress=False) for s in (0, 1)]
toggled = {label: et.cached_train(short.replace(**changes), data=data, name=label, progress=False)
           for label, changes in TOGGLES.items()}
loss_parity(toggled, baseline=plain).round(4)

# %% [markdown]
# ## 3. Time to target: the baseline and everything on
# Everything on but torch.compile (its compiling would be paid again by every run; section 1 says
# after how many steps it pays for itself), against the textbook baseline, both trained to a target
# 1.5 nats below the unigram line (lesson 00's plateau), so the time to target is counted well into
# the main phase of training.
#
# **The design.** From scratch, *when* a seed leaves the unigram plateau varies by about a third of
# the run between seeds, and it moves when anything changes early, even the rounding of bf16: three
# seeds from scratch gave a time-to-target ratio of 1.63× [0.50, 5.31], an interval that decides
# nothing (docs/power.md). These settings change how a step runs, not what it learns, so they are
# measured in the toolkit's shared design (`effitrain.lab.design`): every run of both settings starts
# from **one baseline state past the plateau** (seed 0 of the shared baseline at its first evaluation
# 1 nat below the unigram line: trained once, cached, and shared with lessons 07 and 01), and its own
# settings act from there; 5 seeds, paired by seed. Seconds and FLOPs to the target are counted from
# the warm start. The x axis is seconds: the curves should have the same shape, and the faster
# setting's should be squeezed to the left. Its speed-up should match section 1's tokens/s ratio,
# since the loss per step is the same.

# %%
warm = D.warm(data)  # the shared state; the settings below act from its step on
target = D.target(data)
print(f"shared design: {warm.budget}, seeds {list(D.seeds)}, every run from seed {D.warm_seed}'s baseline state at "
      f"step {warm.run.warm_start}; target {target:.3f} ({D.gap:g} nats below the unigram line)")
plot = LivePlot(x="seconds", show_train=False, color_by="group",
                title="the baseline and everything on (eager), from the shared warm start: val loss against seconds")
display(plot)
runs = [r for name, changes in (("baseline", PLAIN), ("all on, eager", EAGER))
        for r in seed_runs(warm.replace(**changes), [], D.seeds, data, name=name, callbacks=[plot.callback()])]
table = compare(runs, baseline="baseline", target_val_loss=target, resolve=D.resolve)
plot.set_target(target)  # the dashed line in the plot above
print(f"all on, eager: {table.loc['all on, eager', 'verdict']} in seconds to target (paired over {len(D.seeds)} seeds); "
      f"section 1 predicted {speed.loc['all on, eager', '× baseline']:.2f}× from tokens/s")
styled(table)

# %% [markdown]
# ## 4. Where the time goes
# `profile_steps` runs a few steps under `torch.profiler` and adds up the time of each operator by
# the part of the model it belongs to (the backward of an operation counts where its forward ran).
# Left: the baseline; right: everything on but compilation (a compiled graph hides the parts from
# the profiler). What did each toggle shrink?

# %%
for label, c in (("baseline", base), ("all on, eager", base.replace(**EAGER))):
    prof = profile_steps(c, data=data, steps=3)
    display(figures.profile_figure(prof, title=f"{label}: where a step's time goes"))

# %% [markdown]
# ## 5. Accumulating in low precision: why a running sum stalls
# A float with $p$ mantissa bits has a spacing (ulp) of about $|s|\,2^{1-p}$ near $s$. Add $a$ to a
# running sum $s$ and the result is rounded to that grid: once $|a| < \mathrm{ulp}(s)/2$ the sum does
# not change at all. bf16 has $p = 8$: a running sum of ones stops at 256, since 256 + 1 rounds back
# to 256. A dot product of $n$ positive terms grows like $n$, so after a few hundred terms every new
# product is lost. **Chunk-based accumulation** (Wang et al. 2018) sums chunks of $C$ terms, then
# the chunk sums: no running sum has more than $\max(C, n/C)$ addends, so the error grows like
# $C + n/C$ instead of $n$, smallest near $C = \sqrt n$. Same-sign products are the worst case;
# zero-mean ones grow like $\sqrt n$ and lose much less.

# %%
curves = [chunked.dot_error_curve(S["lengths"], dtype=dt, kind=kind, chunk=64)
          for dt in (torch.bfloat16, torch.float16) for kind in ("same-sign", "zero-mean")]
dots = pd.concat(curves, ignore_index=True)
figures.accumulation_figure(dots, x="length", title="a dot product accumulated in low precision (chunks of 64)",
                            x_title="length of the dot product")

# %% [markdown]
# The same happens to gradients accumulated over many micro-batches in a low-precision buffer: each
# micro-batch adds $g_i/k$, the total grows like $k$ of them, and late micro-batches are swamped.

# %%
acc = chunked.accumulation_error((4, 16, 64, 256), dtype=torch.bfloat16, chunk=8)
display(acc.round(4))
figures.accumulation_figure(acc, x="n", title="gradients accumulated over n micro-batches in bf16 (chunks of 8)",
                            x_title="micro-batches per step")

# %% [markdown]
# And in a training run. The `lowprec_accumulation` technique takes the backward over: each
# micro-batch's gradients go into a bf16 buffer, naive or chunked, and the total is written into
# the gradients before the update (mode fp32 is the trainer's own accumulation). On `cpu`, 16
# micro-batches of 2 rows make a step of 32 rows, as above (4 of 8 on `smoke`).

# %%
acc_plot = LivePlot(x="step", title="gradients accumulated in bf16 over many micro-batches: naive, chunked, fp32")
display(acc_plot)
micro = cfg.replace(budget=f"{S['parity_steps']}steps", batch_size=32 // S["micro"], grad_accum=S["micro"], evals=5)
lowprec = {mode: et.cached_train(micro, [et.technique("lowprec_accumulation", mode=mode, chunk=4)], data=data,
                                 name=f"accumulate {mode}", callbacks=[acc_plot.callback()], progress=False)
           for mode in ("fp32", "naive", "chunked")}
loss_parity({m: r for m, r in lowprec.items() if m != "fp32"}, baseline=[lowprec["fp32"]]).round(6)

# %% [markdown]
# ## 6. Your turn: the panel
# The panel starts from the baseline. Its precision and compile settings are in the top row; the
# attention kernel and the AdamW implementation are config fields (`model.attention`,
# `optim.kernel`): build a panel on `base.replace(attention="sdpa")` to change them. Press Run, and
# switch the plot's x axis between step and seconds.

# %%
panel = Panel(base, data=data, plot=LivePlot(x="seconds", title="panel: the same math, faster?"))
panel.seeds.value = 1
panel

# %% [markdown]
# ## What this measured
# On `cpu` (a quiet 2-core Intel Xeon with AMX, bf16 autocast native, torch 2.13, 2026-12-07; the
# tables above are yours). Seconds differ between machines and days; the ratios much less.
# - **Seconds per step** (8 alternating rounds of 10 steps, tokens/s ratio to the baseline, 95%
#   paired by round): **bf16 autocast faster by [1.46, 1.62]×**; everything on, eager, **faster by
#   [1.17, 1.29]×**, with compile [1.21, 1.34]×. SDPA attention (±4%), torch.compile alone (±6%) and
#   foreach AdamW (±13%) had no effect beyond those bounds here; fused AdamW was *slower* by [0.89,
#   0.98]× on this CPU. At this shape (hidden 128, 64 tokens, 2 layers) attention and the optimizer
#   are small parts of a step (section 4 shows it), so a better kernel for them cannot save much;
#   the fused attention kernel's point (never writing the T×T scores to memory) and compile's fusion
#   of elementwise work are GPU-sized gains, not measured in this run. Compile took 3.6 s the first
#   time and 0.3 s once torch's compile cache held the graph.
# - **Loss per step**: after 100 steps from scratch every toggle's validation curve lies within
#   0.0027 nats of the baseline's (bf16; the others agree to 4 decimals), against 0.10 between two
#   baseline seeds.
# - **Time to target** (1.5 nats below the unigram line, 5 seeds paired, from the shared warm start
#   at step 575): the baseline took 7.65 ± 0.70 s, everything on (eager) 6.56 ± 0.43 s: **faster by
#   [1.07, 1.27]×** (1.17×), in line with the 1.23× of the step times. Before this design (3 seeds
#   from scratch, 2026-12) the same comparison gave 1.63× [0.50, 5.31], which decided nothing. From
#   one shared state the fp32 and bf16 runs of a seed ended at the same validation loss to three
#   decimals (4.597 ± 0.007 for both), while from scratch seed 0 ended 0.35 nats apart: past the
#   plateau the rounding of bf16 does not move the curve; on the plateau it moves *when* a seed
#   leaves it.
# - **Accumulation**: a bf16 dot product of 65,536 same-sign terms loses 98% of its value when
#   accumulated naively and 50% in chunks of 64 (the chunk sums are swamped in turn: chunks near
#   √n = 256 do better, exercise 3); in fp16 the chunked error is 0.3% against 87% naive. Zero-mean
#   terms lose far less (32% and 5% in bf16). In training with 16 micro-batches the bf16 buffer moved
#   the curve by 0.0028 nats (naive) and 0.0004 (chunked): with 16 addends the gradients are off by
#   0.4% and 0.3% (the simulation above), which Adam's per-parameter normalisation absorbs. The
#   swamping matters with hundreds of micro-batches, or with 8-bit accumulators.
#
# ## Summary
# - A setting that keeps the math keeps the loss per step; check it against the noise between two
#   seeds (`loss_parity`), then its only effect is the seconds, measured by alternating rounds with
#   intervals (`toggle_speed`), compile time apart.
# - Which settings help is a property of the hardware: measure, do not assume.
# - Low-precision accumulation loses small addends once the sum is large (ulp of the sum vs the
#   addend); chunked sums keep them (`effitrain.train.chunked`, `lowprec_accumulation`).
# - `profile_steps` shows where the time of a step goes, by part of the model.
#
# ## Exercises
# 1. Time the same toggles at a larger shape: `toggle_speed(base.replace(preset="mini"), TOGGLES)`.
#    Which ratios grow with the model, and why?
# 2. From section 1, compute by hand the break-even number of steps of torch.compile. Is it worth it
#    for the 425 steps each run of section 3 trains? For a 10,000-step run?
# 3. Change `chunk` in section 5 to 16, 256 and 1024 for the length-65,536 dot product. Where is the
#    error smallest? Compare with $\sqrt n$.
# 4. Rerun the training run of section 5 with `dtype="fp16"`. Is it closer to fp32 than bf16, and why
#    (count the mantissa bits)?
# 5. Profile the model with `batch_size=4` instead of 32. Which group's share grows, and what does
#    that say about small batches on a CPU?
