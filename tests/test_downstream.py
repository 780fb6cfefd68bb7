"""Downstream evaluation: the sotu-party task, tasks from local labelled files, and evaluate_downstream
(fine-tuning and a linear probe over seeds) on a tiny pre-trained smoke model."""
import json
import math
import random

import pandas as pd
import pytest
import torch

import effitrain as et
from effitrain.data.downstream import (MAIN_PARTIES, OTHER_PARTY, TaskError, downstream_task, sotu_party_task,
                                       task_from_file)
from effitrain.model import BertForMLM
from effitrain.train.finetune import (DownstreamResult, downstream_table, evaluate_downstream, finetune, mean_pooled,
                                      random_init, random_init_floor)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest)


@pytest.fixture(scope="module")
def pretrained(smoke):
    cfg, data = smoke
    torch.manual_seed(0)
    return et.train(cfg.replace(budget="20steps", evals=1), data=data).model


def _easy_rows(n: int = 120, seed: int = 0) -> list[dict]:
    """One word decides the label: 'zebra' → animal, 'tractor' → machine; the rest is shared filler."""
    rng = random.Random(seed)
    filler = "the of and to in a that for it with as was on be by this we have are".split()
    rows = []
    for i in range(n):
        key, lab = ("zebra", "animal") if i % 2 else ("tractor", "machine")
        words = rng.sample(filler, 8)
        words.insert(rng.randrange(len(words) + 1), key)
        rows.append({"body": " ".join(words) + f" {i}", "kind": lab, "extra": i})
    return rows


def _write(path, rows, fmt):
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif fmt == "tsv":
        pd.DataFrame(rows).to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    return path


# -- sotu-party ----------------------------------------------------------------------------------
def test_party_task_is_split_by_speech_and_held_out_of_pretraining(smoke):
    _, data = smoke
    task = sotu_party_task(data)
    assert task.labels == [*MAIN_PARTIES, OTHER_PARTY] and task.num_classes >= 2
    assert set(task.train_y.tolist()) == set(task.test_y.tolist()) == {0, 1, 2}  # every class on both sides
    assert not set(task.train_docs) & set(task.test_docs)  # no speech in both
    cols = data.corpus[:]
    pretrain_docs = {d for d, r in zip(cols["doc"], cols["role"]) if r in ("train", "val")}
    pretrain_texts = {t for t, r in zip(cols["text"], cols["role"]) if r in ("train", "val")}
    assert not pretrain_docs & (set(task.train_docs) | set(task.test_docs))
    assert not pretrain_texts & (set(task.train_texts) | set(task.test_texts))
    counts = task.class_counts()
    assert all(v > 0 for side in ("train", "test") for v in counts[side].values())
    assert 0 < task.majority_accuracy() < 0.6
    # the same speeches as sotu-era: both tasks are the held-out documents
    era = downstream_task("sotu-era", data)
    assert set(era.train_docs) | set(era.test_docs) == set(task.train_docs) | set(task.test_docs)


def test_registry_names_and_unknown_name(smoke, tmp_path):
    _, data = smoke
    assert downstream_task("sotu-party", data, seq_len=32).train_ids.shape[1] == 32
    with pytest.raises(TaskError) as err:
        downstream_task("no-such-task", data)
    assert "\n" not in str(err.value) and "sotu-party" in str(err.value)


# -- local files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "tsv", "json", "parquet"])
def test_local_file_task_round_trips_the_named_columns(smoke, tmp_path, fmt):
    _, data = smoke
    rows = _easy_rows(60)
    path = _write(tmp_path / f"easy.{fmt}", rows, fmt)
    task = downstream_task(path, data, text="body", label="kind", test_fraction=0.25)
    assert task.labels == ["animal", "machine"]  # sorted
    assert len(task.train_ids) + len(task.test_ids) == 60 and len(task.test_ids) == 16  # round(0.25 · 30) per class
    truth = {r["body"]: task.labels.index(r["kind"]) for r in rows}
    for texts, y in ((task.train_texts, task.train_y), (task.test_texts, task.test_y)):
        assert [truth[t] for t in texts] == y.tolist()
    assert not set(task.train_texts) & set(task.test_texts)
    assert task.train_ids.shape[1] == data.config.seq_len and int(task.train_ids[0, 0]) == et.data.CLS


