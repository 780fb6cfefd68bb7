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
# # 02 · Distillation: a synthetic dataset, and a teacher
#
# Lesson 01 trained on *fewer real* examples. This lesson goes one step further and *makes* the
# examples: a handful of synthetic ones, learned so that a model trained on them does well on real
# data. Then it distils a different thing, a trained model, into a student's loss.
#
# ## What you will learn
# - **dataset distillation**: learn K synthetic examples per class (vectors in a model's embedding
#   space, with soft labels) by differentiating *through* a few steps of training, a bi-level problem;
# - to judge a distilled set honestly: against random real subsets of the same size and the full
#   training split, at the same training steps, over seeds, with the seconds spent distilling;
# - what the learned vectors look like, through their nearest real words;
# - **knowledge distillation**: a student learning from a teacher's temperature-softened predictions,
#   and how to charge the teacher's cost when you measure a speed-up.
#
# **Prerequisites**: lesson 00 (time to target, `compare`, the panel). Backpropagation, and what
# softmax and the KL divergence are.
#
# **Expected run time** (the whole notebook). The profile comes from `EFFITRAIN_PROFILE`, else `gpu`
# when CUDA is available, else `cpu`.
#
# The student runs (and the teacher) are long enough to get well below the unigram line (lesson 00's
# plateau); they go through the run cache, so a second run of the notebook reuses them.
#
# | profile | teacher | student runs | dataset distillation | whole notebook |
# |---|---|---|---|---|
# | `smoke` (CI) | tiny, 60 steps | the design's: 2 × 2 runs of 40 steps | about 4 s | 33 s measured (nbmake, fresh cache, quiet 2-core Intel Xeon, 2026-12-07) |
# | `cpu` (laptop) | tiny, 1,600 steps | the design's: 2 × 5 runs from step 575 of 1,000 | about 3 s | 8.0 min measured with every cache cold (quiet 2-core Intel Xeon, 2026-12-07) |
# | `gpu` (one GPU) | base, 2,000 steps | the design's: 2 × 3 runs of 2,000 steps | about 5 s (on the CPU) | not measured yet |

# %% [markdown]
# ## The claim
# > **Dataset distillation.** For a small classifier trained with a fixed, short recipe (here 20 SGD
# > steps), K learned synthetic examples per class give a *higher* test accuracy than K real
# > examples per class picked at random, and can beat the same 20 steps on the full training split.
# > They cost seconds of distilling, and they are tuned to that learner and recipe: they are a
# > compressed training signal, not a new corpus.
# >
# > **Knowledge distillation.** A trained teacher's soft predictions carry more information per masked
# > token than the one-hot label. Whether that makes the *student* reach a target loss sooner, once the
# > teacher's forward pass in every step is charged, is what the table at the end measures on your
# > machine; the teacher's own training is a separate, up-front cost, shown on its own.

# %% [markdown]
# ## Setup
# Step budgets (not seconds) make the comparison immune to a busy CPU; `compare` reports FLOPs and
# seconds both. The downstream task is lesson 00's held-out State of the Union speeches, labelled
# by era (4 classes), split into train and test by speech.

# %%
import effitrain as et
from IPython.display import display
from effitrain.data.downstream import sotu_era_task
from effitrain.lab import LivePlot, Panel, common_target, compare, styled, figures, tables
from effitrain.lab.design import design, seed_runs
from effitrain.techniques import dataset_distillation as DD, knowledge_distillation as KD

PROFILE, SIZE = et.default_profile(), et.profile_size()
# The student is the shared design's model (effitrain.lab.design); the teacher (preset, steps): gpu a larger model,
# as in DistilBERT; cpu a teacher of the student's size trained longer ("born-again", Furlanello et al. 2018),
# whose forward pass a laptop can afford; smoke only runs the code
TEACHER = {"smoke": ("same", 60), "cpu": ("same", 1600), "gpu": ("base", 2000)}[SIZE]
D = design(PROFILE)
cfg = D.config()  # the student's recipe, from scratch (the teacher is trained with it)
data = et.prepare_data(cfg.data)
task = sotu_era_task(data)
print(f"profile {PROFILE}: student {cfg.model.preset}, {cfg.budget}; teacher {TEACHER[0]}, {TEACHER[1]} steps")
print(f"era task: {len(task.train_ids):,} training and {len(task.test_ids):,} test paragraphs, "
      f"classes {task.labels}; majority-class accuracy {task.majority_accuracy():.3f}")

