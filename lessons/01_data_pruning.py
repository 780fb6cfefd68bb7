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
# # 01 · Use fewer training examples: data pruning
#
# Lesson 00 built the stick. This lesson measures the first idea of the "use fewer training
# examples" family: score every example, throw part of them away, train on the rest.
#
# ## What you will learn
# - five ways to score a training example (random, compressibility, perplexity, EL2N, prototype
#   distance), their math, and what each costs in seconds and FLOPs;
# - to look at which texts each score calls easy or hard, and whether the scores agree;
# - when pruning *can* save compute at all (it changes which examples train, never what a step costs),
#   and a regime where the question is fair: a fixed pool repeated for several epochs;
# - to sweep the keep fraction over seeds and read time to target, final loss and the speed-up with
#   its interval, **with and without the cost of the scores charged**.
#
# **Prerequisites**: lesson 00 (time to target, `compare`, seeds and intervals); masked-language-model
# loss. No GPU needed.
#
# **Expected run time** (the whole notebook). Part A trains over a small fixed pool of clean training
# blocks, repeated for many epochs; part B on the whole "web-like" noisy corpus, which the budget
# does not finish once. Every run of a part continues from that part's baseline state past the
# plateau (the design of section 2), so `cpu` comparisons are made well below the unigram line;
# `smoke` runs only check the code.
#
# | profile | model | A: pool (blocks), epochs | B: noisy blocks, epochs | steps × batch | runs | whole notebook |
# |---|---|---|---|---|---|---|
# | `smoke` (CI) | tiny | 128, 10 | 57,879, 0.02 | 40 × 32 | 2 × 2 + 2 × 2 | 44 s measured (nbmake, fresh cache, quiet 2-core Intel Xeon, 2026-12-07) |
# | `cpu` (laptop) | tiny | 1,024, 31 | 57,879, 0.55 | 1,000 × 32, from the warm start | 2 × 3 + 2 × 3 | 8.5 min measured with every cache cold (quiet 2-core Intel Xeon, 2026-12-07) |
# | `gpu` (one GPU) | the profile's | 8,192 | 57,879 | 2,000 × 128 | 16 × 3 + 4 × 3 | not measured yet |

# %% [markdown]
# ## The claim
# > Pruning papers report that a **well-chosen subset trains as well as the whole set**, and, when
# > data is repeated, sometimes better: Sorscher et al. (2022) beat power-law scaling by keeping
# > the hard (or, with little data, the easy) examples; cramming (Geiping & Goldstein 2022) drops
# > text the tokenizer compresses badly. In its honest form the claim is: **at a fixed compute
# > budget over a fixed pool, training on the best-scored fraction reaches the full pool's
# > validation loss in fewer FLOPs, and still does once the scoring is paid for.**
#
# Pruning does not make a step cheaper. If the budget covers less than one pass over the data, a
# pruned run just sees different examples once: no saving is possible from repetition. So this
# lesson fixes a small **pool** and a budget of several epochs over it: the baseline repeats the whole
# pool, a pruned run repeats its kept part more often. Whether that wins is measured below, on your
# machine; "it did not help" is a possible, and common, answer at this scale.

# %% [markdown]
# ## Setup
# `POOL` is part A's candidate pool (the first `POOL` training blocks); `BUDGET` the steps of every run.

# %%
import dataclasses
import effitrain as et
from IPython.display import display
from effitrain.lab import LivePlot, Panel, common_target, compare, styled, figures, tables
from effitrain.lab.design import design
from effitrain.techniques import pruning

PROFILE, SIZE = et.default_profile(), et.profile_size()
# What each part trains. cpu (and smoke): compressibility against the baseline, 3 seeds, to stay within ten minutes
# on a laptop; the control (random, part A) and the bound (oracle, part B) are one edit away (exercise 7)
S = {"smoke": dict(pool=128, ref_steps=15, seeds=(0, 1)),
     "cpu": dict(pool=1024, ref_steps=60, seeds=(0, 1, 2)),
     "gpu": dict(pool=8192, ref_steps=200, seeds=(0, 1, 2), fractions=(0.3, 0.6, 0.8), sweep=pruning.SCORES,
                 noisy=("compressibility", "oracle", "perplexity"))}[SIZE]
S = {"fractions": (0.75,), "sweep": ("compressibility",), "noisy": ("compressibility",), **S}
D = dataclasses.replace(design(PROFILE), seeds=S["seeds"])  # the toolkit's comparison design: budget, warm start, target
POOL = {"data.max_train_examples": S["pool"]}