def test_numeric_labels_are_sorted_numerically(smoke, tmp_path):
    _, data = smoke
    rows = [{"text": f"row {i} words", "label": [10, 2, 1][i % 3]} for i in range(30)]
    task = task_from_file(_write(tmp_path / "n.jsonl", rows, "jsonl"), data.tokenizer, 16)
    assert task.labels == ["1", "2", "10"]


def test_file_split_is_deterministic_and_keyed_on_content(smoke, tmp_path):
    _, data = smoke
    rows = _easy_rows(80)
    a = task_from_file(_write(tmp_path / "a.csv", rows, "csv"), data.tokenizer, 32, text="body", label="kind")
    b = task_from_file(_write(tmp_path / "b.csv", rows, "csv"), data.tokenizer, 32, text="body", label="kind")
    assert a.test_texts == b.test_texts and torch.equal(a.train_ids, b.train_ids)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    c = task_from_file(_write(tmp_path / "c.jsonl", shuffled, "jsonl"), data.tokenizer, 32, text="body", label="kind")
    assert set(c.test_texts) == set(a.test_texts) and set(c.train_texts) == set(a.train_texts)
    other = task_from_file(tmp_path / "a.csv", data.tokenizer, 32, text="body", label="kind", seed=1)
    assert set(other.test_texts) != set(a.test_texts)  # the seed chooses another split


def test_duplicate_text_is_never_on_both_sides(smoke, tmp_path):
    _, data = smoke
    rows = [{"text": f"text number {i % 10}", "label": "ab"[i % 10 % 2]} for i in range(40)]
    task = task_from_file(_write(tmp_path / "dup.csv", rows, "csv"), data.tokenizer, 16, test_fraction=0.4)
    assert not set(task.train_texts) & set(task.test_texts) and len(task.test_texts) > 0


def _bad_files(tmp_path):
    good = _easy_rows(20)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("body,kind\n")
    (tmp_path / "notes.xlsx").write_text("x")
    (tmp_path / "broken.json").write_text("{not json")
    return {
        "missing file": (tmp_path / "nope.csv", {}, "does not exist"),
        "unknown format": (tmp_path / "notes.xlsx", {}, "unknown format"),
        "empty file": (tmp_path / "empty.csv", {}, "empty"),
        "header only": (tmp_path / "header.csv", {"text": "body", "label": "kind"}, "empty"),
        "unreadable": (tmp_path / "broken.json", {}, "could not be read as json (line 1"),
        "not records": (_write(tmp_path / "obj.json", {"rows": good}, "json"), {}, "holds a JSON dict"),
        "no text column": (_write(tmp_path / "t.csv", good, "csv"), {"label": "kind"},
                           "no text column 'text' (columns: body, kind, extra)"),
        "no label column": (_write(tmp_path / "l.jsonl", good, "jsonl"), {"text": "body"},
                            "no label column 'label' (columns: body, kind, extra)"),
        "one class": (_write(tmp_path / "one.csv", [{**r, "kind": "x"} for r in good], "csv"),
                      {"text": "body", "label": "kind"}, "only one class"),
        "tiny class": (_write(tmp_path / "tiny.csv", good + [{"body": "lonely", "kind": "rare", "extra": 0}], "csv"),
                       {"text": "body", "label": "kind"}, "'rare' (1)"),
        "non-string text": (_write(tmp_path / "num.jsonl", good + [{"body": 5, "kind": "animal", "extra": 0}], "jsonl"),
                            {"text": "body", "label": "kind"}, "row 20 of text column 'body' is int"),
        "missing label": (_write(tmp_path / "nolab.jsonl", good + [{"body": "x y", "kind": None, "extra": 0}], "jsonl"),
                          {"text": "body", "label": "kind"}, "row 20 has no label"),
    }


def test_each_bad_file_is_a_one_line_error_naming_the_file(smoke, tmp_path):
    _, data = smoke
    for what, (path, kw, expected) in _bad_files(tmp_path).items():
        with pytest.raises(TaskError) as err:
            downstream_task(path, data, **kw)
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg and expected in msg, (what, msg)


