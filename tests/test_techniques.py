"""Every technique in the package, through the registry: a card, widget-ready params, a few real
training steps on the smoke corpus, one-line errors for bad values, and "identity means identical".

New techniques are picked up automatically: register them in a module that
`effitrain/techniques/__init__.py` imports.
"""
from __future__ import annotations

import dataclasses
import re

import pytest

import effitrain as et
import effitrain.techniques  # noqa: F401  (imports every technique module, which registers it)
from effitrain.lab import Panel
from effitrain.techniques.base import REGISTRY

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


@pytest.mark.slow
@pytest.mark.parametrize("name", PACKAGE)
def test_trains_a_few_steps_with_default_params(name, smoke):
    cfg, data = smoke
    run = et.train(short(cfg), [et.technique(name)], data=data, progress=False)
    assert run.status == "completed", run.message
    assert run.techniques[0]["name"] == name
    assert all(map(lambda x: x == x and x < 20, curve(run))), curve(run)  # finite, sane losses
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