# %%
data = et.prepare_data(D.config(**POOL).data)
cfg = D.warm(data, **POOL)  # every run continues from the pool baseline's state past the plateau
target = D.target(data)
print(f"profile {PROFILE}: pool of {len(data.train):,} blocks of {cfg.data.seq_len} tokens; {cfg.budget} × "
      f"{cfg.run.batch_size} rows = {cfg.budget.amount * cfg.run.batch_size / len(data.train):.1f} epochs "
      f"({cfg.model.preset} BERT); every run from seed {D.warm_seed}'s baseline state at step {cfg.run.warm_start}, "
      f"seeds {list(D.seeds)}; target {target:.3f} ({D.gap:g} nats below the unigram line)")

# %% [markdown]
# # Part A: a clean pool, repeated
# ## 1. Five scores, higher = harder
# Every score gives each row $i$ of the pool one number; **higher means harder or less typical**.
#
# - **random**: $u_i \sim U(0,1)$, seeded. The control: any score that does not beat it is noise.
# - **compressibility**: tokens per character, $n_i^{tok} / n_i^{char}$. A WordPiece vocabulary is
#   fitted to the common text, so ordinary prose costs few tokens per character, while numbers,
#   names, tables and garbage split into many pieces. Cramming removes the worst-compressed text.
# - **perplexity**: the mean MLM loss of the row's masked tokens $M_i$ (fixed masks) under a small
#   *reference model* trained briefly on the pool,
#   $\bar\ell_i = \frac{1}{|M_i|}\sum_{j\in M_i} -\log p_\theta(x_j \mid \tilde x_i)$; $e^{\bar\ell_i}$ is the perplexity.
# - **EL2N** (Paul et al. 2021): the error vector's length early in training,
#   $\frac{1}{|M_i|}\sum_{j\in M_i} \lVert \mathrm{softmax}(z_j) - e_{x_j} \rVert_2$, averaged over
#   a few reference runs with different seeds. It lies in $[0, \sqrt 2]$; early in training it is
#   close to $1 - p_\theta(x_j)$, so it ranks rows much like perplexity.
# - **prototype** (Sorscher et al. 2022): embed each row (the reference encoder's mean-pooled states,
#   centred), cluster the embeddings with $k$-means, and score $1 - \cos(e_i, c_{k(i)})$, the
#   cosine distance to the nearest centroid: far from every prototype = atypical.
#
# The three model-based scores train `tiny` reference models with the package's own trainer; the
# cost counts that training, its evaluations and every scoring pass.

# %%
results = pruning.score_all(data.train, data, cfg, ref_steps=S["ref_steps"])
costs = tables.cost_table(results)
costs

# %% [markdown]
# The easiest and hardest blocks by compressibility and by perplexity (decoded; `##` marks a
# word piece):

# %%
display(pruning.peek(data.train, data, results["compressibility"][0]))
display(pruning.peek(data.train, data, results["perplexity"][0]))

# %% [markdown]
# Do the scores agree on which rows are hard? Spearman rank correlation between every pair
# (1 = the same order, 0 = unrelated):

# %%
tables.agreement(results)

# %% [markdown]
# ## 2. Sweep the keep fraction, over seeds
# For each score the lesson keeps the end its paper recommends: the *easy* end for
# compressibility and perplexity (filter junk), the *hard* end for EL2N (Paul et al.) and
# prototypes (Sorscher et al., with plenty of data), the lowest random numbers for `random`.
# Every setting trains the design's seeds; the baseline trains the whole pool. The scores are
# cached, so the runs reuse the ones computed above (their cost is still reported with every run).
# The `cpu` profile trains one score, compressibility (`S["sweep"]`), to stay within ten minutes; add
# `"random"` (the control) or the others to `S["sweep"]` to train them too (the panel below tries
# EL2N). Every run goes through the **run cache**: run the cell again, or
# another lesson with the same baseline, and finished runs load in well under a second, with the
# seconds they were measured in.
#
# **The design** (`effitrain.lab.design`, docs/power.md). From scratch, the step at which a seed
# leaves the unigram plateau varies by about a third between seeds, and a pruned pool moves it:
# three seeds from scratch gave compressibility 1.06× [0.35, 3.19] by FLOPs, an interval that
# decides nothing. Pruning's claim is about the main phase of training, so every run of a part,
# pruned or not, starts from **one baseline state past the plateau**: the pool baseline's seed 0 at
# its first evaluation 1 nat below the unigram line (`run.warm_start`). From there each seed
# continues with its own data order, a pruned run on its kept rows only; the seeds are paired, and
# the target lies 1.5 nats below the unigram line. FLOPs and seconds count from the warm start.

