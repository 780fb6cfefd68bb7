"""Reference sets: runs measured on another machine, stored without weights, shown labelled."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import effitrain as et
from effitrain.lab import LivePlot
from effitrain.lab.reference import (ReferenceError, add_reference, file_name, load_reference, reference_note,
                                     reference_runs, reference_sets, save_reference, summary_rows)


@pytest.fixture(scope="module")
def runs():
    cfg = et.profile_config("smoke", budget="6steps", evals=2)
    data = et.prepare_data(cfg.data)
    return [et.train(cfg.replace(seed=s), data=data, name=f"baseline s{s}", progress=False) for s in (0, 1)]


def test_file_name_is_device_date_and_what():
    assert file_name("NVIDIA H200", "2026-12-04", "gpu baseline") == "h200-2026-12-04-gpu-baseline.json.gz"
    assert file_name("cpu", "2026-12-08", "gpu-smoke baseline") == "cpu-2026-12-08-gpu-smoke-baseline.json.gz"


def test_round_trip_keeps_runs_device_and_date(tmp_path: Path, runs):
    path = save_reference(runs, tmp_path, what="gpu baseline", profile="gpu", device="NVIDIA H200", date="2026-12-04")
    assert path.name == "h200-2026-12-04-gpu-baseline.json.gz"
    assert save_reference(runs, tmp_path, what="gpu baseline", profile="gpu", device="NVIDIA H200",
                          date="2026-12-04").read_bytes() == path.read_bytes()  # same runs, same bytes
    ref = load_reference(path)
    assert (ref.device, ref.date, ref.profile, ref.what) == ("NVIDIA H200", "2026-12-04", "gpu", "gpu baseline")
    assert ref.label == "gpu baseline, NVIDIA H200, 2026-12-04"
    assert [r.history.to_dict() for r in ref.runs] == [r.history.to_dict() for r in runs]
    assert [r.config for r in ref.runs] == [r.config for r in runs]
    assert not list(tmp_path.glob(".*tmp"))


def test_sets_filter_and_sort_newest_first_and_runs_say_where(tmp_path: Path, runs):
    save_reference(runs, tmp_path, what="gpu baseline", profile="gpu", device="NVIDIA H100", date="2026-11-30")
    save_reference(runs, tmp_path, what="gpu baseline", profile="gpu", device="NVIDIA H200", date="2026-12-04")
    save_reference(runs[:1], tmp_path, what="electra", profile="gpu", device="NVIDIA H200", date="2026-12-05")
    sets = reference_sets("gpu", "gpu baseline", tmp_path)
    assert [s.date for s in sets] == ["2026-12-04", "2026-11-30"]
    assert len(reference_sets("gpu", folder=tmp_path)) == 3 and reference_sets("cpu", folder=tmp_path) == []
    names = [r.name for r in reference_runs("gpu", "electra", tmp_path)]
    assert names == ["baseline s0 [NVIDIA H200, 2026-12-05]"]
    note = reference_note("gpu", "gpu baseline", tmp_path)
    assert note.splitlines()[0].startswith("reference: gpu baseline (gpu profile), 2 runs measured on NVIDIA H200")
    rows = summary_rows(sets)
    assert len(rows) == 4 and rows[0]["steps"] == 6 and rows[0]["val_loss"] == runs[0].summary()["val_loss_last"]


def test_no_sets_is_said_not_filled(tmp_path: Path):
    assert reference_sets("gpu", folder=tmp_path / "none") == []
    assert reference_note("gpu", "gpu baseline", tmp_path).startswith(
        "no reference runs stored for profile gpu 'gpu baseline' yet")


def test_add_reference_draws_one_labelled_band(tmp_path: Path, runs):
    save_reference(runs, tmp_path, what="gpu baseline", profile="gpu", device="NVIDIA H200", date="2026-12-04")
    plot = LivePlot(x="step", show_train=False)
    add_reference(plot, reference_sets(folder=tmp_path))
    means = [t for t in plot.figure.data if (t.meta or {}).get("kind") == "band_mean"]
    assert [t.name for t in means] == ["gpu baseline, NVIDIA H200, 2026-12-04 (mean of 2)"]
    assert len(means[0].x) > 0


def test_bad_files_are_refused_in_one_line(tmp_path: Path, runs):
    with pytest.raises(ReferenceError, match="does not exist"):
        load_reference(tmp_path / "missing.json.gz")
    (tmp_path / "plain.json.gz").write_text("not gzip")
    with pytest.raises(ReferenceError, match="plain.json.gz"):
        load_reference(tmp_path / "plain.json.gz")
    for name, doc, msg in (("other.json.gz", {"format": "x"}, "not an effitrain-reference-1 file"),
                           ("empty.json.gz", {"format": "effitrain-reference-1", "device": "d", "torch": "t",
                                              "date": "d", "profile": "gpu", "what": "w", "runs": []}, "non-empty"),
                           ("badrun.json.gz", {"format": "effitrain-reference-1", "device": "d", "torch": "t",
                                               "date": "d", "profile": "gpu", "what": "w", "runs": [{"format": 1}]},
                            "run 0")):
        with gzip.open(tmp_path / name, "wt") as f:
            json.dump(doc, f)
        with pytest.raises(ReferenceError, match=msg) as err:
            load_reference(tmp_path / name)
        assert "\n" not in str(err.value)
    with pytest.raises(ReferenceError):  # a malformed file in the folder is never skipped silently
        reference_sets(folder=tmp_path)
    with pytest.raises(ReferenceError, match="no runs"):
        save_reference([], tmp_path, what="x", profile="gpu")
