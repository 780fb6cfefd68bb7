"""The run cache: an identical rerun loads from disk; anything that changes the curve trains again."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import effitrain as et
from effitrain.lab import Panel
from effitrain.techniques.base import REGISTRY, Technique, param, register
from effitrain.train import runcache
from effitrain.train.runcache import RunCacheWarning, cached_train, run_key

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class _ScaleParams:
    scale: float = param(1.0, range=(0.5, 2.0), help="multiply the loss")


class RcScale(Technique):
    """Scale the loss (a technique for testing the run cache)."""
    name = "rc_scale"
    Params = _ScaleParams

    def loss(self, out, ctx):
        return out.loss * self.params.scale


class RcSurgery(Technique):
    """Hands the model back unchanged from on_model; the cache cannot know that, so never stores it."""
    name = "rc_surgery"

    def on_model(self, model, ctx):
        return model


class RcEvalModel(Technique):
    """Evaluates (and hands back) another model than the one trained; never stored either."""
    name = "rc_eval_model"

    def eval_model(self, model):
        return model


@pytest.fixture(scope="module", autouse=True)
def techniques():
    register(RcScale)
    yield
    REGISTRY.pop("rc_scale", None)


@pytest.fixture
def cache(smoke_data, tmp_path, monkeypatch):
    """An empty run cache (the smoke data is prepared before the cache folder moves)."""
    monkeypatch.setenv("EFFITRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(runcache.ENV_SWITCH, raising=False)
    return tmp_path / "cache" / "runs"


@pytest.fixture
def fake_train(monkeypatch):
    """The trainer replaced by one that makes a small completed run at once; returns its calls (a miss each)."""
    from effitrain.model import BertForMLM
    from effitrain.train import trainer

    calls = []

    def train(config, techniques=(), *, data=None, stop=None, callbacks=(), progress=None, name="", **kwargs):
        calls.append(config)
        run = et.Run(config=config, techniques=[t.describe() for t in techniques], device="cpu (fake)",
                     name=name or config.run.name, status="stopped" if stop is not None and stop.is_set() else "completed")
        rows = [("eval", dict(step=0, tokens=0, seconds=0.0, flops=0.0, val_loss=7.6 + config.run.seed, val_accuracy=0.0))]
        for step in (1, 2):
            rows.append(("step", dict(step=step, tokens=64 * step, seconds=0.1 * step, flops=1e6 * step,
                                      flops_analytic=1e6 * step, train_loss=7.5 - step, lr=1e-3)))
        rows.append(("eval", dict(step=2, tokens=128, seconds=0.2, flops=2e6, val_loss=6.9, val_accuracy=0.1)))
        torch.manual_seed(len(calls))
        run.model = BertForMLM(config.model, data.vocab_size)
        run.extra.update(unigram_val_loss=7.2, vocab_size=data.vocab_size)
        for kind, row in rows:
            (run.history.log_step if kind == "step" else run.history.log_eval)(**row)
            for cb in callbacks:
                cb(kind, row, run)
        for cb in callbacks:
            cb("end", run.summary(), run)
        return run

    monkeypatch.setattr(trainer, "train", train)
    return calls


def cfg_of(smoke_data, **kw):
    cfg, data = smoke_data
    return cfg.replace(**{"budget": "4steps", "evals": 2, **kw}), data


def entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def loaded(run) -> bool:
    return bool((run.extra.get("cache") or {}).get("loaded"))


def test_a_hit_returns_the_identical_run_and_replays_its_events(smoke_data, cache):
    cfg, data = cfg_of(smoke_data)
    trained_events, replayed_events = [], []
    first = cached_train(cfg, data=data, progress=False,
                         callbacks=[lambda kind, row, r: trained_events.append((kind, dict(row)))])
    assert not loaded(first) and len(entries(cache)) == 1
    again = cached_train(cfg, data=data, progress=False,
                         callbacks=[lambda kind, row, r: replayed_events.append((kind, dict(row), len(r.history.evals)))])
    assert loaded(again) and again is not first
    assert again.history.steps == first.history.steps and again.history.evals == first.history.evals
    assert again.summary()["seconds"] == first.summary()["seconds"]  # the seconds it measured
    assert again.status == "completed" and again.config == cfg and again.extra["parameters"] == first.extra["parameters"]
    info = again.extra["cache"]
    assert info["machine"] == {"host": runcache.host(), "device": first.device} and Path(info["path"]) == entries(cache)[0]
    first_sd, again_sd = first.model.state_dict(), again.model.state_dict()
    assert first_sd.keys() == again_sd.keys() and all(torch.equal(first_sd[k], again_sd[k]) for k in first_sd)
    assert again.model.training
    # the trainer's events, in its order, the history growing as they arrive; "end" carries the summary
    assert [(k, r) for k, r, _ in replayed_events[:-1]] == trained_events[:-1]
    assert [n for k, _, n in replayed_events if k == "eval"] == list(range(1, len(first.history.evals) + 1))
    kind, end, _ = replayed_events[-1]
    assert kind == "end" and end["cached"] and end["val_loss_last"] == first.summary()["val_loss_last"]
    # the run file is an ordinary run
    assert et.Run.load(entries(cache)[0] / "run.json").history.evals == first.history.evals


def test_the_key_holds_what_changes_the_curve_and_nothing_else(smoke_data):
    cfg, data = cfg_of(smoke_data)
    key = run_key(cfg, [RcScale()], data)
    same = [run_key(cfg.replace(name="renamed", profile="custom"), [RcScale()], data)]
    if not torch.cuda.is_available():  # "auto" trains on the CPU here, as "cpu" does
        same.append(run_key(cfg.replace(device="auto"), [RcScale()], data))
    assert {k.digest for k in same} == {key.digest}
    changed = [run_key(cfg, [RcScale(scale=1.5)], data), run_key(cfg, [], data),
               run_key(cfg.replace(seed=1), [RcScale()], data),
               run_key(cfg, [RcScale()], dataclasses.replace(data, key="another corpus")),
               run_key(cfg.replace(evals=3), [RcScale()], data), run_key(cfg.replace(log_every=2), [RcScale()], data),
               run_key(cfg.replace(lr=5e-4), [RcScale()], data), run_key(cfg.replace(budget="5steps"), [RcScale()], data)]
    assert len({k.digest for k in changed} | {key.digest}) == len(changed) + 1
    m = key.material
    assert m["torch"] == torch.__version__ and m["effitrain"] == et.__version__ and m["code"]
    assert m["techniques"][0]["params"] == {"scale": 1.0} and m["techniques"][0]["source"]  # this file's source
    assert "name" not in m["config"]["run"] and "profile" not in m["config"]
    assert key.folder.startswith("rc_scale-s0-")


def test_a_changed_param_seed_or_data_trains_again(smoke_data, cache, fake_train):
    cfg, data = cfg_of(smoke_data)
    assert not loaded(cached_train(cfg, [RcScale()], data=data, progress=False)) and len(fake_train) == 1
    renamed = cached_train(cfg.replace(name="my baseline"), [RcScale()], data=data, progress=False)
    assert loaded(renamed) and renamed.label == "my baseline" and len(fake_train) == 1  # a label is not a setting
    other_data = dataclasses.replace(data, key="another corpus")
    for i, (c, ts, d) in enumerate([(cfg, [RcScale(scale=1.5)], data), (cfg.replace(seed=1), [RcScale()], data),
                                    (cfg, [RcScale()], other_data), (cfg.replace(evals=3), [RcScale()], data)]):
        run = cached_train(c, ts, data=d, progress=False)
        assert run.status == "completed" and not loaded(run) and len(fake_train) == 2 + i
    assert len(entries(cache)) == 5
    assert loaded(cached_train(cfg, [RcScale(scale=1.5)], data=data, progress=False)) and len(fake_train) == 5
    forced = cached_train(cfg, [RcScale()], data=data, progress=False, force=True)
    assert not loaded(forced) and len(fake_train) == 6 and len(entries(cache)) == 5  # trained again, replacing it
    hit = cached_train(cfg, [RcScale()], data=data, progress=False)
    assert loaded(hit) and hit.extra["cache"]["id"] == forced.extra["cache"]["id"]


def _corrupt_model(folder: Path) -> None:
    (folder / "model.pt").write_bytes(b"not a torch file")


def _corrupt_run(folder: Path) -> None:
    text = (folder / "run.json").read_text()
    (folder / "run.json").write_text(text[: len(text) // 2])


def _foreign(folder: Path) -> None:
    entry = json.loads((folder / "entry.json").read_text())
    entry["key"]["config"]["optim"]["lr"] = 0.5
    (folder / "entry.json").write_text(json.dumps(entry))


def _missing_model(folder: Path) -> None:
    (folder / "model.pt").unlink()


@pytest.mark.parametrize("damage", [_corrupt_model, _corrupt_run, _foreign, _missing_model])
def test_a_corrupt_or_foreign_entry_is_trained_again_with_a_one_line_warning(smoke_data, cache, fake_train, damage):
    cfg, data = cfg_of(smoke_data)
    first = cached_train(cfg, data=data, progress=False)
    [folder] = entries(cache)
    damage(folder)
    with pytest.warns(RunCacheWarning) as caught:
        run = cached_train(cfg, data=data, progress=False)
    [w] = [w for w in caught if issubclass(w.category, RunCacheWarning)]
    message = str(w.message)
    assert "\n" not in message and str(folder) in message and "training again" in message
    assert run.status == "completed" and not loaded(run) and len(fake_train) == 2
    assert run.history.steps == first.history.steps
    with warnings.catch_warnings():
        warnings.simplefilter("error", RunCacheWarning)
        assert loaded(cached_train(cfg, data=data, progress=False))  # the entry was replaced by a whole one


def test_switched_off_or_unstorable_runs_train_and_store_nothing(smoke_data, cache, fake_train, monkeypatch):
    cfg, data = cfg_of(smoke_data)
    assert "cache" not in cached_train(cfg, data=data, progress=False, cache=False).extra
    assert "cache" not in cached_train(cfg, [RcSurgery()], data=data, progress=False).extra  # on_model: not rebuilt
    assert runcache.why_not_cached([RcSurgery()], {}) and runcache.why_not_cached([RcScale()], {}) is None
    if hasattr(Technique, "eval_model"):  # the trainer's event for what is evaluated and kept
        assert "eval_model" in runcache.why_not_cached([RcEvalModel()], {})
    odd = et.Run(config=cfg, status="completed", model=torch.nn.Linear(2, 2))
    assert runcache.store(odd, run_key(cfg, [], data)) is None  # a model the cache could not build again
    stop = threading.Event()
    stop.set()
    assert cached_train(cfg, data=data, progress=False, stop=stop).status == "stopped"  # only completed runs
    assert entries(cache) == []
    cached_train(cfg, data=data, progress=False)
    monkeypatch.setenv(runcache.ENV_SWITCH, "0")
    assert not loaded(cached_train(cfg, data=data, progress=False))  # off: not even read
    assert len(entries(cache)) == 1 and len(fake_train) == 5


def test_trim_deletes_the_least_recently_used_entries(smoke_data, cache, fake_train):
    cfg, data = cfg_of(smoke_data)
    for seed in (0, 1, 2):
        cached_train(cfg.replace(seed=seed), data=data, progress=False)
    folders = {int(p.name.split("-s")[1].split("-")[0]): p for p in entries(cache)}
    for age, seed in ((300, 0), (200, 1), (100, 2)):
        t = time.time() - age
        os.utime(folders[seed], (t, t))
    assert loaded(cached_train(cfg.replace(seed=0), data=data, progress=False))  # using it makes it recent
    size = runcache._size(folders[0])
    assert runcache.trim(cache, max_bytes=2.5 * size) == [folders[1]]
    assert sorted(p.name for p in entries(cache)) == sorted([folders[0].name, folders[2].name])


_WRITER = r"""
import json, sys, time
from pathlib import Path
import torch
from effitrain.config import Config
from effitrain.model import BertForMLM
from effitrain.train.run import Run
from effitrain.train.runcache import RunKey, store
work, root, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
run = Run.load(work / "run.json")
run.model = BertForMLM(run.config.model, json.loads((work / "vocab").read_text()))
run.model.load_state_dict(torch.load(work / "model.pt"))
key = RunKey(json.loads((work / "key.json").read_text()))
(work / f"ready-{sys.argv[4]}").touch()
while not go.exists():
    time.sleep(0.005)
