"""The gpu-smoke profile (every lesson on CUDA at smoke sizes) and the device script's CPU dry run.

CI never has a GPU, so the profile is checked to resolve (CUDA and bf16; EFFITRAIN_DEVICE=cpu makes
it a CPU stand-in), every lesson and package table to read it through its lesson size, and
scripts/gpu_check.py to run its sections in the dry run and write what it measured.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import effitrain as et
from effitrain.config import PROFILES, PROFILE_SIZES, ConfigError, profile_size
from effitrain.lab.design import design
from effitrain.lab.reference import load_reference
from effitrain.lab.speedrun import track

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted((REPO / "lessons").glob("[0-9][0-9]_*.py"))


def test_gpu_smoke_is_the_smoke_sizes_on_cuda_in_bf16(monkeypatch):
    monkeypatch.delenv("EFFITRAIN_DEVICE", raising=False)
    gpu, smoke = et.profile_config("gpu-smoke"), et.profile_config("smoke")
    assert (gpu.run.device, gpu.run.precision, gpu.profile) == ("cuda", "bf16", "gpu-smoke")
    assert (gpu.data, gpu.model, gpu.optim, gpu.budget) == (smoke.data, smoke.model, smoke.optim, smoke.budget)
    assert profile_size("gpu-smoke") == "smoke"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="EFFITRAIN_DEVICE=cpu"):
            gpu.run.resolved_device()


def test_effitrain_device_overrides_every_profile_and_is_checked(monkeypatch):
    monkeypatch.setenv("EFFITRAIN_DEVICE", "cpu")
    for name in PROFILES:
        assert et.profile_config(name).run.device == "cpu"
    assert et.profile_config("gpu-smoke", device="auto").run.device == "auto"  # an explicit change still wins
    monkeypatch.setenv("EFFITRAIN_DEVICE", "tpu")
    with pytest.raises(ConfigError, match="EFFITRAIN_DEVICE must be one of auto, cpu, cuda; got 'tpu'"):
        et.profile_config("smoke")


def test_every_profile_has_a_lesson_size_and_an_unknown_one_is_refused(monkeypatch):
    assert set(PROFILE_SIZES) == set(PROFILES)
    assert set(PROFILE_SIZES.values()) == {"smoke", "cpu", "gpu"}
    monkeypatch.setenv("EFFITRAIN_PROFILE", "gpu-smoke")
    assert et.default_profile() == "gpu-smoke" and et.profile_size() == "smoke"
    with pytest.raises(ConfigError, match="profile 'mine' has no lesson size"):
        profile_size("mine")


def test_design_track_and_recipes_follow_the_lesson_size(monkeypatch):
    monkeypatch.setenv("EFFITRAIN_DEVICE", "cpu")
    d, s = design("gpu-smoke"), design("smoke")
    assert d.profile == "gpu-smoke" and (d.budget, d.evals, d.seeds, d.gap) == (s.budget, s.evals, s.seeds, s.gap)
    assert d.config().run.precision == "bf16" and s.config().run.precision == "fp32"
    assert track("gpu-smoke").baseline().profile == "gpu-smoke"
    for name in ("bert", "24h-bert", "cramming"):
        assert et.ingredients(name, "gpu-smoke") == et.ingredients(name, "smoke")


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_reads_its_sizes_through_profile_size(lesson: Path):
    """A lesson keyed by PROFILE would raise KeyError under gpu-smoke: its tables use the lesson size."""
    src = lesson.read_text()
    assert "et.profile_size()" in src, f"{lesson.name}: SIZE = et.profile_size() picks the lesson's sizes"
    assert not re.search(r"\}\[PROFILE\]|PROFILE == \"(smoke|cpu|gpu)\"", src), \
        f"{lesson.name}: index the per-size tables by SIZE, not PROFILE"


@pytest.mark.slow
def test_device_script_dry_run_writes_each_section(tmp_path: Path):
    """scripts/gpu_check.py --device cpu --quick: a lesson under gpu-smoke, the peak, the bench and the
    baseline over three seeds, stored as a reference set a lesson can load."""
    out = tmp_path / "out"
    env = {**os.environ, "EFFITRAIN_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(out), "--only", "notebooks,peak,bench,baseline", "--lessons", "00"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["device"] == "cpu" and res["quick"] is True
    nb = res["sections"]["notebooks"]["result"]
    assert nb["profile"] == "gpu-smoke" and nb["passed"] == 1 and list(nb["lessons"]) == ["00_measuring_stick"]
    assert res["sections"]["peak"]["result"]["bf16_flops"] > 0
    assert res["sections"]["bench"]["result"]["eager"]["tokens_per_second"] > 0
    base = res["sections"]["baseline"]["result"]
    assert len(base["steps_to_gap"]) == 3 and len(base["final_val_loss"]) == 3
    ref = load_reference(out / base["reference_file"])
    assert (ref.device, ref.profile, len(ref.runs)) == ("cpu", "gpu-smoke", 3)
    assert [r.config.run.seed for r in ref.runs] == [0, 1, 2]
    assert all(r.config.run.precision == "bf16" for r in ref.runs)


def test_device_script_refuses_bad_options(tmp_path: Path):
    script = str(REPO / "scripts" / "gpu_check.py")
    for args, msg in ((["--only", "nope"], "unknown section(s) nope"), (["--lessons", "99"], "no notebook starts with 99")):
        proc = subprocess.run([sys.executable, script, "--device", "cpu", "--out", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and msg in proc.stderr + proc.stdout


def test_device_script_skips_what_no_longer_fits_the_deadline(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path), "--only", "peak,baseline", "--deadline", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "bf16_flops" in res["sections"]["peak"]["result"]
    assert "deadline" in res["sections"]["baseline"]["skipped"]


def test_fit_world_moves_processes_to_cpu_where_gpus_are_too_few(monkeypatch):
    from effitrain.parallel.layout import fit_world
    cpu = et.profile_config("smoke")
    assert fit_world(cpu, 4) == (cpu, "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gpu = et.profile_config("gpu-smoke", device="cuda")
    assert fit_world(gpu, 1) == (gpu, "")
    moved, note = fit_world(gpu, 2)
    assert moved == gpu.replace(device="cpu")
    assert note == "2 processes need 2 GPUs and this machine has 1: these runs train on CPU processes (gloo)"


def test_cuda_paths_pick_nccl_cuda_memory_and_cuda_autocast(monkeypatch):
    """What differs on CUDA, checked without one: the backend, the peak-memory reading, the autocast
    device type and fp16's acceptance (the device script measures them for real)."""
    from effitrain.bench import peak_memory, reset_peak_memory
    from effitrain.parallel.launch import backend_for
    from effitrain.train.memory import PeakMemory
    from effitrain.train.step import autocast_for, check_precision

    assert (backend_for("cuda"), backend_for("cpu"), backend_for(torch.device("cuda", 0))) == ("nccl", "gloo", "nccl")
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(("reset", str(d))))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 1000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 5000)
    cuda = torch.device("cuda", 0)
    peak = PeakMemory(cuda)
    assert peak.read() == {"peak_memory_bytes": 5000, "peak_memory_kind": "cuda max allocated"}
    reset_peak_memory(cuda)
    assert peak_memory(cuda) == (5000, "cuda max_memory_allocated")
    assert calls == [("reset", "cuda:0"), ("reset", "cuda:0")]
    cfg = et.profile_config("gpu-smoke")
    check_precision(cfg.replace(precision="fp16"), cuda)  # accepted on CUDA
    with pytest.raises(ConfigError, match="fp16"):
        check_precision(cfg.replace(precision="fp16", device="auto"), torch.device("cpu"))
    seen = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype: seen.append((device_type, dtype)))
    autocast_for(cfg, cuda)()
    autocast_for(cfg.replace(precision="fp16"), cuda)()
    assert seen == [("cuda", torch.bfloat16), ("cuda", torch.float16)]


