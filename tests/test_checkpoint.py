"""Checkpoints: exact round trips, fp16 storage, and clear refusals of unsafe or broken files."""
from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import pytest
import torch

import ltpa
from ltpa import checkpoint as checkpoint_module
from ltpa.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_file,
    read_checkpoint,
    save_checkpoint,
)
from ltpa.quantisation import (
    INT4_GROUP,
    dequantise_int4,
    quantise_int4,
    restore_weights,
    round_weights_to_storage,
)

SMALL = {"width": 0.125}
META = {"class_names": ["a", "b", "c"], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
        "input_size": 32, "dataset": "unit test", "metrics": {"test_error": 12.5}}


class Unsafe:
    """Any class outside torch: its pickle would import and run code from this module."""


@pytest.fixture(scope="module")
def trained_like_model() -> torch.nn.Module:
    """A small model whose batch-norm statistics are no longer the defaults."""
    torch.manual_seed(0)
    model = ltpa.create_model("vgg_att3_concat_pc", num_classes=3, **SMALL)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, 3, 32, 32))
    return model.eval()


@pytest.fixture(scope="module")
def saved(trained_like_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "model.pt", trained_like_model, META)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["vgg_att2_indep_dp", "resnet_att2_concat_pc", "vgg_gap", "resnet164"])
def test_round_trip_is_bit_exact(name: str, tmp_path: Path, batch: torch.Tensor) -> None:
    overrides = {"width": 0.125, **({"depth": 11} if name.startswith("resnet") else {})}
    model = ltpa.create_model(name, match="project_g", **overrides) if "att" in name else (
        ltpa.create_model(name, **overrides)
    )
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, META)
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert loaded.ltpa_config == model.ltpa_config
    with torch.no_grad():
        before, after = model(batch), loaded(batch)
    assert torch.equal(before.logits, after.logits)
    for a, b in zip(before.maps, after.maps):
        assert torch.equal(a, b)
    assert meta["class_names"] == META["class_names"]


def test_metadata_and_versions_are_stored(saved: Path, trained_like_model: torch.nn.Module,
                                          batch: torch.Tensor) -> None:
    loaded, meta = load_checkpoint(saved)
    with torch.no_grad():
        assert torch.equal(loaded(batch).logits, trained_like_model(batch).logits)
    for key, value in META.items():
        assert meta[key] == value
    assert meta["library_versions"]["torch"] == str(torch.__version__)
    assert isinstance(meta["git_revision"], str) and meta["git_revision"]
    # The file alone is enough, and it is plain data that weights_only loading accepts.
    payload = torch.load(saved, weights_only=True)
    assert payload["model"] == {"name": "vgg_att3_concat_pc", "kwargs": {"num_classes": 3, **SMALL}}


def test_loading_from_bytes_matches_loading_from_file(saved: Path) -> None:
    from_bytes = read_checkpoint(saved.read_bytes())
    from_file = read_checkpoint(saved)
    assert from_bytes["meta"] == from_file["meta"]
    assert all(torch.equal(from_bytes["state_dict"][k], v) for k, v in from_file["state_dict"].items())


def test_fp16_storage_loads_into_fp32_model(trained_like_model: torch.nn.Module, saved: Path,
                                            tmp_path: Path, batch: torch.Tensor) -> None:
    half = save_checkpoint(tmp_path / "half.pt", trained_like_model, META, precision="fp16")
    stored = read_checkpoint(half)["state_dict"]
    assert stored["layers.0.0.weight"].dtype == torch.float16
    assert stored["layers.0.1.running_var"].dtype == torch.float32  # BN statistics stay fp32
    ratio = half.stat().st_size / saved.stat().st_size
    assert 0.45 < ratio < 0.6, f"fp16 file is {ratio:.2f} of the fp32 file"
    loaded, _ = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    original = dict(trained_like_model.named_buffers())
    for key, buffer in loaded.named_buffers():
        if key.endswith(("running_mean", "running_var")):
            assert torch.equal(buffer, original[key])
    with torch.no_grad():
        expected, got = trained_like_model(batch), loaded(batch)
    assert not torch.equal(expected.logits, got.logits)  # it really was rounded ...
    torch.testing.assert_close(got.logits, expected.logits, rtol=0.02, atol=0.02)  # ... but close
    for a, b in zip(expected.maps, got.maps):
        torch.testing.assert_close(b, a, rtol=0.05, atol=1e-3)


def test_unknown_precision_is_rejected(trained_like_model: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown precision .int2.*int4"):
        save_checkpoint(tmp_path / "x.pt", trained_like_model, precision="int2")


def test_model_not_from_registry_cannot_be_saved(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="create_model"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))


