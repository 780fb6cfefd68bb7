"""Saved runs load only when complete (issue 10): a partial or old file fails in one line naming the key."""
from __future__ import annotations

import copy
import json
import math

import pytest

import effitrain as et
from effitrain.config import ConfigError
from effitrain.train.history import History
from effitrain.train.run import FORMAT_FIELDS, RUN_FORMAT, Run


def _run() -> Run:
    steps = [dict(step=i, tokens=64 * i, seconds=0.1 * i, flops=1e6 * i, flops_analytic=1e6 * i,
                  train_loss=8.0 - 0.1 * i, lr=1e-3) for i in range(1, 4)]
    evals = [dict(step=i, tokens=64 * i, seconds=0.1 * i, flops=1e6 * i, val_loss=8.0 - 0.1 * i, val_accuracy=0.01 * i)
             for i in (0, 3)]
    return Run(config=et.profile_config("smoke", seed=3), techniques=[{"name": "prune", "params": {"keep": 0.5}}],
               history=History(steps, evals), status="completed", device="cpu", started="2026-01-01T00:00:00",
               extra={"unigram_val_loss": 7.5})


def _saved(tmp_path, change=None) -> str:
    d = _run().to_dict()
    if change:
        change(d)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(d))
    return str(path)


def _refused(path: str, *words: str, kind=ValueError) -> str:
    with pytest.raises(kind) as err:
        Run.load(path)
    message = str(err.value)
    assert "\n" not in message and path in message, message
    for w in words:
        assert w in message, message
    return message


def test_a_saved_run_loads_as_it_was(tmp_path):
    run = Run.load(_saved(tmp_path))
    assert run.config == _run().config and run.history.steps == _run().history.steps
    assert run.techniques == _run().techniques and run.extra == _run().extra
    assert math.isclose(run.summary()["val_loss_last"], 7.7)
    assert json.loads(open(_saved(tmp_path)).read())["format"] == RUN_FORMAT


def _drop(*keys):
    def change(d):
        node = d
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return change


@pytest.mark.parametrize("keys, words", [
    (("config", "data", "vocab_size"), ["config.data.vocab_size", "missing"]),
    (("config", "model", "norm"), ["config.model.norm", "missing"]),
    (("config", "optim"), ["config.optim", "missing"]),
    (("config", "run", "seed"), ["config.run.seed", "missing"]),
    (("config", "budget"), ["config.budget", "missing"]),
    (("config", "profile"), ["config.profile", "missing"]),
    (("config",), ["'config'", "missing"]),
    (("history",), ["'history'", "missing"]),
    (("history", "evals"), ["history", "evals"]),
    (("history", "steps", 1, "train_loss"), ["history", "step", "train_loss"]),
    (("history", "evals", 0, "val_loss"), ["history", "eval", "val_loss"]),
    (("history", "evals", 1, "val_accuracy"), ["history", "eval", "val_accuracy"]),
    (("status",), ["'status'", "missing"]),
    (("extra",), ["'extra'", "missing"]),
    (("techniques",), ["'techniques'", "missing"]),
    (("format",), ["format"]),
])
def test_a_partial_run_file_is_refused_naming_the_key(tmp_path, keys, words):
    _refused(_saved(tmp_path, _drop(*keys)), *words)


@pytest.mark.parametrize("key, value, words", [
    ("extra", [1, 2], ["'extra'", "mapping", "list"]),
    ("techniques", {"name": "x"}, ["'techniques'", "list"]),
    ("techniques", [{"params": {}}], ["techniques", "name"]),
    ("status", "weird", ["'status'", "weird", "completed"]),
    ("name", 3, ["'name'", "string"]),
    ("history", {"steps": {}, "evals": []}, ["history", "steps"]),
    ("config", [1], ["'config'", "mapping"]),
])
def test_a_run_file_with_wrong_types_is_refused_naming_the_key(tmp_path, key, value, words):
    _refused(_saved(tmp_path, lambda d: d.__setitem__(key, value)), *words)


