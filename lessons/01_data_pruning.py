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
# **Expected run time** (the whole notebook). Part A trains a step budget over a small fixed pool of
# clean training blocks, repeated for several epochs; part B trains a budget of its own on the whole
# "web-like" noisy corpus, which the budget does not finish once. `cpu` runs are long enough to get
# well below the unigram line (the plateau, lesson 00), `smoke` runs only check the code.
#
# | profile | model | A: pool (blocks), epochs | B: noisy blocks, epochs | steps × batch | runs | whole notebook |
# |---|---|---|---|---|---|---|
# | `smoke` (CI) | tiny | 128, 3.8 | 57,879 | 30 × 16 | 13 | 42 s measured (nbmake, quiet 2-core CPU, 2026-12) |
# | `cpu` (laptop) | tiny | 1,024, 15.6 | 57,879, 0.17 | A 500 × 32, B 300 × 32 | 19 | 6.7 min from a cold run cache, 23 s warm (quiet 2-core CPU, 2026-12) |
# | `gpu` (one GPU) | base | 8,192, 9.4 | 57,879, 1.3 | 600 × 128 | 61 | about 35 min (estimate) |

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
import effitrain as et
from IPython.display import display
from effitrain.lab import LivePlot, Panel, common_target, compare, styled, figures, tables
from effitrain.techniques import pruning

PROFILE = et.default_profile()
S = {"smoke": dict(pool=128, budget="30steps", noisy_budget="30steps", batch=16, ref_steps=15, seeds=2),
     "cpu": dict(pool=1024, budget="500steps", noisy_budget="300steps", batch=32, ref_steps=60, seeds=3),
     "gpu": dict(pool=8192, budget="600steps", noisy_budget="600steps", batch=128, ref_steps=200, seeds=3,
                 fractions=(0.3, 0.6, 0.8), sweep=pruning.SCORES)}[PROFILE]
S = {"fractions": (0.75,), "sweep": ("random", "compressibility"), **S}  # what part A trains
cfg = et.profile_config(PROFILE, budget=S["budget"], **{"data.max_train_examples": S["pool"], "run.batch_size": S["batch"]})
data = et.prepare_data(cfg.data)
print(f"profile {PROFILE}: pool of {len(data.train):,} blocks of {cfg.data.seq_len} tokens; {cfg.budget} × "
      f"{cfg.run.batch_size} rows = {cfg.budget.amount * cfg.run.batch_size / len(data.train):.1f} epochs ({cfg.model.preset} BERT)")

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
# Every setting trains `seeds` seeds; the baseline trains the whole pool. The scores are cached,
# so the runs reuse the ones computed above (their cost is still reported with every run). The
# `cpu` profile sweeps two scores (`S["sweep"]`) to stay within ten minutes; add the others to
# `S["sweep"]` to train them too (the panel below tries EL2N). Every run goes through the **run cache**: run the cell again, or
# another lesson with the same baseline, and finished runs load in well under a second, with the
# seconds they were measured in.

# %%
KEEP = {"random": "easy", "compressibility": "easy", "perplexity": "easy", "el2n": "hard", "prototype": "hard"}
runs = tables.sweep(cfg, data, S["sweep"], S["fractions"], seeds=S["seeds"], keep=KEEP, ref_steps=S["ref_steps"])

# %% [markdown]
# `sweep_table` puts each setting against the baseline at the baseline's target (the highest final
# val loss of its seeds, as `compare`): FLOPs and seconds to target (mean ± 95% half-width), the
# final val loss, and the speed-up with its interval. FLOPs are deterministic; seconds depend on how
# busy your machine is.

# %%
sweep = tables.sweep_table(runs)
figures.plot_sweep(sweep)

# %%
print(tables.sweep_text(sweep))

# %% [markdown]
# The same runs in lesson 00's `compare` table, speed-up by FLOPs and then by seconds:

# %%
styled(compare(runs, speedup_by="flops"))

# %%
styled(compare(runs, speedup_by="seconds"))

# %% [markdown]
# A pruned setting that ends worse than the baseline reads "not reached" above, whatever it did on
# the way. At a looser target, the highest final val loss of *all* runs (`common_target`), every
# setting has a speed-up with its interval: did training on the subset get to *that* loss sooner?

# %%
loose = common_target(runs)
print(f"looser target: val loss {loose:.3f}")
print(tables.sweep_text(tables.sweep_table(runs, target_val_loss=loose)))

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
# only win by not spending steps on junk. The scores: `compressibility` (cramming's filter, free),
# and `oracle`, the injected labels themselves (the perfect filter, the bound a real score is read
# against); `random` is scored for the junk table only: in one pass, dropping a random quarter
# draws from the same distribution as the baseline, so part A's random runs already show what
# seed noise alone does. The model-based scores need a scoring pass over every block
# (about as much compute as the training run itself here); exercise 4 adds them.

# %%
ncfg = cfg.replace(budget=S["noisy_budget"], **{"data.corpus": "sotu-noisy", "data.max_train_examples": 0})
noisy = et.prepare_data(ncfg.data)
NOISY = ("compressibility", "oracle") + (("perplexity",) if PROFILE == "gpu" else ())  # what part B trains
nres = pruning.score_all(noisy.train, noisy, ncfg, scores=("random",) + NOISY, ref_steps=S["ref_steps"])
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
# Now train: the baseline on everything, each score keeping `KEEP_B` of the blocks, over seeds (a shorter budget than
# part A's: the noisy corpus is read once, so there is no repetition to wait for).

# %%
nruns = tables.sweep(ncfg, noisy, NOISY, (KEEP_B,), seeds=S["seeds"], keep="easy", ref_steps=S["ref_steps"])
nsweep = tables.sweep_table(nruns)
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
# **What this measured** on the `cpu` profile (2-core CPU, 3 seeds, 2026-12; your numbers will
# differ a little, the tables above are the ones that count). Both baselines end well below the
# unigram line, so the comparisons are past the plateau: part A's target is 0.67 nats below it
# (baseline final val loss 5.10 ± 1.21), part B's 0.63.
# - **Part A, clean pool**: compressibility 1.06× [0.35, 3.19] by FLOPs, random 0.90× [0.30, 2.75].
#   Neither is a speed-up: the intervals hold 1.0 with room to spare. The width comes from the
#   baseline itself: the step at which a seed leaves the plateau varies by a hundred steps, so its
#   final val loss spans 4.60 to 5.57 across three seeds.
# - **Part B, noisy**: compressibility removes junk with precision 0.75 (random: 0.30) and recall
#   0.63 (all the number tables, most spam and OCR, almost no duplicates or boilerplate). Yet
#   neither it nor the **oracle**, which removes exactly the junk, reached the baseline's target in
#   more than 1 seed of 3: final val loss 5.80 ± 0.25 and 5.80 ± 0.19 against the baseline's
#   5.66 ± 0.19. Clean-only steps did not beat steps with 30% junk in them.
# - A reading, not a proof: in these 300 steps the model is leaving the plateau, a stage that seems
#   limited by optimizer steps more than by what the steps contain; number tables and spam use
#   tokens prose rarely uses, so their gradients barely compete with it, while near-duplicates and
#   OCR copies of real paragraphs are still mostly real text. Filtering should matter more once the
#   model's capacity, not its optimization, is the limit: longer runs, a bigger model (the `gpu`
#   profile), or exercise 4's model-based scores.

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
# - Read the intervals before the means: a speed-up whose interval holds 1.0 is not one.
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