# %%
KEEP = {"random": "easy", "compressibility": "easy", "perplexity": "easy", "el2n": "hard", "prototype": "hard"}
runs = tables.sweep(cfg, data, S["sweep"], S["fractions"], seeds=len(D.seeds), keep=KEEP, ref_steps=S["ref_steps"])

# %% [markdown]
# `sweep_table` puts each setting against the baseline at the design's target: FLOPs and seconds to
# target (mean ± 95% half-width), the final val loss, the speed-up with its interval (paired by
# seed), and its verdict: faster, slower, or no effect beyond a stated bound. FLOPs are
# deterministic; seconds depend on how busy your machine is.

# %%
sweep = tables.sweep_table(runs, target_val_loss=target, resolve=D.resolve)
figures.plot_sweep(sweep)

# %%
print(tables.sweep_text(sweep))

# %% [markdown]
# The same runs in lesson 00's `compare` table, speed-up by FLOPs and then by seconds:

# %%
styled(compare(runs, target_val_loss=target, speedup_by="flops", resolve=D.resolve))

# %%
styled(compare(runs, target_val_loss=target, speedup_by="seconds", resolve=D.resolve))

# %% [markdown]
# **A later target.** The design's target is reached early in the main phase. The highest final val
# loss of *all* runs (`common_target`) is a target every run reaches by the end of the budget: does
# the gap between a pruned pool and the whole pool grow or shrink as the epochs pile up? (Were some
# run not to reach the design's target, it would read "not reached" above; this target still gives
# every setting a ratio with its interval.)

# %%
late = common_target(runs)
print(f"later target: val loss {late:.3f} (the design's: {target:.3f})")
print(tables.sweep_text(tables.sweep_table(runs, target_val_loss=late, resolve=D.resolve)))

# %% [markdown]
# ## 3. Did pruning pay for itself?
# A score is paid before training starts. Charged to one run, the net speed-up is
# $t_{base} / (t_{pruned} + c_{score})$. Compare the cost column with what one training run costs:
# a reference model trained for a fraction of a run, plus forward passes over the pool, is not small
# next to a short run. Scores are reusable, so in practice the cost is spread over every run (and every
# hyper-parameter trial) that uses the pruned set: divide $c_{score}$ by that number.

# %%
run_flops = runs[0].summary()["flops_measured"]
display(tables.cost_table(results, run_flops=run_flops)[["seconds", "FLOPs", "FLOPs ÷ one training run"]])
tables.format_sweep_table(sweep)[["score", "keep fraction", "speedup (FLOPs)", "net of scoring (FLOPs)",
                                   "speedup (seconds)", "net of scoring (seconds)"]]

# %% [markdown]
# # Part B: web-like data, where pruning should win
# A clean pool of speeches is the hard case for pruning: every block is real prose, so a score can
# only trade one good block for another. Web crawls are not like that. `corpus="sotu-noisy"` is the
# same corpus with junk added to the *training* documents only: for every three clean paragraphs
# one junk row (25% of the rows, about 30% of the tokens, since junk splits into more tokens per
# word) in five kinds: exact and near duplicates, boilerplate (cookie banners, legal lines), OCR-
# garbled copies of real paragraphs, number tables, and keyword or random-token spam. Validation is
# the clean text of lesson 00, so a run that wastes steps on junk pays for it in val loss.
#
# This part trains on the **whole** noisy training set: the budget reads under one epoch of it, as
# a cramming run reads under one epoch of its corpus. Pruning cannot win by repetition here; it can
# only win by not spending steps on junk. The scores: `compressibility` (cramming's filter, free,
# trained below), and `oracle`, the injected labels themselves (the perfect filter, the bound a real
# score is read against; `gpu` trains it, exercise 7 on `cpu`); `random` is scored for the junk
# table only: in one pass, dropping a random quarter draws from the same distribution as the
# baseline. The model-based scores need a scoring pass over every block (about as much compute as
# the training run itself here); exercise 4 adds them.