@pytest.mark.parametrize("change, words", [
    (lambda d: d["config"].__setitem__("data", [1]), ["config.data", "mapping"]),
    (lambda d: d["config"].__setitem__("budget", {"amount": 5}), ["config.budget"]),
    (lambda d: d["config"].__setitem__("budget", 5), ["config.budget"]),
    (lambda d: d["history"]["steps"][0].__setitem__("train_loss", "low"), ["train_loss", "number", "'low'"]),
    (lambda d: d["history"]["steps"].__setitem__(0, [1, 2]), ["history", "step 0", "mapping"]),
])
def test_wrong_config_and_history_values_are_refused(tmp_path, change, words):
    _refused(_saved(tmp_path, change), *words)


def test_config_values_are_validated_as_config_errors(tmp_path):
    _refused(_saved(tmp_path, lambda d: d["config"]["model"].__setitem__("norm", "middle")), "model.norm",
             kind=ConfigError)
    _refused(_saved(tmp_path, lambda d: d["config"]["data"].__setitem__("colour", 1)), "data.colour",
             kind=ConfigError)


def test_older_formats_default_only_the_fields_added_after_them(tmp_path):
    formats = list(FORMAT_FIELDS)
    assert formats[0] == "effitrain-run-v1" and formats[-1] == RUN_FORMAT
    v1 = FORMAT_FIELDS["effitrain-run-v1"]
    later = {(s, n) for s, names in FORMAT_FIELDS[RUN_FORMAT].items() for n in names} - \
            {(s, n) for s, names in v1.items() for n in names}
    assert ("model", "position") in later

    def as_v1(d):
        d["format"] = "effitrain-run-v1"
        for section, name in later:
            d["config"][section].pop(name, None)
        d["config"]["optim"]["fused"] = True  # v1 and v2 recorded optim.fused; v3 reads it as optim.kernel
    run = Run.load(_saved(tmp_path, as_v1))
    defaults = {f"{section}.{name}": getattr(type(getattr(_run().config, section))(), name) for section, name in later}
    assert run.config == _run().config.replace(**defaults)  # the later fields took their defaults
    assert run.config.model.position == "learned"  # what a v1 file's model had (before the field existed)
    _refused(_saved(tmp_path, lambda d: [as_v1(d), d["config"]["data"].pop("vocab_size")]), "config.data.vocab_size")
    assert Run.load(_saved(tmp_path, lambda d: [as_v1(d), d["config"]["optim"].update(fused=False)])
                    ).config.optim.kernel == "foreach"  # fused=False meant the foreach AdamW
    _refused(_saved(tmp_path, lambda d: [as_v1(d), d["config"]["optim"].pop("fused")]), "config.optim.fused")
    _refused(_saved(tmp_path, lambda d: [as_v1(d), d["config"]["optim"].update(fused="yes")]), "config.optim.fused")
    # the current format records the later fields too: a file of it without one is partial
    _refused(_saved(tmp_path, _drop("config", "model", "position")), "config.model.position", "missing")


def test_every_config_field_is_in_the_current_run_format():
    """A new config field needs a new run format in `run.FORMAT_FIELDS` (so that older files may leave it out)."""
    import dataclasses
    from effitrain.config import SECTIONS
    current = FORMAT_FIELDS[RUN_FORMAT]
    for section, klass in SECTIONS.items():
        missing = {f.name for f in dataclasses.fields(klass)} - set(current[section])
        assert not missing, f"config fields {sorted(missing)} of {section} are in no run format: add a new format"


def test_runs_files_report_the_entry_in_one_line(tmp_path):
    from effitrain.lab import load_runs
    d = _run().to_dict()
    bad = copy.deepcopy(d)
    del bad["config"]["data"]["vocab_size"]
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([d, bad]))
    with pytest.raises(ValueError) as err:
        load_runs(path)
    assert "entry 1" in str(err.value) and "config.data.vocab_size" in str(err.value) and "\n" not in str(err.value)