# -- evaluate_downstream -------------------------------------------------------------------------
def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_finetune_gives_per_seed_results_and_leaves_the_model_untouched(smoke, pretrained, tmp_path):
    _, data = smoke
    task = task_from_file(_write(tmp_path / "e.csv", _easy_rows(80), "csv"), data.tokenizer, 24,
                          text="body", label="kind")
    before, mode = _state(pretrained), pretrained.training
    r = evaluate_downstream(pretrained, task, method="finetune", seeds=(0, 1), steps=6, batch_size=8)
    after = _state(pretrained)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert pretrained.training == mode
    assert isinstance(r, DownstreamResult) and r.method == "finetune" and r.seeds == [0, 1]
    assert len(r.per_seed) == len(r.seconds) == len(r.train_accuracy) == 2 and all(s > 0 for s in r.seconds)
    assert r.accuracy == pytest.approx(sum(r.per_seed) / 2) and math.isfinite(r.ci) and r.ci >= 0
    assert r.majority == pytest.approx(task.majority_accuracy())
    d = r.to_dict()
    assert d["per_seed"] == r.per_seed and d["task"] == "e.csv" and json.dumps(d)
    again = evaluate_downstream(pretrained, task, method="finetune", seeds=(0,), steps=6, batch_size=8)
    assert again.per_seed == r.per_seed[:1] and math.isnan(again.ci)  # deterministic; one seed has no interval


def test_probe_features_mask_out_padding(smoke, pretrained):
    _, data = smoke
    ids = et.data.downstream.encode(data.tokenizer, ["the people of the united states"], 16)
    longer = torch.cat([ids, torch.zeros(1, 16, dtype=torch.long)], 1)  # the same row with 16 more PAD
    a, b = mean_pooled(pretrained.encoder, ids), mean_pooled(pretrained.encoder, longer)
    assert torch.allclose(a, b, atol=1e-5)


def test_probe_learns_a_one_word_rule_and_is_deterministic(smoke, pretrained, tmp_path):
    _, data = smoke
    task = task_from_file(_write(tmp_path / "e.csv", _easy_rows(200), "csv"), data.tokenizer, 24,
                          text="body", label="kind")
    before = _state(pretrained)
    r = evaluate_downstream(pretrained, task, method="probe", seeds=(0, 1, 2))
    assert all(torch.equal(before[k], v) for k, v in _state(pretrained).items())
    assert r.majority <= 0.55 and r.accuracy >= 0.9, r  # fails if features or the probe are broken
    assert r.per_seed == evaluate_downstream(pretrained, task, method="probe", seeds=(0, 1, 2)).per_seed


def test_probe_beats_the_majority_class_on_sotu_era(smoke, pretrained):
    _, data = smoke
    task = downstream_task("sotu-era", data, seq_len=32)
    r = evaluate_downstream(pretrained, task, method="probe", seeds=(0, 1), steps=150)
    assert r.n_train == len(task.train_ids) and len(r.per_seed) == 2
    assert r.accuracy > r.majority + 0.05, r


def test_downstream_table_rows_are_model_task_method(smoke, pretrained, tmp_path):
    cfg, data = smoke
    task = task_from_file(_write(tmp_path / "e.csv", _easy_rows(60), "csv"), data.tokenizer, 16,
                          text="body", label="kind")
    fresh = BertForMLM(cfg.model, data.vocab_size)
    df = downstream_table({"pretrained": pretrained, "random": fresh}, [task], methods=("probe", "finetune"),
                          seeds=(0, 1), steps=4, batch_size=8)
    assert list(df[["model", "method"]].itertuples(index=False, name=None)) == [
        ("pretrained", "probe"), ("pretrained", "finetune"), ("random", "probe"), ("random", "finetune")]
    assert {"accuracy", "± 95%", "majority"} <= set(df.columns) and len(df.attrs["results"]) == 4


def test_bad_method_and_model(smoke, pretrained):
    _, data = smoke
    task = downstream_task("sotu-era", data, seq_len=16)
    with pytest.raises(ValueError, match="method"):
        evaluate_downstream(pretrained, task, method="knn")
    with pytest.raises(TypeError, match="encoder"):
        evaluate_downstream(torch.nn.Linear(2, 2), task, method="probe")


