"""get_device: CUDA, then MPS, then CPU, overridable by argument or LTPA_DEVICE."""
from __future__ import annotations

import pytest
import torch

from ltpa.device import get_device

NO_CUDA = not torch.cuda.is_available()
NO_MPS = not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LTPA_DEVICE", raising=False)


def pretend(monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool) -> None:
    """Make the helper see (or not see) accelerators, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_auto_matches_this_machine() -> None:
    expected = "cuda" if not NO_CUDA else "mps" if not NO_MPS else "cpu"
    assert get_device().type == expected
    assert get_device("auto").type == expected


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    pretend(monkeypatch, cuda, mps)
    assert get_device("auto").type == expected


def test_cpu_is_always_available_and_case_insensitive() -> None:
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("choice", ["cuda", "cuda:0"])
def test_cuda_without_gpu_raises_runtime_error(monkeypatch: pytest.MonkeyPatch, choice: str) -> None:
    pretend(monkeypatch, cuda=False, mps=False)
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        get_device(choice)


def test_cuda_index_beyond_the_gpus_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend(monkeypatch, cuda=True, mps=False)
    assert get_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(RuntimeError, match="CUDA device 3 .* only 1 GPU"):
        get_device("cuda:3")


def test_mps_without_mps_raises_runtime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend(monkeypatch, cuda=False, mps=False)
    with pytest.raises(RuntimeError, match="MPS"):
        get_device("mps")


@pytest.mark.parametrize("choice", ["junk", "gpu", "cuda:x", "meta"])
def test_junk_raises_value_error_listing_choices(choice: str) -> None:
    with pytest.raises(ValueError, match=r"unknown device .*auto, cuda, cuda:N, mps or cpu"):
        get_device(choice)


def test_environment_variable_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTPA_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    monkeypatch.setenv("LTPA_DEVICE", "junk")
    with pytest.raises(ValueError, match="junk"):
        get_device()
    # An explicit argument wins over the environment.
    assert get_device("cpu") == torch.device("cpu")


def test_environment_cuda_without_gpu_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend(monkeypatch, cuda=False, mps=False)
    monkeypatch.setenv("LTPA_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        get_device()