# %%
NOISY_DATA = {"data.corpus": "sotu-noisy", "data.max_train_examples": 0}
noisy = et.prepare_data(D.config(**NOISY_DATA).data)
ncfg = D.warm(noisy, **NOISY_DATA)  # from the noisy baseline's own state past the plateau
ntarget = D.target(noisy)
NOISY = S["noisy"]  # what part B trains
nres = pruning.score_all(noisy.train, noisy, ncfg, scores=tuple(dict.fromkeys(("random", "compressibility", "oracle",
                                                                              *NOISY))), ref_steps=S["ref_steps"])
KEEP_B = round(float((noisy.train.features["junk"] == 0).float().mean()), 2)  # the clean share of the blocks
print(f"{len(noisy.train):,} training blocks, {1 - KEEP_B:.0%} of them junk; the budget reads "
      f"{ncfg.budget.amount * ncfg.run.batch_size / len(noisy.train):.2f} epochs of it")

# %% [markdown]
# Which scores find the junk? Each prunes as many blocks as there are junk blocks (`1 - KEEP_B`) from its easy end. **Precision** is
# the share of the removed blocks that are junk (random removal expects the base rate printed
# below), **recall** the share of the junk blocks removed, then recall per kind of junk:

# %%
junk = tables.junk_table(nres, noisy.train, keep_fraction=KEEP_B, keep="easy")
print(f"base rate: {junk.attrs['base_rate']:.0%} of the blocks are junk")
junk.style.format("{:.2f}", subset=[c for c in junk.columns if c not in ("end kept", "removed")])

# %% [markdown]
# Compressibility finds the junk that tokenizes badly (numbers, spam, OCR) and none of the
# duplicates or boilerplate, which are ordinary words. The hardest blocks by compressibility:

# %%
display(pruning.peek(noisy.train, noisy, nres["compressibility"][0]))

# %% [markdown]
# Now train: the baseline on everything, each score keeping `KEEP_B` of the blocks, over seeds, every
# run from the noisy baseline's own state past the plateau (the design of section 2).

# %%
nruns = tables.sweep(ncfg, noisy, NOISY, (KEEP_B,), seeds=len(D.seeds), keep="easy", ref_steps=S["ref_steps"])
nsweep = tables.sweep_table(nruns, target_val_loss=ntarget, resolve=D.resolve)
figures.plot_sweep(nsweep)

# %%
print(tables.sweep_text(nsweep))

# %% [markdown]
# ## Clean and noisy, side by side
# The speed-up to each part's own baseline target (FLOPs, and net of scoring), for the score both
# parts trained (part A keeps 75%, part B the clean share). The targets differ (the noisy baseline learns from less clean text), so compare the
# ratios, not the losses.

# %%
tables.side_by_side({"A: clean pool, repeated": sweep, "B: noisy, one pass": nsweep},
                    ["speedup (FLOPs)", "net of scoring (FLOPs)", "final val loss", "reached"])

# %% [markdown]
# **What this measured** on the `cpu` profile (a quiet 2-core Intel Xeon, bf16, 2026-12-07; the
# tables above are yours). Every run of a part started from that part's baseline state 1 nat below the
# unigram line (part A: step 325; part B: step 250), paired by seed; the targets lie 1.5 nats below
# it (4.744 and 4.865). Verdicts are by FLOPs, which the machine's load cannot move; on a 2-core
# CPU the seconds of 3 seeds were too noisy to decide (the tables say so).
# - **Part A, clean pool (31 epochs): compressibility is slower.** Keeping the best-compressed 75%
#   reached the target **slower by [0.84, 0.85]×** in FLOPs (3 seeds) and ended worse (4.086 ± 0.039
#   against 3.964 ± 0.061); by the later target (4.103) it was slower by [0.56, 0.92]×.
#   The control, measured the same day with 5 seeds (exercise 7 trains it): dropping a *random*
#   quarter showed no effect beyond ±20% at the target (0.95× [0.84, 1.08]), and was slower by
#   [0.83, 0.87]× at the later target, while compressibility was slower by [0.83, 0.88]× and
#   [0.65, 0.78]×. Repeating fewer rows more often costs late in training, and which rows the
#   compressibility score drops (the wordier, rarer-token ones) costs more than a random draw.
# - **Part B, noisy corpus (0.55 of an epoch): compressibility is faster.** It removes junk with
#   precision 0.65 (random: 0.30) and recall 0.66 (all the number tables, most OCR and spam, almost
#   no duplicates or boilerplate), and reached the target **faster by [1.14, 1.40]×** in FLOPs
#   (1.26×), ending 0.12 nats lower (3.987 ± 0.050 against 4.105 ± 0.054). The bound, measured the
#   same day with 3 seeds (exercise 7): the **oracle**, which removes exactly the junk, was faster by
#   [1.10, 1.45]× (1.26×) and ended at 3.901 ± 0.025. The free score got the oracle's speed-up to the
#   target, though not its final loss.
# - **Before this design** (3 seeds from scratch, 2026-12): part A compressibility 1.06× [0.35,
#   3.19], random 0.90× [0.30, 2.75]; part B: neither compressibility nor the oracle reached the
#   baseline's target in more than 1 seed of 3. Those runs compared plateau exits: 300 steps from
#   scratch end near the plateau, where filtering seemed not to matter. Past it, it does.

