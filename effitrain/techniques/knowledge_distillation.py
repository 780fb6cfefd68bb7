"""Knowledge distillation: learn the MLM task from a trained teacher's soft predictions too.

    run = et.train(cfg, [et.technique("distill", alpha=0.5, temperature=2, teacher_preset="mini")])

The teacher is trained once by the package's trainer, kept in-process and in the run cache (`teacher_for`); the
loss is the plain function `kd_loss`; the hook is `DistillTechnique` (registered as ``distill``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from effitrain.config import ConfigError
from effitrain.techniques.base import LossInputs, StepContext, Technique, param, register
from effitrain.train.runcache import train_frozen

if TYPE_CHECKING:  # pragma: no cover
    from effitrain.config import Config
    from effitrain.data import PretrainData, TrainSet


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, hard_loss: torch.Tensor,
            alpha: float, temperature: float) -> torch.Tensor:
    """(1 − α)·CE + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)), KL averaged over rows."""
    T = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / T, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / T, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return (1.0 - alpha) * hard_loss + alpha * T * T * kl


@dataclass
class Teacher:
    model: torch.nn.Module
    seconds: float  # training seconds (evaluation excluded), as the trainer counts them
    flops: float  # training FLOPs measured by the trainer
    val_loss: float
    settings: dict
    run: Any = None  # the teacher's `Run`


_TEACHERS: dict[str, Teacher] = {}


def teacher_config(config: "Config", preset: str, steps: int) -> "Config":
    """The student's recipe with the teacher's model size and a step budget, from scratch (never the
    student's warm start); seed 0, 2 evaluations."""
    return config.replace(preset=config.model.preset if preset == "same" else preset, budget=f"{steps}steps",
                          seed=0, evals=2, warm_start=0, warm_seed=0)


def teacher_for(data: "PretrainData", config: "Config", preset: str = "same", steps: int = 300) -> tuple[Teacher, bool]:
    """(teacher, cached): an MLM teacher trained by the package's trainer on `data`, once per process
    and through the run cache (a teacher trained in an earlier session loads with its measured cost).

    Keyed by data.key and the teacher's whole config. Global RNG state is restored afterwards, so a
    student's run is the same whether its teacher was trained now or found in the cache.
    """
    tcfg = teacher_config(config, preset, steps)
    key = f"{data.key}|{json.dumps(tcfg.to_dict(), sort_keys=True, default=str)}"
    if key in _TEACHERS:
        return _TEACHERS[key], True
    run = train_frozen(tcfg, data, "the distill teacher", cache=True, name=f"teacher ({tcfg.model.preset}, {steps} steps)")
    s = run.summary()
    model = run.model
    teacher = Teacher(model, s["seconds"], s["flops_measured"], s["val_loss_last"],
                      {"preset": tcfg.model.preset, "steps": steps}, run)
    _TEACHERS[key] = teacher
    return teacher, bool((run.extra.get("cache") or {}).get("loaded"))


@dataclass(frozen=True)
class DistillParams:
    alpha: float = param(0.5, range=(0.0, 1.0), step=0.05,
                         help="weight of the teacher term; 0 = plain MLM loss (the teacher is not run)")
    temperature: float = param(2.0, range=(1.0, 10.0), step=0.5, help="softens both distributions")
    teacher_preset: str = param("same", choices=("same", "tiny", "mini", "small", "base"),
                                help="teacher size ('same' = the student's preset)")
    teacher_steps: int = param(200, range=(10, 100_000), help="teacher's training budget in steps")


@register
class DistillTechnique(Technique):
    """Knowledge distillation: learn the MLM task from a trained teacher's soft predictions too.

    **What.** A teacher (trained once, here by the same trainer on the same data; or any `BertForMLM`
    you pass as `DistillTechnique(teacher=model, alpha=...)`) predicts the same masked positions as
    the student. The student's loss mixes the usual cross-entropy with the labels and the KL
    divergence to the teacher's temperature-softened distribution.

    **Why.** A one-hot label says only which token was right; the teacher's distribution also says
    which wrong tokens were plausible ("dark knowledge"), a richer signal per masked token, so the
    student may reach a given loss in fewer steps. It is not free: every student step also runs the
    teacher's forward pass, and the teacher had to be trained.

    **Math.** With student logits $z_s$, teacher logits $z_t$ and temperature $T$,
    $\\mathcal L = (1-\\alpha)\\,\\mathrm{CE}(z_s, y) + \\alpha\\,T^2\\,\\mathrm{KL}\\big(\\mathrm{softmax}(z_t/T)
    \\,\\|\\,\\mathrm{softmax}(z_s/T)\\big)$. The $T^2$ keeps the soft term's gradient on the scale of the
    hard term's as $T$ grows (the gradient of the KL shrinks as $1/T^2$).

    **Cost.** The teacher's forward runs inside the `loss` event, so the trainer's FLOP
    counter charges it to the student's run (the student's FLOPs per step grow by about the
    teacher's forward cost); the teacher's own training is *not* in the student's curve: it is in
    `run.extra["techniques"]["distill"]` (`teacher_seconds`, `teacher_flops`, `cached`), reported on
    every run, also when the teacher came from the in-process cache.

    **Settings.** alpha 0.5 and temperature 2 are common starting points; alpha = 0 is exactly the
    plain run (the teacher is neither trained nor run). `teacher_preset` "same" = the student's size;
    `teacher_steps` its budget (default 200). A teacher clearly better than the student at the
    student's budget is what can make it pay; DistilBERT distilled a 6-layer student from BERT-base.

    **Paper.** Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015);
    for BERT: Sanh et al., "DistilBERT" (2019).
    """

    name = "distill"
    Params = DistillParams
    paper = "Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network"
    identity_params = {"alpha": 0.0}

    def __init__(self, params: Any = None, *, teacher: torch.nn.Module | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.given_teacher = teacher
        self.teacher: torch.nn.Module | None = None

    def on_dataset(self, train: "TrainSet", ctx: StepContext) -> "TrainSet":
        p = self.params
        if p.alpha == 0.0:
            return train
        if self.given_teacher is not None:
            self.teacher = self.given_teacher
            self.stats.update(teacher="given", cached=True, teacher_seconds=0.0, teacher_flops=0.0)
        else:
            if ctx.data is None:
                raise ConfigError("distill: training a teacher needs the run's data; pass teacher= instead")
            teacher, cached = teacher_for(ctx.data, ctx.config, p.teacher_preset, p.teacher_steps)
            self.teacher = teacher.model
            self.stats.update(teacher=f"{teacher.settings['preset']}, {teacher.settings['steps']} steps",
                              cached=cached, teacher_seconds=teacher.seconds, teacher_flops=teacher.flops,
                              teacher_val_loss=teacher.val_loss)
        self.teacher.to(ctx.device).eval()
        return train

    def loss(self, out: LossInputs, ctx: StepContext) -> torch.Tensor | None:
        p = self.params
        if p.alpha == 0.0:
            return None
        if self.teacher is None:  # used without on_dataset (e.g. called by hand)
            if self.given_teacher is None:
                raise ConfigError("distill: no teacher; run it through the trainer or pass teacher=")
            self.teacher = self.given_teacher.to(ctx.device).eval()
        if out.input_ids is None:
            raise ConfigError("distill needs the masked input ids in LossInputs")
        with torch.no_grad():
            teacher_logits = self.teacher(out.input_ids, out.positions, out.attention_mask)
        if teacher_logits.shape != out.logits.shape:
            raise ConfigError(f"distill: teacher predicts {tuple(teacher_logits.shape)} but the student "
                              f"{tuple(out.logits.shape)}; use a teacher with the same vocabulary")
        self.stats["kd_batches"] = self.stats.get("kd_batches", 0) + 1  # the effect, as measured
        return kd_loss(out.logits, teacher_logits, out.loss, p.alpha, p.temperature)

    def state_dict(self) -> dict:
        return {"kd_batches": self.stats.get("kd_batches", 0)}

    def load_state_dict(self, state: dict) -> None:
        if "kd_batches" in state:
            self.stats["kd_batches"] = int(state["kd_batches"])


__all__ = ["kd_loss", "Teacher", "teacher_for", "teacher_config", "DistillParams", "DistillTechnique"]