for _ in range(15):
    store(run, key, replace=True, root=root)
    store(run, key, root=root)
"""


def test_two_processes_writing_the_same_entry_leave_a_valid_one(smoke_data, cache, fake_train, tmp_path):
    from effitrain.train import trainer
    cfg, data = cfg_of(smoke_data)
    run = trainer.train(cfg, data=data)
    key = run_key(cfg, [], data)
    work = tmp_path / "work"
    work.mkdir()
    run.save(work / "run.json")
    torch.save(run.model.state_dict(), work / "model.pt")
    (work / "key.json").write_text(json.dumps(key.material))
    (work / "vocab").write_text(str(data.vocab_size))
    script = work / "writer.py"
    script.write_text(_WRITER)
    cache.mkdir(parents=True, exist_ok=True)
    go = work / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, str(script), str(work), str(cache), str(go), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    try:
        deadline = time.monotonic() + 240
        while not all((work / f"ready-{i}").exists() for i in (0, 1)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        go.touch()
        reads = hits = 0
        with warnings.catch_warnings():
            warnings.simplefilter("error", RunCacheWarning)  # a reader never sees half an entry
            while any(p.poll() is None for p in procs):
                got, problem = runcache.lookup(key, cfg, root=cache)
                assert problem is None
                reads, hits = reads + 1, hits + (got is not None)
        outputs = [p.communicate(timeout=60)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert reads > 0
    got, problem = runcache.lookup(key, cfg, root=cache)
    assert problem is None and got is not None and got.history.evals == run.history.evals
    assert [p.name for p in cache.iterdir()] == [key.folder]  # one entry, no temporary folders left


def test_panel_uses_the_cache_unless_told_to_train_again(smoke_data, cache, capsys):
    cfg, data = cfg_of(smoke_data, budget="1steps", evals=1)
    panel = Panel(base_config=cfg, data=data)
    assert panel.use_cache.value is True
    [trained] = panel.run_now(blocking=True)
    other = Panel(base_config=cfg, data=data)
    [cached] = other.run_now(blocking=True)
    assert not loaded(trained) and loaded(cached) and "loaded from the run cache" in capsys.readouterr().out
    assert cached.history.evals == trained.history.evals and other.runs == [cached]
    vals = [t for t in other.plot.figure.data if (t.meta or {}).get("kind") == "val"]
    assert [len(t.x) for t in vals] == [2]  # the cached run is drawn like a trained one
    # the panel that holds the run does not add its cache hit again: one seed, not two
    assert panel.run_now(blocking=True) == [] and panel.runs == [trained]
    assert "not added" in panel.status.value and "already shown" in capsys.readouterr().out
    assert len([t for t in panel.plot.figure.data if (t.meta or {}).get("kind") == "val"]) == 1
    panel.use_cache.value = False
    [again] = panel.run_now(blocking=True)
    assert again.status == "completed" and not loaded(again)


def test_code_fingerprint_covers_what_can_change_a_curve(tmp_path, monkeypatch):
    import shutil
    from effitrain.train import runstore as rc

    copy = tmp_path / "effitrain"
    shutil.copytree(rc._PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(rc, "_PACKAGE", copy)
    before = rc.code_fingerprint.__wrapped__()
    for rel in ("train/finetune.py", "stats.py", "lab/compare.py", "cli.py"):  # evaluation, statistics, UI
        (copy / rel).write_text((copy / rel).read_text() + "\n# edited\n")
    assert rc.code_fingerprint.__wrapped__() == before
    (copy / "train/trainer.py").write_text((copy / "train/trainer.py").read_text() + "\n# edited\n")
    assert rc.code_fingerprint.__wrapped__() != before


@pytest.mark.parametrize("value", ["-1", "abc", "0", "nan", "inf"])
def test_a_bad_cache_size_is_refused_before_training(smoke_data, cache, fake_train, monkeypatch, value):
    """EFFITRAIN_RUN_CACHE_GB=-1 once let the trim delete every cached run: refused in one line, before
    anything trains or is deleted."""
    cfg, data = cfg_of(smoke_data)
    cached_train(cfg, data=data, progress=False)
    monkeypatch.setenv(runcache.ENV_SIZE, value)
    with pytest.raises(et.ConfigError, match=r"EFFITRAIN_RUN_CACHE_GB must be a positive number of GiB .*got"):
        cached_train(cfg.replace(seed=1), data=data, progress=False)
    with pytest.raises(et.ConfigError, match="EFFITRAIN_RUN_CACHE_GB"):
        runcache.trim()
    assert len(entries(cache)) == 1 and len(fake_train) == 1  # nothing trained, nothing deleted
    monkeypatch.setenv(runcache.ENV_SIZE, "0.5")
    assert runcache.size_limit() == 0.5 * 2**30


def test_a_store_that_fails_mid_write_keeps_the_run(smoke_data, cache, fake_train, monkeypatch):
    """torch.save on a full disk raises RuntimeError, not OSError: the run is returned all the same."""
    cfg, data = cfg_of(smoke_data)

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(runcache, "store", full_disk)
    with pytest.warns(RunCacheWarning, match="could not store"):
        run = cached_train(cfg, data=data, progress=False)
    assert run.status == "completed" and run.summary()["val_loss_last"] == pytest.approx(6.9)


def test_et_train_keeps_its_run_so_an_identical_cached_train_loads_it(smoke_data, cache, fake_train, monkeypatch):
    cfg, data = cfg_of(smoke_data)
    first = et.train(cfg, data=data, progress=False)
    assert not loaded(first) and len(fake_train) == 1 and len(entries(cache)) == 1
    again = et.cached_train(cfg, data=data, progress=False)
    assert loaded(again) and len(fake_train) == 1  # not trained twice
    assert torch.equal(next(again.model.parameters()), next(first.model.parameters()))
    et.train(cfg, data=data, progress=False)  # et.train always trains (and replaces the entry)
    assert len(fake_train) == 2 and len(entries(cache)) == 1
    monkeypatch.setenv(runcache.ENV_SWITCH, "0")
    et.train(cfg.replace(seed=1), data=data, progress=False)
    assert len(entries(cache)) == 1  # switched off: kept nowhere


def test_a_hit_on_a_cache_that_cannot_be_written_loads_the_run(smoke_data, cache, fake_train, monkeypatch):
    """A read-only cache (the tests may run as root, so writes fail by patching): a hit touches
    nothing it needs to write, and a miss trains and warns that it could not store."""
    cfg, data = cfg_of(smoke_data)
    cached_train(cfg, data=data, progress=False)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runcache.os, "utime", read_only)
    monkeypatch.setattr(runcache.os, "mkdir", read_only)
    assert loaded(cached_train(cfg, data=data, progress=False)) and len(fake_train) == 1
    with pytest.warns(RunCacheWarning, match="could not store"):
        run = cached_train(cfg.replace(seed=1), data=data, progress=False)
    assert run.status == "completed" and len(fake_train) == 2