# %% [markdown]
# ## 1. A teacher, and an embedding space
# Text is discrete: there is no gradient with respect to a word. So we distil in a **fixed
# embedding space** $E \in \mathbb R^{V\times H}$: a synthetic example is a sequence of $L$ free
# vectors in $\mathbb R^H$, and a real example is the rows of $E$ for its tokens. Here $E$ is the
# token embedding of an MLM teacher, trained once by the package's trainer. The same teacher serves
# knowledge distillation in part 2 (`teacher_for` caches it in this process).

# %%
teacher, cached = KD.teacher_for(data, cfg, *TEACHER)
t = teacher.run.summary()
print(f"{t['name']}: {t['status']} after {t['steps']} steps in {t['seconds']:.1f} s, {t['flops_measured']:.3g} FLOPs; "
      f"val loss {t['val_loss_first']:.3f} → {t['val_loss_last']:.3f}")
E = teacher.model.encoder.tok.weight.detach()
print(f"embedding space: {E.shape[0]:,} tokens × {E.shape[1]} dimensions")

# %% [markdown]
# ## 2. Dataset distillation
# **The learner.** A deliberately small classifier: the mean of an example's vectors, layer-normalised,
# then a one-hidden-layer MLP. Its *recipe* is fixed: fresh random weights $\theta_0$, then $N=20$
# full-batch SGD steps with learning rate $\eta$ on whatever data it is given.
#
# **The bi-level objective** (Wang et al. 2018, *Dataset Distillation*). The synthetic set
# $S=\{(x_j, y_j)\}$ (vectors $x_j\in\mathbb R^{L\times H}$, label distributions $y_j$) is the
# solution of
# $$\min_S\; \mathbb E_{\theta_0}\Big[\,\ell_{\text{real}}\big(\theta_N(S)\big)\Big],\qquad
# \theta_{k+1} = \theta_k - \eta\,\nabla_\theta\, \ell(\theta_k; S),$$
# the loss on *real* training data of the learner after $N$ steps on $S$. Every step of the inner
# loop is differentiable in $S$, so autograd carries $\partial \ell_{\text{real}}/\partial S$ back through
# all $N$ updates (second derivatives included); one outer step costs about $N$ forward-backward
# passes on $S$ plus one on a real batch. A fresh $\theta_0$ each outer step makes $S$ work for any
# initialisation, not one. Learnable **soft labels** $y_j = \mathrm{softmax}(u_j)$ let an example say
# "mostly 1933–1980, a bit 1981–" (Sucholutsky & Schonlau 2021). Gradient matching (Zhao et al.
# 2021) is the other common route: it matches $\nabla_\theta \ell(\theta; S_c)$ to $\nabla_\theta
# \ell(\theta; \text{real}_c)$ class by class instead of unrolling.
#
# The plot shows the outer loss while it is learned (each point a different random learner, hence
# the noise); $\ln 4 = 1.386$ is a uniform guess over the four eras.

# %%
objective = figures.ObjectivePlot()
display(objective)
distilled = DD.distill_dataset(task, E, per_class=2, length=16, steps=150, seed=0, callback=objective.callback)
s = distilled.settings
print(f"{len(distilled)} synthetic examples ({s['per_class']} per class) of {s['length']} × {E.shape[1]} in "
      f"{distilled.seconds:.1f} s, {distilled.flops:.3g} FLOPs; outer loss "
      f"{distilled.history[0]['loss']:.3f} → {sum(h['loss'] for h in distilled.history[-10:]) / 10:.3f} (last 10)")

# %% [markdown]
# **The test.** Train the same learner with the same recipe (20 SGD steps, same $\eta$) on the
# distilled set, on the real paragraphs it started from, on random real subsets of the same size
# (2 paragraphs per era, a new subset per seed), and on the full training split (a fresh batch of
# the same size every step), then measure accuracy on the held-out test speeches: mean ± 95%
# interval over learner seeds. The last trained row uses the full split for ten times the steps with
# larger batches: a reference that costs more.

# %%
table = tables.distillation_table(distilled, task, E, seeds=range(5), long_steps=200)
display(table.round(3))

# %% [markdown]
# **Reading it.** Compare the distilled row with the row of the paragraphs it started from: the
# difference is what distilling did, not which paragraphs were picked. Eight random paragraphs say
# little about an era; eight learned ones were shaped (by gradient descent) to say as much as
# possible *to this learner in 20 steps*. The long full-split row shows what more data and steps buy. Look at the distilling seconds too: the set is only
# worth its cost if it is reused (many trainings, hyper-parameter sweeps, continual learning), and
# it says nothing about a different model or a longer recipe. Exercise 2 checks that.

# %% [markdown]
# ## 3. What was learned: nearest real tokens
# Each synthetic position is a vector; the table shows the vocabulary token whose embedding is
# nearest to it (cosine), next to the real paragraph it started from, and the five tokens nearest
# to the *mean* of its vectors, which is all the learner sees (so the order of positions means
# nothing). Distilling moves a few positions to other words and shifts the mean; how far depends
# on the outer learning rate and steps (exercise 3).

