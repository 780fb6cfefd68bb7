"""The `effitrain` command line: train / bench / lab, JSON output and one-line errors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from effitrain import cli
from effitrain.techniques import REGISTRY, Technique, param, register


@dataclass(frozen=True)
class _Params:
    factor: float = param(1.0, range=(0.5, 2.0), help="multiply the loss by this")


class CliTest(Technique):
    """Scale the loss (a technique for testing the command line)."""
    name = "cli-test"
    Params = _Params

    def loss(self, out, ctx):
        return out.loss * self.params.factor


@pytest.fixture(autouse=True)
def cli_technique():
    register(CliTest)
    yield
    REGISTRY.pop("cli-test", None)

SUMMARY_KEYS = {"steps", "tokens", "seconds", "flops_measured", "flops_analytic", "train_loss_first",
                "train_loss_last", "val_loss_first", "val_loss_last", "val_accuracy_last", "device", "profile"}
REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("EFFITRAIN_CACHE", "/tmp/etcache")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("effitrain: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_train_json_last_line(capsys):
    code = cli.main(["train", "--profile", "smoke", "--budget", "20steps", "--json", "--no-cache"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert SUMMARY_KEYS <= set(summary)
    assert summary["steps"] == 20
    assert summary["profile"] == "smoke"
    assert summary["tokens"] > 0 and summary["seconds"] > 0
    assert summary["flops_measured"] > 0 and summary["flops_analytic"] > 0
    assert math.isfinite(summary["val_loss_last"]) and summary["train_loss_last"] < summary["train_loss_first"]
    assert summary["context_gain"] == pytest.approx(summary["unigram_val_loss"] - summary["val_loss_last"])
    assert 4.0 < summary["unigram_val_loss"] < 8.0 and summary["cached"] is False
    assert "context gain" in out and "unigram baseline" in out
    assert "Traceback" not in err


def test_train_loads_an_identical_run_from_the_cache_unless_no_cache(capsys, smoke_data, fresh_cache):
    args = ["train", "--profile", "smoke", "--budget", "3steps", "--json"]
    summaries, outs = [], []
    for extra in ([], [], ["--no-cache"]):
        assert cli.main(args + extra) == 0
        out, err = capsys.readouterr()
        summaries.append(json.loads(out.strip().splitlines()[-1]))
        outs.append((out, err))
    first, hit, retrained = summaries
    assert [s["cached"] for s in summaries] == [False, True, False]
    assert hit["val_loss_last"] == first["val_loss_last"] and hit["seconds"] == first["seconds"]
    assert hit["context_gain"] == first["context_gain"] and math.isfinite(hit["context_gain"])
    assert "loaded from the run cache" in outs[1][0] and "run cache: baseline s0 loaded from" in outs[1][1]
    assert retrained["steps"] == 3 and "loaded from the run cache" not in outs[2][0]


def test_bad_budget_is_one_line_error_naming_the_field(capsys):
    assert cli.main(["train", "--profile", "smoke", "--budget", "-5s"]) == 2
    out, err = capsys.readouterr()
    line = _one_line_error(err)
    assert "budget" in line and "-5" in line
    assert out == ""


def test_unknown_preset_is_one_line_error_naming_the_field(capsys):
    assert cli.main(["train", "--profile", "smoke", "--preset", "huge", "--budget", "2steps"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "model.preset" in line and "huge" in line


def test_unknown_preset_via_python_m():
    proc = subprocess.run([sys.executable, "-m", "effitrain.cli", "train", "--profile", "smoke", "--preset", "huge"],
                          capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "model.preset" in _one_line_error(proc.stderr)


@pytest.mark.parametrize("argv, words", [
    (["train", "--profile", "laptop"], ["profile", "laptop"]),
    (["train", "--profile", "smoke", "--seed", "-1"], ["run.seed"]),
    (["train", "--profile", "smoke", "--seed", "99999999999999999999999"], ["run.seed", "2147483647"]),
    (["train", "--profile", "smoke", "--seed", "4294967297"], ["run.seed", "2147483647"]),
    (["train", "--profile", "smoke", "--precision", "fp8"], ["run.precision", "fp8"]),
    (["train", "--profile", "smoke", "--corpus", "/no/such/corpus.txt"], ["data.corpus"]),
    (["train", "--profile", "smoke", "--frobnicate"], ["unrecognized", "--frobnicate"]),
    (["bench", "--preset", "tiny", "--steps", "0"], ["--steps"]),
    (["bench", "--preset", "tiny", "--seq-len", "4096"], ["seq_len"]),
    (["bench", "--profile", "smoke", "--attention", "flash"], ["model.attention", "sdpa, math"]),
    (["bench", "--profile", "smoke", "--optimizer-kernel", "apex"], ["optim.kernel", "for-loop"]),
    (["bench", "--profile", "smoke", "--hidden", "-3"], ["model.hidden"]),
    (["bench", "--profile", "cpu", "--precision", "fp16"], ["fp16", "CUDA"]),
    (["nonsense"], ["nonsense"]),
    (["train", "--profile", "smoke", "--technique", "no-such-technique"], ["unknown technique", "no-such-technique"]),
    (["train", "--profile", "smoke", "--technique", "cli-test:factor"], ["name=value", "factor"]),
    (["train", "--profile", "smoke", "--technique", "cli-test:factor=9"], ["cli-test.factor", "[0.5, 2.0]"]),
    (["train", "--profile", "smoke", "--technique", "cli-test:speed=2"], ["cli-test", "parameters: factor"]),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, words):
    assert cli.main(argv) == 2
    line = _one_line_error(capsys.readouterr().err)
    for w in words:
        assert w in line


def test_diverged_run_exits_1_with_its_message(capsys, monkeypatch):
    import effitrain
    from effitrain.train import Run

    def fake_train(cfg, techniques=(), **kwargs):
        return Run(config=cfg, status="diverged", message="loss became nan at step 3; run stopped",
                   device="cpu (test)")

    monkeypatch.setattr(sys.modules["effitrain.train.trainer"], "train", fake_train)  # what the run cache calls
    assert cli.main(["train", "--profile", "smoke", "--budget", "5steps", "--json"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])  # NaN (no evaluations) written as null
    assert summary["status"] == "diverged" and summary["val_loss_last"] is None
    assert "loss became nan at step 3" in err
    assert effitrain.train is not fake_train  # only the module attribute was patched


def test_bench_json(capsys):
    assert cli.main(["bench", "--preset", "tiny", "--steps", "3", "--warmup", "1", "--seq-len", "32", "--batch", "8",
                     "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["tokens_per_second"] > 0
    assert 0 < result["mfu"] < 1.5
    assert result["steps"] == 3 and len(result["step_seconds"]) == 3
    assert result["seq_len"] == 32 and result["batch_size"] == 8 and result["preset"] == "tiny"
    assert result["flops_measured_per_step"] > 0
    # the sparse head and SDPA formulas make the two FLOP counts agree
    assert result["flops_analytic_per_step"] == pytest.approx(result["flops_measured_per_step"], rel=0.02)
    assert result["peak_memory_bytes"] > 0 and result["device"] and result["date"]


def test_bench_takes_any_shape_and_reports_each_toggle(capsys):
    assert cli.main(["bench", "--profile", "smoke", "--hidden", "48", "--layers", "1", "--heads", "3", "--ffn", "96",
                     "--vocab", "300", "--attention", "math", "--optimizer-kernel", "for-loop", "--steps", "1",
                     "--warmup", "0", "--seq-len", "16", "--batch", "2", "--json"]) == 0
    out = capsys.readouterr().out
    r = json.loads(out.strip().splitlines()[-1])
    assert (r["hidden"], r["layers"], r["heads"], r["ffn"], r["vocab_size"]) == (48, 1, 3, 96, 300)
    assert r["attention"] == "math" and r["optimizer_kernel"] == "for-loop" and r["optimizer_used"] == "for-loop"
    assert r["compile"] is False and "attention math, AdamW for-loop" in out
    assert r["flops_analytic_per_step"] == pytest.approx(r["flops_measured_per_step"], rel=0.03)


def test_bench_library_call():
    import effitrain as et
    from effitrain.bench import bench_training_step

    cfg = et.profile_config("smoke", seq_len=16, batch_size=4)
    r = bench_training_step(cfg, steps=2, warmup=0, peak_flops=1e12)
    assert r.steps == 2 and r.tokens_per_step == 64 and r.tokens_per_second > 0
    assert r.mfu == pytest.approx(r.achieved_flops / 1e12)
    assert math.isfinite(r.final_loss)
    assert "tokens/s" in r.format()


def test_lab_runs_jupyterlab_on_the_notebooks(monkeypatch):
    if not (REPO / "notebooks").is_dir():
        pytest.skip("no notebooks/ folder in this checkout")
    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda path, args: calls.append(list(args)))
    monkeypatch.setattr(cli.subprocess, "call", lambda args: calls.append(list(args)) or 0)
    for uid, root_flag in ((1000, []), (0, ["--allow-root"])):  # Jupyter refuses root without it
        monkeypatch.setattr(cli.os, "geteuid", lambda uid=uid: uid, raising=False)
        assert cli.main(["lab", "--no-browser", "--port", "8899"]) == 0
        cmd = calls.pop()
        assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
        assert cmd[3:5] == ["--notebook-dir", str((REPO / "notebooks").resolve())]
        assert cmd[5:] == root_flag + ["--no-browser", "--port", "8899"]


@pytest.mark.slow
def test_lab_command_starts_a_server_that_lists_the_lessons(tmp_path):
    """The README's main command for real: `effitrain lab` answers and serves the lesson notebooks."""
    if not (REPO / "notebooks").is_dir():
        pytest.skip("no notebooks/ folder in this checkout")
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "effitrain-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "run"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    cmd = [sys.executable, "-m", "effitrain.cli", "lab", "--no-browser", "--ip", "127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.token={token}"]
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, listing = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=2) as r:
                    listing = json.loads(r.read())
                    break
            except OSError:
                time.sleep(0.3)
        assert listing is not None, f"effitrain lab did not answer:\n{(tmp_path / 'lab.log').read_text()[-3000:]}"
        served = {item["name"] for item in listing["content"]}
        assert {p.name for p in (REPO / "notebooks").glob("*.ipynb")} <= served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_train_with_a_technique_and_its_parameters(capsys):
    code = cli.main(["train", "--profile", "smoke", "--budget", "3steps", "--technique", "cli-test:factor=0.5",
                     "--no-progress", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["techniques"] == ["cli-test"]


def test_techniques_lists_names_cards_and_allowed_values(capsys):
    assert cli.main(["techniques"]) == 0
    out = capsys.readouterr().out
    assert "cli-test: Scale the loss (a technique for testing the command line)." in out
    assert "factor = 1.0 in [0.5, 2.0]  multiply the loss by this" in out


def test_sigterm_stops_after_the_step_prints_the_summary_and_exits_143(tmp_path):
    import signal

    env = {**os.environ, "EFFITRAIN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "effitrain.cli", "train", "--profile", "smoke", "--budget", "100000steps",
           "--json", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # past the imports: from then on SIGTERM is the CLI's to handle
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_TERMINATED == 143, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "stopped"
    assert "terminated (SIGTERM)" in err.strip().splitlines()[-1] and "Traceback" not in err


def test_ctrl_c_under_nproc_2_reports_interrupted_and_130_as_one_process_does(tmp_path):
    import signal

    env = {**os.environ, "EFFITRAIN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "effitrain.cli", "train", "--profile", "smoke", "--budget", "100000steps",
           "--nproc", "2", "--json", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(25)  # the ranks are training by now
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "interrupted" and summary["steps"] > 0
    assert err.strip().splitlines()[-1].startswith("effitrain: interrupted at step")


def test_a_dead_rank_is_one_line_naming_it_not_a_traceback(monkeypatch, capsys):
    from effitrain.parallel.launch import WorkerError

    def dies(args):
        raise WorkerError("rank 0 of 2 was killed by signal 9; every other rank was ended")

    monkeypatch.setattr(cli, "_cmd_train", dies)
    assert cli.main(["train", "--profile", "smoke", "--nproc", "2"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert err == "effitrain: error: rank 0 of 2 was killed by signal 9; every other rank was ended"
