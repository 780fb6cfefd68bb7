"""Every technique in the package, through the registry: a card, widget-ready params, a few real
training steps on the smoke corpus, one-line errors for bad values, and "identity means identical".

New techniques are picked up automatically: register them in a module that
`effitrain/techniques/__init__.py` imports.
"""
from __future__ import annotations

import dataclasses
import math
import re

import pytest

import effitrain as et
import effitrain.techniques  # noqa: F401  (imports every technique module, which registers it)
from effitrain.lab import Panel
from effitrain.techniques.base import CARD_HEADINGS, REGISTRY, card_sections

PACKAGE = sorted(name for name, cls in REGISTRY.items() if cls.__module__.startswith("effitrain.techniques."))
IDENTITY = [name for name in PACKAGE if REGISTRY[name].identity_params is not None]


def short(cfg, steps: int = 6):
    return cfg.replace(budget=f"{steps}steps", evals=1, log_every=1)


def curve(run) -> list[float]:
    return [row["train_loss"] for row in run.history.steps] + [row["val_loss"] for row in run.history.evals]


def test_the_package_has_techniques():
    assert len(PACKAGE) >= 3, PACKAGE


@pytest.mark.parametrize("name", PACKAGE)
def test_card_and_params(name):
    cls = REGISTRY[name]
    card = cls.card()
    assert len(card) > 300, f"{name}: the card (class docstring) must say what, why, the math, settings, the paper"
    assert re.search(r"\b(19|20)\d\d\b", card), f"{name}: the card must cite its paper with the year"
    assert [h for h in card_sections(card) if h in CARD_HEADINGS] == list(CARD_HEADINGS), \
        f"{name}: the card needs the headings **What.** **Why.** **Math.** **Settings.** **Paper.**, once each, in that order"
    assert cls.Params.__qualname__ == cls.Params.__name__, f"{name}: Params is a module-level dataclass"
    default = cls()  # the defaults are valid
    for f in dataclasses.fields(cls.Params):
        meta = f.metadata
        value = getattr(default.params, f.name)
        assert meta.get("help"), f"{name}.{f.name} needs help text (the panel shows it)"
        assert isinstance(value, bool) or "range" in meta or "choices" in meta, \
            f"{name}.{f.name} needs a range or choices so a widget can enforce them"


@pytest.mark.parametrize("name", PACKAGE)
def test_bad_values_are_refused_with_the_field_named(name):
    cls = REGISTRY[name]
    for f in dataclasses.fields(cls.Params):
        meta = f.metadata
        if "range" in meta:
            bad = meta["range"][1] * 2 + 1
        elif "choices" in meta:
            bad = "no-such-choice"
        else:
            continue
        with pytest.raises(et.ConfigError, match=rf"^{re.escape(name)}\.{f.name} must be "):
            cls(**{f.name: bad})


@pytest.mark.parametrize("name", PACKAGE)
def test_parameter_types_are_checked_up_front(name):
    """An integer field refuses 2.5, a number field refuses text and inf; the field is named."""
    cls = REGISTRY[name]
    for f in dataclasses.fields(cls.Params):
        default = f.default
        if isinstance(default, bool):
            bad = [1, "yes"]
        elif isinstance(default, int):
            bad = [default + 0.5, "3", True]
        elif isinstance(default, float):
            bad = ["0.5", float("inf"), float("nan")]
        else:
            bad = [3]
        for value in bad:
            with pytest.raises(et.ConfigError, match=rf"^{re.escape(name)}\.{f.name} must be "):
                cls(**{f.name: value})


def test_the_same_technique_twice_is_refused(smoke):
    cfg, data = smoke
    with pytest.raises(et.ConfigError, match=r"technique 'prune' is given twice"):
        et.Trainer(cfg, [et.technique("prune"), et.technique("prune", keep_fraction=0.3)], data=data)


# -- composition: every ordered pair trains with both effects, or is refused naming both --------------------
PAIRS = [(a, b) for a in PACKAGE for b in PACKAGE if a != b]


@pytest.mark.slow
@pytest.mark.parametrize("first,second", PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_every_ordered_pair_composes_or_is_refused(first, second, smoke):
    cfg, data = smoke
    techniques = [et.technique(first), et.technique(second)]
    try:
        trainer = et.Trainer(short(cfg, 4), techniques, data=data, progress=False)
    except et.ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and first in message and second in message, message
        return
    run = trainer.fit()
    assert run.status == "completed", run.message
    stats = run.extra.get("techniques", {})
    for name in (first, second):
        assert stats.get(name), f"{name}'s effect is missing from the combined run {first}+{second}: {stats}"
    replicas = stats.get("sma", {}).get("replicas", 1)  # sma: k micro-batches a step
    effects = {"prune": lambda s: s["kept"] < s["of"] and run.extra["train_examples"] == s["kept"],
               "curriculum": lambda s: s["batches_drawn"] == 4 * replicas and s["examples"] == run.extra["train_examples"],
               "seqlen_warmup": lambda s: s["batches_cut"] >= 1,
               "distill": lambda s: s["kd_batches"] == 4,
               "electra": lambda s: s["rtd_batches"] == 4,
               "sma": lambda s: s["averaging_steps"] == 4 and s["replicas"] == replicas,
               "ouroboros": lambda s: s["groups"] == 2 and s["stale_steps"] == 1,
               "checkpointing": lambda s: s["recomputed_blocks"] > 0,
               "lowbit_optimizer": lambda s: 0 < s["state_bytes"] < 3 * run.extra["parameters"]}
    for name in (first, second):
        if name in effects:
            assert effects[name](stats[name]), f"{name} did not act in {first}+{second}: {stats[name]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", PACKAGE)
def test_trains_a_few_steps_with_default_params(name, smoke):
    cfg, data = smoke
    run = et.train(short(cfg), [et.technique(name)], data=data, progress=False)
    assert run.status == "completed", run.message
    assert run.techniques[0]["name"] == name
    # finite, sane MLM losses: a technique that adds a weighted objective (electra: + 50·RTD) logs its MLM part as term_mlm
    mlm = [row.get("term_mlm", row["train_loss"]) for row in run.history.steps] + \
        [row["val_loss"] for row in run.history.evals]
    assert all(map(lambda x: x == x and x < 20, mlm)), mlm
    assert all(math.isfinite(row["train_loss"]) for row in run.history.steps), curve(run)
    assert run.summary()["flops_measured"] > 0


@pytest.mark.parametrize("name", IDENTITY)
def test_identity_params_change_nothing(name, smoke):
    cfg, data = smoke
    baseline = et.train(short(cfg), data=data, progress=False)
    technique = et.technique(name, **REGISTRY[name].identity_params)
    same = et.train(short(cfg), [technique], data=data, progress=False)
    assert curve(same) == curve(baseline)
    assert same.summary()["flops_measured"] == baseline.summary()["flops_measured"]


def test_every_package_technique_is_in_the_panel():
    panel = Panel(et.profile_config("smoke"))
    assert set(PACKAGE) <= set(panel.technique_boxes)
    for name in PACKAGE:
        assert set(panel.param_widgets[name]) == {f.name for f in dataclasses.fields(REGISTRY[name].Params)}