def _dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_wheel_kit_covers_every_import_the_gpu_image_lacks():
    """Every third-party package that effitrain, the lessons or the device script import is in the GPU
    image (scripts/gpu_image_packages.txt) or among the wheels scripts/gpu_wheels.sh carries: a new
    dependency fails here, not minutes into a short GPU window."""
    import ast
    from importlib.metadata import packages_distributions
    image = {_dist(line) for line in (REPO / "scripts" / "gpu_image_packages.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    kit = re.search(r'NAMES="(.*?)"', (REPO / "scripts" / "gpu_wheels.sh").read_text(), re.S).group(1)
    carried = {_dist(n) for n in kit.split()}
    files = [*(REPO / "effitrain").rglob("*.py"), *LESSONS, REPO / "scripts" / "gpu_check.py"]
    modules = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("quiet_import", "import_module")
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                modules.add(node.args[0].value.split(".")[0])  # imported by name, on use
    modules -= set(sys.stdlib_module_names) | {"effitrain", "__future__"}
    owners = packages_distributions()
    missing = {}
    for m in sorted(modules):
        dists = {_dist(d) for d in owners.get(m, [m])}
        if not dists & (image | carried):
            missing[m] = sorted(dists)
    assert not missing, f"imported but neither in the GPU image nor carried by scripts/gpu_wheels.sh: {missing}"
    assert not carried & {"torch", "numpy", "pandas", "pyarrow"}, "the image's own core packages are never carried"


def test_device_script_writes_the_package_versions_when_effitrain_cannot_import(tmp_path: Path):
    """On a GPU image a dependency too old for effitrain must still leave a result naming it."""
    fake = tmp_path / "site" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('pyarrow>=24 is required')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path / "out"), "--only", "peak"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 1
    res = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res["error"] == "import effitrain: ImportError: pyarrow>=24 is required"
    assert res["packages"]["torchao"] and res["sections"] == {}
