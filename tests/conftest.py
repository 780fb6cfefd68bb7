import os

import pytest
import torch

import effitrain as et


@pytest.fixture(scope="session")
def smoke():
    """The smoke profile's config and its prepared data (built once, cached on disk)."""
    cfg = et.profile_config("smoke")
    return cfg, et.prepare_data(cfg.data)


@pytest.fixture(scope="session")
def smoke_data(smoke):
    """The same as `smoke`, for modules that use the name `smoke` for something else."""
    return smoke


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty effitrain cache for tests that look at what gets written there."""
    monkeypatch.setenv("EFFITRAIN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def pytest_configure(config):
    os.environ.setdefault("EFFITRAIN_PROFILE", "smoke")


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models: one CPU thread is faster, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