# %%
DD.nearest_tokens_frame(distilled, data.tokenizer, E, task.labels, positions=12)

# %% [markdown]
# Read the *soft label* column too: it started at 0.71 on the example's own era and was learned
# with the vectors. An example may end up mostly speaking for *another* era; then its vectors serve
# that era, and the nearest words of its mean may say which. The means of most examples sit near
# frequent words (the, of, and): they share most of their tokens, and what tells eras apart is a
# small shift on top of that.

# %% [markdown]
# ## 4. Knowledge distillation
# **The loss** (Hinton et al. 2015). At every masked position the student has logits $z_s$, the
# teacher $z_t$. With temperature $T$ and weight $\alpha$,
# $$\mathcal L = (1-\alpha)\,\mathrm{CE}(z_s, y) + \alpha\,T^2\,
# \mathrm{KL}\big(\mathrm{softmax}(z_t/T)\,\|\,\mathrm{softmax}(z_s/T)\big).$$
# A higher $T$ flattens both distributions, so the teacher's ranking of the *wrong* tokens counts;
# $T^2$ keeps the gradient of the soft term on the scale of the hard one. The technique `distill`
# does this in the trainer's `loss` event. The teacher's forward pass runs inside that event, so the
# student's measured FLOPs include it; the teacher's training is reported beside the run (`cached`
# says whether it was reused).
#
# **The design.** From scratch, the step at which a student leaves the unigram plateau varies by a
# third between seeds and moves with anything that changes early, so three seeds from scratch could
# not tell a gain from noise (before this design: 2 of 3 distilled seeds reached the target, and the
# speed-up's interval was [0.28, 2.68]). Whether soft targets make a step worth more is a claim about
# the main phase of training, so every student, with or without a teacher, starts from the toolkit's
# **shared warm start** (`effitrain.lab.design`: seed 0's baseline state 1 nat below the unigram line,
# cached and shared with lessons 01, 06 and 07) and continues with its own seed; the seeds are paired
# and the target lies 1.5 nats below the unigram line. Steps, FLOPs and seconds are counted from the
# warm start.
#
# First the student baseline, the design's seeds, live:

# %%
warm = D.warm(data)
target = D.target(data)
print(f"every student starts from seed {D.warm_seed}'s baseline state at step {warm.run.warm_start}; "
      f"target {target:.3f} ({D.gap:g} nats below the unigram line)")
plot = LivePlot(x="step", show_train=False, color_by="group", title="student baseline: MLM loss")
display(plot)
baseline = seed_runs(warm, [], D.seeds, data, callbacks=[plot.callback()], verbose=False)
b = baseline[0].summary()
print(f"{b['name']}: {b['status']} after {b['steps']} steps in {b['seconds']:.1f} s; "
      f"val loss {b['val_loss_first']:.3f} → {b['val_loss_last']:.3f} (teacher: {teacher.val_loss:.3f})")

# %% [markdown]
# Now the same students with `distill`, from the panel. Tick `distill`, pick the teacher and press
# Run; the next cell does exactly that from code. The teacher settings match the one above, so it
# comes from the cache instead of being trained again.

# %%
panel = Panel(warm, plot=LivePlot(x="flops", show_train=False, color_by="group",
                                  title="student with and without distill"))
panel.seeds.value = len(D.seeds)
panel.add_runs(baseline)
panel

# %%
panel.technique_boxes["distill"].value = True
for field, value in dict(alpha=0.5, temperature=2.0, teacher_preset=TEACHER[0], teacher_steps=TEACHER[1]).items():
    panel.param_widgets["distill"][field].value = value
kd_runs = panel.run_now()

# %% [markdown]
# Two questions, three tables. **Better steps?** The speed-up by optimizer steps says whether a student
# step with the teacher's soft targets is worth more than a plain one. **Cheaper training?** The
# speed-up by FLOPs charges the teacher's forward pass in every student step.

# %%
panel.wait()
display(styled(compare(panel.runs, target_val_loss=target, speedup_by="step", resolve=D.resolve)))
display(styled(compare(panel.runs, target_val_loss=target, speedup_by="flops", resolve=D.resolve)))
styled(compare(panel.runs, target_val_loss=target, speedup_by="seconds", resolve=D.resolve))

