"""Shared fixtures. ``tiny_zoo`` builds a throwaway zoo of small untrained models for fast tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tiny_zoo import write_untrained_zoo

REPO = Path(__file__).resolve().parents[1]

# id -> (registry name, overrides): small widths and a shallow ResNet keep CPU tests fast.
TINY_MODELS = {
    "vgg_att3_concat_pc": ("vgg_att3_concat_pc", {"width": 0.125}),
    "vgg_att3_concat_dp": ("vgg_att3_concat_dp", {"width": 0.125}),
    "resnet_att2_concat_pc": ("resnet_att2_concat_pc", {"width": 0.25, "depth": 11}),
    "vgg": ("vgg", {"width": 0.125}),
    "vgg_gap": ("vgg_gap", {"width": 0.125}),
}


@pytest.fixture(autouse=True, scope="session")
def decoded_image_cache(tmp_path_factory: pytest.TempPathFactory):
    """The decoded-image cache of ltpa.data in a throwaway folder (never the user's home);
    subprocesses inherit it."""
    import os

    from ltpa.data import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("ltpa_cache"))
    yield
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(autouse=True, scope="session")
def background_work_finishes():
    """Let the app's background attacks (pages.ui.compute) finish before the interpreter exits:
    a torch op still running on that daemon thread at exit aborts the process (exit code 134)."""
    yield
    import sys

    compute = sys.modules.get("pages.ui.compute")
    if compute is not None:
        compute.BACKGROUND.wait_idle(120)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread per test: when other processes share the CPU (the browser test's
    Streamlit server, parallel jobs), two OpenMP threads spin-wait on each other and small models
    run up to 100x slower. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zoo folder with untrained small models and a manifest (built once per test session)."""
    return write_untrained_zoo(tmp_path_factory.mktemp("tiny_zoo"), TINY_MODELS)


@pytest.fixture()
def tiny_zoo(tiny_zoo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``ltpa.zoo`` (and apps started in-process) at the tiny zoo for one test."""
    monkeypatch.setenv("LTPA_ZOO", str(tiny_zoo_dir))
    return tiny_zoo_dir