# %% [markdown]
# ## Your turn: the panel
# The panel holds part A's baseline seeds. The cell below ticks **prune** from code and picks a
# setting the sweep already trained (compressibility, easy end, one seed), then presses Run: it loads
# from the run cache in well under a second, with the seconds it was measured in. Now flip a
# setting, for instance `el2n` with the *hard* end (Paul et al.'s choice), and press Run: that one
# trains (about half a minute a seed on `cpu`; three seeds give an interval).

# %%
panel = Panel(cfg, plot=LivePlot(x="flops", title="pruning: validation loss against FLOPs"))
panel.seeds.value = 1
panel.add_runs([r for r in runs if not r.techniques])  # the baseline group
panel.technique_boxes["prune"].value = True
for field, value in dict(score="compressibility", keep="easy", keep_fraction=S["fractions"][0],
                         ref_steps=S["ref_steps"]).items():
    panel.param_widgets["prune"][field].value = value
panel

# %%
panel_runs = panel.run_now()

# %%
panel.wait()
styled(compare(panel.runs, speedup_by="flops"))

# %% [markdown]
# ## Summary
# - Pruning changes which examples train, not the cost of a step. On clean data it can only save
#   compute when data is repeated, so part A measures it on a fixed pool trained for several epochs,
#   at equal quality, over seeds, with the baseline well below the unigram line.
# - Scores: random (the control), compressibility (tokens per character, free), and three that need
#   a reference model: perplexity, EL2N and prototype distance. They do not agree much, and the
#   model-based ones cost a noticeable share of a training run here.
# - On web-like data (part B) the question changes: does a score find the junk, and does dropping it
#   buy steps on clean text? `junk_table` answers the first with precision and recall against the
#   injected labels, the sweep the second, with the oracle as the bound.
# - Read the intervals before the means, and design for them: from a shared state past the plateau,
#   paired by seed, three seeds decided both parts here (clean pool: compressibility slower; noisy
#   corpus: faster, as fast as the oracle to the target). From scratch, three seeds decided nothing.
# - `pruning.score_rows`, `select_rows` and the `prune` technique are reusable: the scores are
#   cached per pool and their cost travels with every run (`run.extra["techniques"]["prune"]`).
#
# ## Exercises
# 1. In the panel, keep the *hard* end of `compressibility` instead of the easy one. What kind of
#    text trains then (look at `pruning.peek`), and what happens to the final val loss?
# 2. Make part A's pool larger (`pool` in `S`) so the budget is about one epoch. Does any score still
#    change the time to target? Explain from the claim's second paragraph.
# 3. Raise `ref_steps` (a better reference model). Do perplexity and EL2N agree with each other
#    more or less (`tables.agreement`)? What does the better reference cost?
# 4. Add `"perplexity"` and `"el2n"` to `NOISY` in part B. Which kinds of junk do they find that
#    compressibility misses (`junk_table`), and what does scoring every block cost next to a run?
# 5. With `keep="middle"`, prune both tails of perplexity at once. Is that better than either end?
# 6. How many runs would have to share one set of EL2N scores before their cost falls below 5% of a
#    training run? Use the cost table.
# 7. Train the control and the bound: `S["sweep"] = ("random", "compressibility")` in part A and
#    `S["noisy"] = ("compressibility", "oracle")` in part B (about 1.5 and 1.7 more minutes on `cpu`).
#    Does dropping a random quarter of the pool change the time to target? How close does
#    compressibility come to the oracle?