def test_downstream_groups_intervals_over_pretraining_seeds_and_the_speedup(smoke):
    from effitrain.lab import tables
    from effitrain.model import BertForMLM

    cfg, data = smoke
    task = et.downstream_task("sotu-era", data)
    short = cfg.replace(**{"budget": "4steps", "run.evals": 1})
    runs = [et.train(short.replace(seed=s), data=data, progress=False) for s in range(2)]
    torch.manual_seed(0)
    df = tables.downstream_groups({"pre": runs, "init": [BertForMLM(cfg.model, data.vocab_size)]}, [task],
                                  methods=("probe",), steps={"probe": 20})
    assert list(df.index) == ["pre", "init"] and df.loc["pre", "seeds"] == 2
    assert df.loc["init", "train FLOPs"] == 0 and df.loc["pre", "FLOPs ÷ baseline"] == 1.0
    assert 0 < df.loc["pre", "sotu-era probe"] <= 1 and df.loc["pre", "sotu-era probe ±"] >= 0
    assert math.isnan(df.loc["init", "sotu-era probe ±"])  # one seed: no interval
    assert df.loc["pre", "speed-up to match"] == "1.00×"
    assert df.loc["init", "speed-up to match"] == "not matched"  # no FLOPs: never a ratio
    assert df.loc["pre", "verdict"] == "baseline" and "no interval" in df.loc["init", "verdict"]
    again = tables.downstream_groups({"pre": runs, "same": runs}, [task], methods=("probe",), steps={"probe": 20})
    assert again.loc["same", "Δ sotu-era probe"] == "+0.000 [+0.000, +0.000]"  # paired by seed: exactly 0
    assert again.loc["same", "verdict"].startswith("no effect beyond ±0.000")
    with pytest.raises(ValueError, match="baseline"):
        tables.downstream_groups({"pre": runs}, [task], methods=("probe",), baseline="nope")
    with pytest.raises(ValueError, match="judge"):
        tables.downstream_groups({"pre": runs}, [task], methods=("probe",), judge=("sst2", "probe"))


# -- choosing the fine-tuning learning rate on a validation split ----------------------------------
def test_split_validation_keeps_documents_whole_and_never_touches_the_test_split(smoke):
    _, data = smoke
    task = downstream_task("sotu-era", data, seq_len=16)
    fit, val = task.split_validation(0.2)
    assert torch.equal(fit.test_ids, task.test_ids) and torch.equal(fit.test_y, task.test_y)
    assert torch.equal(val.train_ids, fit.train_ids)
    assert len(fit.train_ids) + len(val.test_ids) == len(task.train_ids) and len(val.test_ids) > 0
    assert not set(fit.train_docs) & set(val.test_docs)  # whole speeches on one side
    assert set(fit.train_docs) | set(val.test_docs) == set(task.train_docs)
    again, _ = task.split_validation(0.2)
    assert torch.equal(again.train_ids, fit.train_ids)  # deterministic
    with pytest.raises(ValueError, match="validation fraction"):
        task.split_validation(1.0)


def test_finetune_chooses_the_rate_by_validation_accuracy(smoke, pretrained, tmp_path):
    _, data = smoke
    task = task_from_file(_write(tmp_path / "e.csv", _easy_rows(120), "csv"), data.tokenizer, 24,
                          text="body", label="kind")
    r = evaluate_downstream(pretrained, task, method="finetune", seeds=(0,), steps=30, batch_size=16,
                            lr=(1e-7, 3e-3))
    assert r.settings["lr"] == [1e-7, 3e-3] and r.chosen_lr == [3e-3]  # 1e-7 cannot learn the rule in 30 steps
    assert r.val_accuracy[0] > 0.8 and len(r.seconds) == 1
    fit, val = task.split_validation()
    direct = finetune(pretrained, fit, steps=30, batch_size=16, lr=3e-3, seed=0, validation=val)
    assert r.per_seed == [direct.accuracy] and r.val_accuracy == [direct.val_accuracy]
    one = evaluate_downstream(pretrained, task, method="finetune", seeds=(0,), steps=30, batch_size=16, lr=3e-3)
    assert one.chosen_lr == [3e-3] and one.val_accuracy == []  # one rate: the whole training split, no choice
    with pytest.raises(ValueError, match="lr"):
        evaluate_downstream(pretrained, task, method="finetune", lr=(1e-3, -1.0))
    with pytest.raises(ValueError, match="probe takes one"):
        evaluate_downstream(pretrained, task, method="probe", lr=(1e-3, 1e-2))


