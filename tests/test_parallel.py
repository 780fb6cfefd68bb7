"""Data parallel over spawned processes (gloo): the same curve as one process, and faults that end
every rank within the timeout with one line naming the rank (issue 16)."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import effitrain as et
from effitrain.config import ConfigError
from effitrain.parallel import WorkerError
from effitrain.techniques.base import Technique


@dataclass(frozen=True)
class FaultParams:
    rank: int = 1
    step: int = 2
    how: str = "kill"  # kill | raise | hang


class Fault(Technique):
    """Test-only: at `step`, the process of `rank` is killed, raises, or hangs (on_batch is data-side,
    so DDP accepts it)."""

    name = "test-fault"
    Params = FaultParams

    def on_batch(self, ids, ctx):
        import torch.distributed as dist

        if dist.is_initialized() and dist.get_rank() == self.params.rank and ctx.step == self.params.step:
            if self.params.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.params.how == "raise":
                raise ValueError("a broken batch")
            time.sleep(1000)
        return ids


def _cfg(smoke, steps=6):
    cfg, _ = smoke
    return cfg.replace(budget=f"{steps}steps", evals=2, log_every=1)


def test_two_processes_give_the_one_process_curve(smoke):
    cfg = _cfg(smoke)
    one = et.train(cfg, progress=False)
    two = et.train(cfg, world_size=2, progress=False)
    assert two.status == "completed" and two.extra["world_size"] == 2 and two.extra["backend"] == "gloo"
    assert len(two.history.steps) == len(one.history.steps) and len(two.history.evals) == len(one.history.evals)
    assert set(two.history.steps[0]) == set(one.history.steps[0])
    for a, b in zip(one.history.steps, two.history.steps):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert (b["tokens"], b["flops"]) == (a["tokens"], a["flops"])  # the global batch's work
    assert two.history.evals[-1]["val_loss"] == pytest.approx(one.history.evals[-1]["val_loss"], abs=1e-5)
    sd1, sd2 = one.model.state_dict(), two.model.state_dict()
    assert max(float((sd1[k] - sd2[k]).abs().max()) for k in sd1) < 1e-5


def test_the_ranks_agree_when_a_seconds_budget_ends(smoke):
    cfg, _ = smoke
    seen = []
    run = et.train(cfg.replace(budget="2seconds", evals=1, log_every=1), world_size=2, progress=False, timeout=20,
                   callbacks=[lambda kind, row, r: seen.append((kind, len(r.history.steps)))])
    assert run.status == "completed" and run.history.steps[-1]["seconds"] >= 2.0
    assert ("step", 1) in seen and seen[-1][0] == "end"  # live rows reach the parent as they come


@pytest.mark.parametrize("how, rank, says", [("kill", 1, "rank 1 of 2 was killed by signal 9"),
                                             ("kill", 0, "rank 0 of 2 was killed by signal 9"),  # not its peer's reset
                                             ("raise", 1, "rank 1 of 2 failed: ValueError: a broken batch"),
                                             ("hang", 1, "rank 0 of 2 failed")])
def test_a_failing_rank_ends_every_rank_within_the_timeout(smoke, how, rank, says, capfd):
    timeout = 8.0
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=says):
        et.train(_cfg(smoke, 20), [Fault(how=how, rank=rank)], world_size=2, progress=False, timeout=timeout)
    # start-up (spawn, imports, data, model) is a few seconds; the fault itself ends within the timeout
    assert time.monotonic() - t0 < 20 + timeout
    err = capfd.readouterr().err
    if how == "kill":  # the survivor's "connection reset" is a consequence: no traceback of it
        assert "Traceback" not in err and "Connection" not in err
    if how == "raise":  # the failing rank's own traceback says where its error came from
        assert 'raise ValueError("a broken batch")' in err and err.count("Traceback") == 1


def test_a_killed_rank_leaves_no_leaked_semaphore_warning_at_exit(tmp_path):
    import subprocess
    import sys

    code = ("import effitrain as et\n"
            "from effitrain.parallel.launch import WorkerError\n"
            "from tests.test_parallel import Fault\n"
            "if __name__ == '__main__':\n"
            "    cfg = et.profile_config('smoke', budget='20steps', evals=2, log_every=1)\n"
            "    try:\n"
            "        et.train(cfg, [Fault(how='kill', rank=1)], world_size=2, progress=False, timeout=8.0)\n"
            "    except WorkerError as exc:\n"
            "        print(exc)\n")
    script = tmp_path / "kill_a_rank.py"
    script.write_text(code)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=root, env=env)
    assert "rank 1 of 2 was killed by signal 9" in done.stdout, done.stderr[-2000:]
    assert "leaked semaphore" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_what_ddp_refuses(smoke):
    cfg = _cfg(smoke)
    with pytest.raises(ConfigError, match="ddp \\(world_size=2\\) and layer_drop cannot train together"):
        et.train(cfg, [et.technique("layer_drop")], world_size=2, progress=False)
    with pytest.raises(ConfigError, match="run.batch_size=.* world_size=3"):
        et.train(cfg.replace(batch_size=8), world_size=3, progress=False)
    with pytest.raises(ConfigError, match="world_size must be a positive integer"):
        et.train(cfg, world_size=0, progress=False)


@pytest.mark.parametrize("launcher", ["--nproc", "torchrun"])
def test_the_command_line_runs_two_processes(launcher):
    import subprocess
    import sys

    args = ["train", "--profile", "smoke", "--budget", "3steps", "--no-progress", "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "effitrain", *args]
    else:
        cmd = [sys.executable, "-m", "effitrain", *args, "--nproc", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    # a rank that dies says why near the start of stderr (torchrun's summary comes last): keep both ends
    assert out.returncode == 0, out.stderr[:2500] + "\n…\n" + out.stderr[-1500:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 reports, the other rank is quiet
    import json

    summary = json.loads(lines[0])
    assert summary["status"] == "completed" and summary["steps"] == 3


def test_data_of_another_config_is_refused_before_any_process_starts(smoke):
    cfg, data = smoke
    other = cfg.replace(**{"data.seq_len": 32})
    with pytest.raises(ConfigError, match="data= was prepared for another data config"):
        et.train(other, data=data, world_size=2, progress=False)


def test_sma_replicas_across_processes_equal_one_process_with_all_of_them(smoke):
    # Crossbow over processes: 2 processes × 2 replicas, z all-reduced, train as 1 process × 4 replicas
    cfg = _cfg(smoke, steps=4).replace(batch_size=8)
    one = et.train(cfg, [et.technique("sma", replicas=4)], progress=False)
    two = et.train(cfg, [et.technique("sma", replicas=2)], world_size=2, progress=False)
    assert two.status == "completed" and two.extra["synchronised_by"] == "sma"
    s1, s2 = one.extra["techniques"]["sma"], two.extra["techniques"]["sma"]
    assert (s2["replicas"], s2["processes"], s1["processes"]) == (4, 2, 1)
    for a, b in zip(one.history.steps, two.history.steps, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert (b["tokens"], b["flops"]) == (a["tokens"], a["flops"])
    assert two.history.evals[-1]["val_loss"] == pytest.approx(one.history.evals[-1]["val_loss"], abs=1e-5)
    sd1, sd2 = one.model.state_dict(), two.model.state_dict()
    assert max(float((sd1[k] - sd2[k]).abs().max()) for k in sd1) < 1e-5
    # the replicas sit apart from z (each trained on its own rows), by the same amount in both
    assert s1["replica_spread"] > 0 and s2["replica_spread"] == pytest.approx(s1["replica_spread"], rel=1e-3)


# -- Ouroboros as a real pipeline: one process per group, point-to-point messages -----------------------
def test_an_ouroboros_pipeline_of_two_processes_equals_the_one_process_arithmetic(smoke):
    cfg = _cfg(smoke, steps=6).replace(grad_accum=2)  # two micro-batches: two messages each way per step
    ouro = lambda: [et.technique("ouroboros", groups=2)]  # noqa: E731
    one = et.train(cfg, ouro(), progress=False)
    two = et.train(cfg, ouro(), world_size=2, progress=False)
    assert two.status == "completed" and two.extra["pipeline"] and "synchronised_by" in two.extra
    assert two.extra["techniques"]["ouroboros"]["stale_steps"] == one.extra["techniques"]["ouroboros"]["stale_steps"]
    for a, b in zip(one.history.steps, two.history.steps, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert (b["tokens"], b["flops"]) == (a["tokens"], a["flops"])
    for a, b in zip(one.history.evals, two.history.evals, strict=True):
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-5)
    sd1, sd2 = one.model.state_dict(), two.model.state_dict()  # rank 0 gathered every group's weights
    assert max(float((sd1[k] - sd2[k]).abs().max()) for k in sd1) < 1e-5
    ranks = two.extra["pipeline_ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["forward_s"] > 0 and r["backward_s"] > 0 for r in ranks)
    # the plain run differs: the delay is real in both
    plain = et.train(cfg, progress=False)
    assert plain.history.steps[-1]["train_loss"] != pytest.approx(two.history.steps[-1]["train_loss"], abs=1e-4)


def test_an_ouroboros_pipeline_stops_every_rank_at_the_same_step(smoke):
    cfg, _ = smoke
    run = et.train(cfg.replace(budget="2seconds", evals=1, log_every=1), [et.technique("ouroboros", groups=2)],
                   world_size=2, progress=False, timeout=20)
    assert run.status == "completed" and run.history.steps[-1]["seconds"] >= 2.0
    assert run.history.evals[-1]["step"] == run.history.steps[-1]["step"]


def test_a_killed_pipeline_rank_ends_the_other_within_the_timeout(smoke):
    timeout = 8.0
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match="rank 1 of 2 was killed by signal 9"):
        et.train(_cfg(smoke, 20), [et.technique("ouroboros", groups=2), Fault(how="kill")], world_size=2,
                 progress=False, timeout=timeout)
    assert time.monotonic() - t0 < 20 + timeout


def test_what_the_ouroboros_pipeline_refuses(smoke, tmp_path):
    cfg = _cfg(smoke)
    ouro = et.technique("ouroboros", groups=2)
    with pytest.raises(ConfigError, match=r"world_size must equal ouroboros.groups=4 \(or be 1"):
        et.train(cfg.replace(layers=4), [et.technique("ouroboros", groups=4)], world_size=2, progress=False)
    with pytest.raises(ConfigError, match="ouroboros over processes and checkpoint/resume cannot train together"):
        et.train(cfg, [ouro], world_size=2, progress=False, checkpoint=str(tmp_path / "ck.pt"))
    with pytest.raises(ConfigError, match="ouroboros over 2 processes and standardization_loss cannot train together"):
        et.train(cfg, [ouro, et.technique("standardization_loss")], world_size=2, progress=False)
    with pytest.raises(ConfigError, match="ouroboros over processes and run.compile cannot train together"):
        et.train(cfg.replace(compile=True), [ouro], world_size=2, progress=False)


def test_more_processes_than_the_machine_can_run_are_refused_in_one_line(smoke):
    import os

    from effitrain.parallel.launch import PROCESSES_PER_CORE

    cfg, data = smoke
    too_many = PROCESSES_PER_CORE * (os.cpu_count() or 1) + 1
    with pytest.raises(et.ConfigError, match=rf"world_size={too_many} is more than {PROCESSES_PER_CORE} processes per CPU core"):
        et.train(cfg.replace(device="cpu", batch_size=too_many), data=data, world_size=too_many, progress=False)