def test_metadata_must_be_plain_data(trained_like_model: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Unsafe"):
        save_checkpoint(tmp_path / "x.pt", trained_like_model, {"bad": Unsafe()})


# ---- files that must be refused -------------------------------------------------------------


def refused(path: Path, *fragments: str) -> str:
    """Load ``path``, expect a CheckpointError, check its message names the problem."""
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_pickled_custom_object_is_refused_and_never_run(tmp_path: Path) -> None:
    path = tmp_path / "object.pt"
    torch.save({"format": "ltpa-checkpoint", "payload": Unsafe()}, path)
    refused(path, "refused for safety", "Unsafe", "arbitrary code")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_plain_pickle_of_a_function_is_refused(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "function.pkl"
    path.write_bytes(pickle.dumps(os.system, protocol=protocol))
    refused(path, "refused for safety", "system")


def test_damaged_weights_are_detected(saved: Path, tmp_path: Path) -> None:
    data = bytearray(saved.read_bytes())
    middle = len(data) // 2  # the bulk of the file is tensor data
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(data))
    refused(path, "corrupt")


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(3),
                                         dtype=torch.uint8).tolist()))
    message = refused(path, "not a readable PyTorch checkpoint")
    assert "refused for safety" not in message


def test_truncated_file_is_refused(saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.pt"
    path.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    refused(path, "truncated")


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    refused(path, "empty")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    refused(tmp_path / "nowhere.pt", "does not exist")


def test_plain_state_dict_is_not_an_ltpa_checkpoint(trained_like_model: torch.nn.Module,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "state_dict.pt"
    torch.save(trained_like_model.state_dict(), path)
    refused(path, "not an ltpa checkpoint", "save_checkpoint")


def rewrite(saved: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``saved`` with its payload edited (digest recomputed, so only the edit is wrong)."""
    from ltpa.checkpoint import state_digest

    payload = torch.load(saved, weights_only=True)
    edit(payload)
    payload["state_sha256"] = state_digest(payload["state_dict"])
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


def test_missing_weights_are_named(saved: Path, tmp_path: Path) -> None:
    path = rewrite(saved, tmp_path, lambda p: p["state_dict"].pop("classifier.classifiers.0.weight"))
    refused(path, "missing 1 tensor", "classifier.classifiers.0.weight", "vgg_att3_concat_pc")


def test_weights_of_another_size_are_named(saved: Path, tmp_path: Path) -> None:
    def wider(payload: dict) -> None:
        payload["model"]["kwargs"]["width"] = 0.25

    refused(rewrite(saved, tmp_path, wider), "wrong shape", "layers.0.0.weight")


def test_unknown_model_name_in_file_is_named(saved: Path, tmp_path: Path) -> None:
    def rename(payload: dict) -> None:
        payload["model"]["name"] = "alexnet_att9"

    refused(rewrite(saved, tmp_path, rename), "alexnet_att9", "vgg_att3_concat_pc")


def test_missing_section_is_named(saved: Path, tmp_path: Path) -> None:
    refused(rewrite(saved, tmp_path, lambda p: p.pop("meta")), "missing its 'meta' section")


def test_newer_format_asks_for_an_upgrade(saved: Path, tmp_path: Path) -> None:
    def newer(payload: dict) -> None:
        payload["format_version"] = 99

    refused(rewrite(saved, tmp_path, newer), "format 99", "upgrade ltpa")


def test_damaged_int8_scales_are_detected(trained_like_model: torch.nn.Module, tmp_path: Path,
                                          batch: torch.Tensor) -> None:
    path = save_checkpoint(tmp_path / "int8.pt", trained_like_model, META, precision="int8")
    loaded, _ = load_checkpoint(path)  # the intact file loads, close to the original
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, trained_like_model(batch).logits,
                                   rtol=0.1, atol=0.1)
    payload = torch.load(path, weights_only=True)
    key = next(iter(payload["int8_scales"]))
    payload["int8_scales"][key] = payload["int8_scales"][key] * 2
    damaged = tmp_path / "damaged_int8.pt"
    torch.save(payload, damaged)
    refused(damaged, "corrupt", "int8 scales")


@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (7, 64), (4, 40, 1, 1), (3, 1)])
def test_int4_round_trip_beats_plain_absmax_rounding_in_every_group(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    weight = torch.randn(shape) * torch.logspace(-3, 0, shape[0])[(...,) + (None,) * (len(shape) - 1)]
    packed, scale = quantise_int4(weight)
    assert packed.dtype == torch.uint8 and scale.dtype == torch.float16
    count = weight[0].numel()
    width = -(-count // INT4_GROUP) * INT4_GROUP  # padded to whole groups
    assert packed.shape == (shape[0], width // 2) and scale.shape == (shape[0], width // INT4_GROUP)
    restored = dequantise_int4(packed, scale, list(shape))
    assert restored.shape == weight.shape
    step = scale.float().repeat_interleave(INT4_GROUP, dim=1)[:, :count].reshape(shape)
    # Within the clipping range every weight is off by at most half a step...
    inside = weight.abs() <= 7 * step
    assert torch.all((restored - weight).abs()[inside] <= step[inside] / 2 + 1e-6)
    # ...and no group rounds worse than with its scale set by its largest weight.
    def group_error(values: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad((values - weight).reshape(shape[0], -1), (0, width - count))
        return padded.square().view(shape[0], -1, INT4_GROUP).sum(2)

    flat = torch.nn.functional.pad(weight.reshape(shape[0], -1), (0, width - count))
    peak_scale = (flat.view(shape[0], -1, INT4_GROUP).abs().amax(2) / 7).half().float()
    peak_step = peak_scale.repeat_interleave(INT4_GROUP, dim=1)[:, :count].reshape(shape)
    plain = torch.round(weight / peak_step).clamp(-7, 7) * peak_step
    assert torch.all(group_error(restored) <= group_error(plain) + 1e-9)
    if count > 1:  # and, with more than one weight a group, clipping pays overall
        assert group_error(restored).sum() < group_error(plain).sum()


@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_rounding_to_storage_gives_the_weights_the_file_loads_and_restores(
        trained_like_model: torch.nn.Module, tmp_path: Path, precision: str) -> None:
    model = copy.deepcopy(trained_like_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model, META, precision=precision))
    originals = round_weights_to_storage(model, precision)
    assert originals  # every parameter of this model is stored in reduced precision
    rounded = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(rounded[key], value), key
    weights = [k for k in originals if before[k].ndim >= 2]  # (unit batch-norm scales round exactly)
    assert weights and all(not torch.equal(before[k], rounded[k]) for k in weights)
    restore_weights(model, originals)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_int4_file_is_small_loads_close_and_is_format_2(trained_like_model: torch.nn.Module,
                                                       tmp_path: Path, batch: torch.Tensor) -> None:
    int8 = save_checkpoint(tmp_path / "int8.pt", trained_like_model, META, precision="int8")
    int4 = save_checkpoint(tmp_path / "int4.pt", trained_like_model, META, precision="int4")
    assert int4.stat().st_size < 0.7 * int8.stat().st_size
    assert torch.load(int8, weights_only=True)["format_version"] == 1  # older readers keep working
    payload = torch.load(int4, weights_only=True)
    assert payload["format_version"] == 2 and payload["precision"] == "int4"
    loaded, _ = load_checkpoint(int4)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    with torch.no_grad():
        expected, got = trained_like_model(batch).logits, loaded(batch).logits
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.75
    assert (got - expected).abs().max() < 0.1 * expected.abs().max()


def test_damaged_int4_sections_are_refused(trained_like_model: torch.nn.Module, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "int4.pt", trained_like_model, META, precision="int4")
    key = next(iter(torch.load(path, weights_only=True)["int4_scales"]))

    def scaled(payload: dict) -> None:
        payload["int4_scales"][key] = payload["int4_scales"][key] * 2

    def shapeless(payload: dict) -> None:
        del payload["int4_shapes"][key]

    def reshaped(payload: dict) -> None:
        payload["int4_shapes"][key] = [payload["int4_shapes"][key][0], 10 ** 6]

    refused(rewrite(path, tmp_path, scaled), "corrupt", "int4 scales")
    refused(rewrite(path, tmp_path, shapeless), "malformed int4 section")
    # A declared shape the model does not have is caught before anything is unpacked.
    refused(rewrite(path, tmp_path, reshaped), "wrong shape", key)

    def truncated(payload: dict) -> None:
        payload["state_dict"][key] = payload["state_dict"][key][:, :1].contiguous()

    refused(rewrite(path, tmp_path, truncated), "int4 weight", key, "cannot be unpacked")


def test_int4_file_refused_by_a_reader_of_format_1(trained_like_model: torch.nn.Module, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "int4.pt", trained_like_model, META, precision="int4")
    monkeypatch.setattr(checkpoint_module, "FORMAT_VERSION", 1)
    refused(path, "format 2", "upgrade ltpa")


# ---- checkpoints as untrusted input: validated before anything is built or inflated ---------


def tiny_file(tmp_path: Path, name: str, kwargs: dict) -> Path:
    """A small hostile file: a valid-looking ltpa checkpoint with one tiny weight."""
    path = tmp_path / "hostile.pt"
    torch.save({"format": "ltpa-checkpoint", "format_version": 1,
                "model": {"name": name, "kwargs": kwargs},
                "state_dict": {"layers.0.0.weight": torch.zeros(8, 3, 3, 3)}, "meta": {}}, path)
    return path


@pytest.mark.parametrize("name, kwargs, fragments", [
    ("vgg_att3_concat_pc", {"num_classes": 10, "width": 6}, ["width=6", "(0, 4]"]),
    ("vgg_att3_concat_pc", {"num_classes": 10, "width": float("inf")}, ["width=inf"]),
    ("vgg_att3_concat_pc", {"num_classes": 10, "width": float("nan")}, ["width=nan"]),
    ("vgg_att3_concat_pc", {"num_classes": 6_400_000_000}, ["num_classes=6400000000", "2 to 100000"]),
    ("vgg_att3_concat_pc", {"num_classes": 10, "colour": "red"}, ["unknown argument(s) colour",
                                                                   "it accepts"]),
    ("vgg_att3_concat_pc", {"num_classes": 10, "dropout": [1, 2]}, ["dropout"]),
    ("resnet164", {"num_classes": 10, "depth": 9_000_002}, ["depth=9000002", "9n+2"]),
    ("alexnet", {"num_classes": 10}, ["unknown model 'alexnet'", "vgg_att3_concat_pc"]),
])
def test_hostile_model_sections_are_refused_before_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            name: str, kwargs: dict, fragments: list) -> None:
    built = []
    monkeypatch.setattr(checkpoint_module, "create_model", lambda *a, **k: built.append(a))
    path = tiny_file(tmp_path, name, kwargs)
    assert path.stat().st_size < 4096
    refused(path, *fragments)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert built == []  # refused from the model section alone


def test_weights_that_do_not_fit_are_found_on_the_meta_device(tmp_path: Path) -> None:
    import resource

    # A width-4 VGG-att3 would be ~1.2 GB of fp32 weights; the file has one tiny tensor.
    path = tiny_file(tmp_path, "vgg_att3_concat_pc", {"num_classes": 10, "width": 4.0})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(path, "weights do not fit", "wrong shape", "layers.0.0.weight")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300, f"peak memory grew by {grown_mb:.0f} MB"


def zip_bomb(tmp_path: Path, inflated: int) -> Path:
    """A torch-style zip whose data.pkl deflates from a few KB to ``inflated`` bytes."""
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + b"N" * inflated + b".")
        archive.writestr("archive/version", b"3\n")
    return path


def test_zip_bomb_is_refused_from_the_zip_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_module, "MAX_PICKLE_BYTES", 1 << 20)
    monkeypatch.setattr(checkpoint_module, "MAX_INFLATION_BYTES", 1 << 20)
    path = zip_bomb(tmp_path, 8 << 20)
    assert path.stat().st_size < 100_000
    loads = []
    monkeypatch.setattr(checkpoint_module.torch, "load", lambda *a, **k: loads.append(a))
    refused(path, "refused", "inflate to 8 MiB")
    assert loads == []  # never handed to torch.load
    with pytest.raises(CheckpointError, match="inflate"):
        load_state_file(path)


def test_real_checkpoints_pass_the_size_checks(saved: Path) -> None:
    import zipfile

    with zipfile.ZipFile(saved) as archive:
        pickle_size = max(m.file_size for m in archive.infolist() if m.filename.endswith(".pkl"))
        total = sum(m.file_size for m in archive.infolist())
    assert pickle_size < checkpoint_module.MAX_PICKLE_BYTES / 100
    assert total <= saved.stat().st_size  # stored uncompressed: no inflation at all


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_old_non_zip_format_with_pickled_code_is_refused_for_safety(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"format": "ltpa-checkpoint", "hook": os.system}, path, _use_new_zipfile_serialization=False)
    assert not path.read_bytes().startswith(b"PK")
    message = refused(path, "refused for safety", "system")
    assert "weights_only" not in message and "will likely succeed" not in message
    assert "corrupt" not in message and "\n" not in message


def test_state_file_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save({"model": {}, "epoch": 3, "config": Unsafe()}, path)
    with pytest.raises(CheckpointError) as info:
        load_state_file(path)
    message = str(info.value)
    assert "refused for safety" in message and "Unsafe" in message and "weights_only" not in message


def test_state_file_of_plain_data_loads(tmp_path: Path, trained_like_model: torch.nn.Module) -> None:
    path = tmp_path / "state.pt"
    optimizer = torch.optim.SGD(trained_like_model.parameters(), lr=0.1, momentum=0.9)
    state = {"model": trained_like_model.state_dict(), "optimizer": optimizer.state_dict(),
             "torch_rng": torch.get_rng_state(), "epoch": 2, "log": [{"loss": 1.5}],
             "config": {"lr": 0.1}}
    torch.save(state, path)
    loaded = load_state_file(path)
    assert loaded["epoch"] == 2 and loaded["log"] == [{"loss": 1.5}]
    assert torch.equal(loaded["torch_rng"], state["torch_rng"])
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_file(tmp_path / "nowhere.pt")
    (tmp_path / "list.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_file(tmp_path / "list.pt")