def test_probe_features_are_computed_once_per_row_across_tasks(smoke, pretrained, monkeypatch):
    from effitrain.train import finetune as ft

    _, data = smoke
    era, party = downstream_task("sotu-era", data, seq_len=16), downstream_task("sotu-party", data, seq_len=16)
    rows = []
    real = ft.mean_pooled
    monkeypatch.setattr(ft, "mean_pooled", lambda enc, ids, **kw: rows.append(len(ids)) or real(enc, ids, **kw))
    cache: dict = {}
    a = ft.pooled_rows(pretrained.encoder, era.train_ids, cache)
    assert torch.allclose(a, real(pretrained.encoder, era.train_ids), atol=1e-5)
    distinct = len({r.numpy().tobytes() for r in torch.cat([era.train_ids, era.test_ids, party.train_ids,
                                                            party.test_ids])})
    for t in (era, party):
        evaluate_downstream(pretrained, t, method="probe", seeds=(0,), steps=5, feature_cache=cache)
    assert sum(rows) == distinct < len(era.train_ids) + len(era.test_ids) + len(party.train_ids) + len(party.test_ids)
    plain = evaluate_downstream(pretrained, party, method="probe", seeds=(0,), steps=5)
    shared = evaluate_downstream(pretrained, party, method="probe", seeds=(0,), steps=5, feature_cache=cache)
    assert shared.per_seed == pytest.approx(plain.per_seed, abs=2e-3)


def test_subset_is_smaller_deterministic_and_keeps_the_split(smoke):
    _, data = smoke
    task = downstream_task("sotu-era", data, seq_len=16)
    small = task.subset(train=200, test=100)
    assert len(small.train_ids) == 200 and len(small.test_ids) == 100 and small.labels == task.labels
    assert set(small.train_texts) <= set(task.train_texts) and set(small.test_texts) <= set(task.test_texts)
    assert set(small.test_docs) <= set(task.test_docs) and not set(small.train_docs) & set(small.test_docs)
    again = task.subset(train=200, test=100)
    assert small.train_texts == again.train_texts and torch.equal(small.test_y, again.test_y)
    assert len(task.subset(test=50).train_ids) == len(task.train_ids)
    with pytest.raises(ValueError, match="train must be a positive"):
        task.subset(train=0)


# -- what a user of the judge sees: the random-init floor, honest seconds, a progress bar ---------
def test_random_init_floor_in_one_call_and_the_paired_gain(smoke, pretrained, tmp_path):
    cfg, data = smoke
    task = task_from_file(_write(tmp_path / "e.csv", _easy_rows(120), "csv"), data.tokenizer, 24,
                          text="body", label="kind")
    rng = torch.get_rng_state()
    r = evaluate_downstream(pretrained, task, method="probe", seeds=(0, 1), steps=30, floor=True)
    assert torch.equal(rng, torch.get_rng_state())  # the random inits leave the global RNG alone
    assert isinstance(r.floor, DownstreamResult) and r.floor.seeds == [0, 1] and r.floor.settings == r.settings
    assert r.gain == pytest.approx(sum(a - b for a, b in zip(r.per_seed, r.floor.per_seed)) / 2)
    assert math.isfinite(r.gain_ci) and "random init" in str(r) and "gain" in str(r)
    # the same floor from the config alone, or from the model's shape; one fresh init per seed
    by_config = random_init_floor(cfg, task, method="probe", seeds=(0, 1), steps=30)
    assert by_config.per_seed == r.floor.per_seed and by_config.accuracy == r.floor.accuracy
    assert random_init_floor(pretrained, task, method="probe", seeds=(0, 1), steps=30).per_seed == by_config.per_seed
    a, b = random_init(cfg, 0), random_init(cfg, 1)
    assert torch.equal(a.encoder.tok.weight, random_init(cfg, 0).encoder.tok.weight)
    assert not torch.equal(a.encoder.tok.weight, b.encoder.tok.weight)
    assert r.to_dict()["floor"]["per_seed"] == r.floor.per_seed and json.dumps(r.to_dict())
    df = downstream_table({"pretrained": pretrained}, [task], methods=("probe",), seeds=(0, 1), steps=30, floor=True)
    assert df.loc[0, "random init"] == pytest.approx(r.floor.accuracy) and df.loc[0, "gain"] == pytest.approx(r.gain)
    with pytest.raises(ValueError, match="floor"):
        random_init_floor(cfg, task, method="probe", floor=True)


