"""The decoded-image cache of ltpa.data: same images, invalidated by any file change."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recording import record_calls
from sample_images import make_folder
from ltpa import data
from ltpa.data import CACHE_ENV, decoded_cache_dir, load_image_folder


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "decoded"


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return record_calls(monkeypatch, data, "_decode_all")


def test_a_folder_is_decoded_once_then_read_back_identically(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "d", {"train": 3}) / "train"
    calls = count_decodes(monkeypatch)
    first = load_image_folder(folder)
    second = load_image_folder(folder)
    assert len(calls) == 1 and len(list(cache.glob("*.pt"))) == 1
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.class_names == second.class_names
    # Another decoding size is another entry.
    assert load_image_folder(folder, image_size=16).images.shape[-1] == 16
    assert len(calls) == 2


def test_a_folder_reached_through_a_link_shares_the_real_folders_entry(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "d", {"train": 3}) / "train"
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    calls = count_decodes(monkeypatch)
    real = load_image_folder(folder)
    linked = load_image_folder(link)
    # The key holds the resolved paths, so the link reads the real folder's entry back.
    assert len(calls) == 1 and len(list(cache.glob("*.pt"))) == 1
    assert torch.equal(real.images, linked.images)
    # Files are in name order within each class folder.
    class_dir = next(p for p in folder.iterdir() if p.is_dir())
    listed = data._list_class_folders(folder)[class_dir.name]
    assert [f.name for f in listed] == sorted(f.name for f in class_dir.iterdir())


def test_changing_adding_or_removing_a_file_decodes_again(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "d", {"train": 3}) / "train"
    calls = count_decodes(monkeypatch)
    before = load_image_folder(folder)
    victim = sorted(folder.rglob("*.png"))[0] if list(folder.rglob("*.png")) else sorted(
        p for p in folder.rglob("*") if p.is_file())[0]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(victim)
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = load_image_folder(folder)
    assert len(calls) == 2 and not torch.equal(before.images, changed.images)
    extra = victim.with_name("extra" + victim.suffix)
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(extra)
    assert len(load_image_folder(folder)) == len(before) + 1 and len(calls) == 3
    extra.unlink()
    assert len(load_image_folder(folder)) == len(before) and len(calls) == 3  # the earlier entry


def test_a_damaged_entry_is_decoded_again_with_a_warning(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    folder = make_folder(tmp_path / "d", {"train": 2}) / "train"
    good = load_image_folder(folder)
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(b"not a torch file")
    calls = count_decodes(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="ltpa.data"):
        again = load_image_folder(folder)
    assert len(calls) == 1 and torch.equal(good.images, again.images)
    assert "damaged decoded-image cache" in caplog.text
    assert load_image_folder(folder) is not None and len(calls) == 1  # rewritten


def test_an_empty_cache_setting_turns_the_cache_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "")
    assert decoded_cache_dir() is None
    folder = make_folder(tmp_path / "d", {"train": 2}) / "train"
    calls = count_decodes(monkeypatch)
    load_image_folder(folder)
    load_image_folder(folder)
    assert len(calls) == 2
