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
# **Expected run time** (the whole notebook). Every run trains a step budget over a fixed pool of
# training blocks; `cpu` uses the `tiny` model so that the sweep fits.
#
# | profile | model | pool (blocks) | steps × batch | runs | whole notebook |
# |---|---|---|---|---|---|
# | `smoke` (CI) | tiny | 128 | 50 × 16 | 14 | 29–33 s measured (nbmake, quiet 2-core CPU, 2026-11) |
# | `cpu` (laptop) | tiny, seq 128 | 512 | 100 × 16 | 36 | 4.5–4.8 min measured (quiet 2-core CPU, 2026-11) |
# | `gpu` (one GPU) | base | 8,192 | 600 × 128 | 51 | about 30 min (estimate) |

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
# `POOL` is the candidate pool (the first `POOL` training blocks); `BUDGET` the steps of every run.

# %%
import effitrain as et
from IPython.display import display
from effitrain.lab import LivePlot, Panel, common_target, compare, styled, figures, tables
from effitrain.techniques import pruning

PROFILE = et.default_profile()
S = {"smoke": dict(pool=128, budget="50steps", batch=16, ref_steps=15, fractions=(0.5,), seeds=2, preset="tiny"),
     "cpu": dict(pool=512, budget="100steps", batch=16, ref_steps=40, fractions=(0.3, 0.6), seeds=3, preset="tiny"),
     "gpu": dict(pool=8192, budget="600steps", batch=128, ref_steps=200, fractions=(0.3, 0.6, 0.8), seeds=3,
                 preset="base")}[PROFILE]
cfg = et.profile_config(PROFILE, budget=S["budget"], **{"data.max_train_examples": S["pool"],
                        "run.batch_size": S["batch"], "model.preset": S["preset"]})
data = et.prepare_data(cfg.data)
epochs = cfg.budget.amount * cfg.run.batch_size / len(data.train)
print(f"profile {PROFILE}: pool of {len(data.train):,} blocks of {cfg.data.seq_len} tokens; "
      f"{cfg.budget} × {cfg.run.batch_size} rows = {epochs:.1f} epochs over the pool ({cfg.model.preset} BERT)")

# %% [markdown]
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
# so the runs reuse the ones computed above (their cost is still reported with every run).

# %%
KEEP = {"random": "easy", "compressibility": "easy", "perplexity": "easy", "el2n": "hard", "prototype": "hard"}
runs = tables.sweep(cfg, data, pruning.SCORES, S["fractions"], seeds=S["seeds"], keep=KEEP,
                     ref_steps=S["ref_steps"])

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
# ## 4. Your turn: the panel
# The panel holds the baseline seeds. The cell below ticks **prune** from code and picks EL2N
# keeping the *easy* end (the opposite of the sweep), then presses Run. Flip any setting and press
# Run again: the score is cached when its settings are unchanged.

# %%
panel = Panel(cfg, plot=LivePlot(x="flops", title="pruning: validation loss against FLOPs"))
panel.seeds.value = S["seeds"]
panel.add_runs([r for r in runs if not r.techniques])  # the baseline group
panel.technique_boxes["prune"].value = True
for field, value in dict(score="el2n", keep="easy", keep_fraction=S["fractions"][0], ref_steps=S["ref_steps"]).items():
    panel.param_widgets["prune"][field].value = value
panel

# %%
panel_runs = panel.run_now()

# %%
panel.wait()
styled(compare(panel.runs, speedup_by="flops"))

# %% [markdown]
# ## Summary
# - Pruning changes which examples train, not the cost of a step. It can only save compute when
#   data is repeated (or when some of it is worse than useless), so measure it on a fixed pool
#   trained for several epochs, at equal quality, over seeds.
# - Scores: random (the control), compressibility (tokens per character, free), and three that need
#   a reference model: perplexity, EL2N and prototype distance. They do not agree much, and the
#   model-based ones cost a noticeable share of a training run here.
# - The tables above say whether any score beat the full pool on this machine and whether it still
#   did after paying for its scores; at this scale expect "no" more often than "yes", and read the
#   intervals before the means.
# - `pruning.score_rows`, `select_rows` and the `prune` technique are reusable: the scores are
#   cached per pool and their cost travels with every run (`run.extra["techniques"]["prune"]`).
#
# ## Exercises
# 1. In the panel, keep the *hard* end of `compressibility` instead of the easy one. What kind of
#    text trains then (look at `pruning.peek`), and what happens to the final val loss?
# 2. Make the pool larger (`pool` in `S`) so the budget is about one epoch. Does any score still
#    change the time to target? Explain from the claim's first paragraph.
# 3. Raise `ref_steps` (a better reference model). Do perplexity and EL2N agree with each other
#    more or less (`tables.agreement`)? What does the better reference cost?
# 4. Add 8 rows of random token ids to the pool (see `tests/test_pruning.py`) and score it. Which
#    scores put the junk at the hard end, and why does the prototype score call it *typical*?
# 5. With `keep="middle"`, prune both tails of perplexity at once. Is that better than either end?
# 6. How many runs would have to share one set of EL2N scores before their cost falls below 5% of a
#    training run? Use the cost table.