def test_probe_seconds_include_the_feature_pass(smoke, pretrained, monkeypatch):
    import time

    from effitrain.train import finetune as ft

    _, data = smoke
    task = downstream_task("sotu-era", data, seq_len=16).subset(train=64, test=32)
    real = ft.mean_pooled

    def slow(*a, **kw):  # a feature pass that takes at least 0.2 s
        time.sleep(0.1)
        return real(*a, **kw)

    monkeypatch.setattr(ft, "mean_pooled", slow)  # called twice: training and test rows
    r = evaluate_downstream(pretrained, task, method="probe", seeds=(0, 1), steps=5)
    assert r.feature_seconds >= 0.2 and all(s >= r.feature_seconds for s in r.seconds), r.seconds
    df = downstream_table({"m": pretrained}, [task], methods=("probe",), seeds=(0, 1), steps=5)
    assert df.loc[0, "seconds"] >= 0.2


def test_finetune_shows_a_progress_bar_that_can_be_turned_off(smoke, pretrained, tmp_path, capsys):
    _, data = smoke
    task = task_from_file(_write(tmp_path / "e.csv", _easy_rows(60), "csv"), data.tokenizer, 16,
                          text="body", label="kind")
    quiet = evaluate_downstream(pretrained, task, method="finetune", seeds=(0,), steps=4, batch_size=8, lr=1e-3,
                                progress=False)
    assert capsys.readouterr().err == ""
    shown = evaluate_downstream(pretrained, task, method="finetune", seeds=(0,), steps=4, batch_size=8, lr=1e-3)
    assert "fine-tune e.csv" in capsys.readouterr().err
    assert shown.per_seed == quiet.per_seed  # the bar changes nothing


# -- sotu-order ------------------------------------------------------------------------------------
def test_order_task_shows_both_classes_the_same_words_split_by_speech(smoke):
    from effitrain.data.downstream import SEP, _order_rows

    _, data = smoke
    task = downstream_task("sotu-order", data, seq_len=32)
    assert task.labels == ["spoken", "shuffled"] and task.train_ids.shape[1] == 32
    assert set(task.train_y.tolist()) == set(task.test_y.tolist()) == {0, 1}
    assert 0.4 < task.train_y.float().mean() < 0.6 and task.majority_accuracy() < 0.6
    assert not set(task.train_docs) & set(task.test_docs)
    cols = data.corpus[:]
    assert not {d for d, r in zip(cols["doc"], cols["role"]) if r != "downstream"} & set(task.train_docs)
    assert all(SEP in row.tolist() for row in task.train_ids)  # whole words only: nothing cut after the shuffle
    text = "we hold these truths to be self evident that all men are created equal and endowed " * 3
    spoken = _order_rows(data.tokenizer, text, 32, False, text)
    shuffled = _order_rows(data.tokenizer, text, 32, True, text)
    assert sorted(spoken.split()) == sorted(shuffled.split()) and spoken != shuffled  # the same bag of words
    assert text.startswith(spoken) and len(data.tokenizer.encode(spoken, add_special_tokens=False).ids) <= 30
    assert shuffled == _order_rows(data.tokenizer, text, 32, True, text)  # deterministic
    again = downstream_task("sotu-order", data, seq_len=32)
    assert torch.equal(again.train_ids, task.train_ids) and torch.equal(again.test_y, task.test_y)


def test_a_file_whose_texts_all_carry_two_labels_is_refused_in_one_line(smoke, tmp_path):
    _, data = smoke
    path = tmp_path / "dup.csv"
    path.write_text("text,label\n" + "".join(f"paragraph {i},a\nparagraph {i},b\n" for i in range(30)))
    with pytest.raises(TaskError, match=r"no test rows for class 'a', 'b': a text that occurs under two labels"):
        downstream_task(path, data)


def test_a_model_with_a_smaller_vocabulary_than_the_task_is_refused_naming_the_tokenizers(smoke):
    from effitrain.train.finetune import random_init

    cfg, data = smoke
    task = downstream_task("sotu-era", data).subset(64, 32)
    small = random_init((cfg.model, 100), seed=0)
    with pytest.raises(ValueError, match=r"the model and the task use different tokenizers"):
        evaluate_downstream(small, task, method="probe", seeds=(0,), progress=False)