# %% [markdown]
# **Reading the tables.** The target is the design's, 1.5 nats below the unigram line; the seeds
# are paired, and the verdict says faster, slower, or no effect beyond a stated bound. The third
# table is wall time on your machine. A teacher larger
# than its student makes the FLOPs speed-up a hard race: one forward pass of the teacher can cost
# more than the student's whole forward and backward (compare the FLOPs columns of the two groups),
# so the student must reach the target in a fraction of the steps just to break even. For wall
# time use `speedup_by="seconds"`; it is only as clean as the machine, so trust FLOPs first.
# Neither table includes the teacher's training (below). That cost can be amortised when one
# teacher serves many students; for a single student it has to be counted in full.

# %% [markdown]
# **A later target.** The highest final val loss of all runs (`common_target`) is a target every
# run reaches by the end of the budget (and a ratio for every group even if some student missed the
# design's target): does the teacher's help grow or fade as training goes on?

# %%
late = common_target(panel.runs)
print(f"later target: val loss {late:.3f} (the design's: {target:.3f})")
display(styled(compare(panel.runs, target_val_loss=late, speedup_by="step", resolve=D.resolve)))
styled(compare(panel.runs, target_val_loss=late, speedup_by="flops", resolve=D.resolve))

# %% [markdown]
# **What this measured** on the `cpu` profile (a quiet 2-core Intel Xeon, bf16, 2026-12-07; your
# tables are the ones above). The teacher (the student's size, 1,600 steps from scratch, 76 s,
# 9.85e12 FLOPs) ended at val loss 3.66. Every student started from the shared warm start (step 575)
# and was paired by seed over 5 seeds, with the target 1.5 nats below the unigram line (4.816):
# - **Better steps: yes.** With `distill` (α 0.5, T 2) every seed reached the target, **faster by
#   [1.81, 1.91]× in steps**, and ended 0.20 nats lower at equal steps (4.394 ± 0.005 against
#   4.597 ± 0.007).
# - **Cheaper training, per student: in FLOPs yes, in seconds not here.** With the teacher's
#   forward pass charged in every step (a distilled step costs 1.33× a plain one in FLOPs), it was
#   **faster by [1.36, 1.44]× in FLOPs**. In seconds the teacher's forward costs more on this CPU
#   (32,700 tokens/s against 46,600): 7.04 ± 0.08 s to the target against the baseline's
#   6.64 ± 0.66 s (the third table has the verdict).
# - **The teacher is not free.** Its training cost 9.85e12 FLOPs; each distilled student saves about
#   2.6e11 FLOPs to the target, so a teacher pays for itself only after about 38 students.
# - At the later target every run reaches by the end (4.606) the gain grows: 2.10× [1.97, 2.25] in
#   steps, 1.58× [1.48, 1.69] in FLOPs.
#
# Before this design (3 seeds from scratch, 2026-12-06) 2 of 3 distilled seeds reached the target and
# the speed-up by steps was 0.86× [0.28, 2.68]: the plateau exits, not the teacher, decided it.

# %%
tables.teacher_costs(panel.runs).round(2)

# %% [markdown]
# ## Summary
# - Dataset distillation learns a few synthetic examples by differentiating the loss of a trained
#   learner *through* its training steps (a bi-level problem); in a fixed embedding space that works
#   for text too.
# - Against random real examples of the same number, at the same recipe, the distilled set wins
#   clearly here; the table gives the margin, the interval, and the seconds it cost to distil.
# - The set is tuned to one learner and one recipe; distilling is a cost to amortise over reuse.
# - Knowledge distillation adds $\alpha T^2\,\mathrm{KL}$ to the teacher's soft predictions; its
#   speed-up is measured at equal validation loss with the teacher's forward charged, and the
#   teacher's training shown apart.
#
# ## Exercises
# 1. Distil with `per_class=1` and `per_class=4`. How does the distilled row move, and the random-real
#    row? Where is the gap largest, and why?
# 2. Evaluate the distilled set with a different recipe: `tables.distillation_table(distilled, task, E,
#    steps=200)`, then `lr=0.1`. Does the advantage survive a recipe it was not distilled for?
# 3. Set `soft_labels=False`, then `init="noise"`, then `lr=0.5`. Which matters most for accuracy,
#    and with `init="noise"`, do the nearest tokens of the means look like words of their era?
# 4. Distil for the `learner="encoder"` (a one-layer transformer through `embeds=`, 40 outer steps).
#    How much slower is an outer step, and does the distilled set still beat random real examples?
# 5. In the panel, set the distill temperature to 1 and to 5, and alpha to 0.9. Which setting reaches
#    the target soonest in steps, and does the ranking change in FLOPs?
# 6. Count the break-even from your own tables: with this teacher's training FLOPs and the FLOPs
#    a student saves to the target, how many students must one teacher serve before knowledge
#    distillation saves compute? And at the later target?
# 7. Train the students from scratch instead (`D.config()` in place of `warm`, 5 seeds). How wide is
#    the interval now, and why (lesson 00's plateau, docs/power.md)?
