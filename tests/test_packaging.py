"""The wheel is the product: its code, the shipped models and their manifest, usable without the
clone (no repository on sys.path, run from another folder)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((REPO / "assets" / "models" / "manifest.json").read_text())
PACKAGED_ZOO = "ltpa/_assets/models"
FIXTURE = REPO / "tests" / "data" / "cifar10_fixture"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the clone (an in-tree build would leave build/ and
    *.egg-info in the repository, and a stale build/lib could put deleted modules in the wheel)."""
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(REPO / "ltpa", source / "ltpa", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "assets", source / "assets")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(out), "-q"]
    if importlib.util.find_spec("setuptools") is not None:
        command.append("--no-build-isolation")  # offline: use the setuptools already installed
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=source, timeout=300)
    (built,) = out.glob("ltpa-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
    return folder


def run_installed(site: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python3 ARGS`` seeing ltpa only as the unpacked wheel: PYTHONPATH is that folder, the
    working folder is elsewhere and no LTPA_ZOO is set."""
    environment = {k: v for k, v in os.environ.items() if k not in ("LTPA_ZOO", "PYTHONPATH")}
    environment.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_holds_every_module_and_every_manifest_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged_manifest = json.loads(archive.read(f"{PACKAGED_ZOO}/manifest.json"))
        digests = {card["id"]: hashlib.sha256(archive.read(f"{PACKAGED_ZOO}/{card['file']}")).hexdigest()
                   for card in packaged_manifest["models"]}
        entry_points = archive.read("ltpa-0.1.0.dist-info/entry_points.txt").decode()
    # Every module of the source tree (pyproject.toml lists the packages by hand).
    modules = {path.relative_to(REPO).as_posix() for path in (REPO / "ltpa").rglob("*.py")
               if "__pycache__" not in path.parts}
    assert modules - names == set()
    assert packaged_manifest == MANIFEST
    for card in MANIFEST["models"]:
        assert f"{PACKAGED_ZOO}/{card['log']}" in names, card["id"]
        assert digests[card["id"]] == card["sha256"], card["id"]
    assert "ltpa/_assets/robustness/robustness.json" in names
    assert "ltpa = ltpa.cli:main" in entry_points
    # The app's gallery and the tests stay in the clone.
    assert not [n for n in names if n.startswith(("tests/", "pages/", "ltpa/_assets/examples/"))]


def test_the_installed_package_loads_every_shipped_model(unpacked: Path, tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import ltpa, ltpa.zoo as zoo\n"
        f"assert all(Path(p or '.').resolve() != Path({str(REPO)!r}) for p in sys.path), sys.path\n"
        "loaded = {e.id: zoo.load_zoo_model(e.id, verify=True).class_names for e in zoo.list_zoo()}\n"
        "print(json.dumps({'package': ltpa.__file__, 'zoo': str(zoo.zoo_dir()),\n"
        "                  'source_tree': zoo.FROM_SOURCE_TREE, 'loaded': loaded}))\n"
    )
    result = run_installed(unpacked, tmp_path, "-c", script)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert Path(report["package"]).resolve() == (unpacked / "ltpa" / "__init__.py").resolve()
    assert Path(report["zoo"]).resolve() == (unpacked / PACKAGED_ZOO).resolve()
    assert report["source_tree"] is False
    assert report["loaded"] == {card["id"]: card["class_names"] for card in MANIFEST["models"]}


def test_ltpa_eval_runs_from_the_installed_package(unpacked: Path, tmp_path: Path) -> None:
    card = next(c for c in MANIFEST["models"] if c["id"] == "vgg_att3_concat_pc")
    # Two of the ten classes of the fixed test images keep the run short on a shared CPU.
    classes = ("cat", "dog")
    for name in classes:
        shutil.copytree(FIXTURE / name, tmp_path / "data" / name)
    result = run_installed(unpacked, tmp_path, "-m", "ltpa", "eval", "vgg_att3_concat_pc", "--data",
                           str(tmp_path / "data"), "--device", "cpu", "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert Path(report["checkpoint"]).resolve() == (unpacked / PACKAGED_ZOO / card["file"]).resolve()
    # The card's recorded predictions on these images give the same error (one image of 40 is
    # 2.5 points).
    wanted = {card["class_names"].index(name) for name in classes}
    pairs = [(p, label) for p, label in zip(card["fixture"]["predictions"], card["fixture"]["labels"])
             if label in wanted]
    wrong = sum(p != label for p, label in pairs)
    assert report["images"] == len(pairs) == 40
    assert report["top1_error"] == pytest.approx(100 * wrong / len(pairs), abs=2.5)


def test_an_installed_package_pointed_at_an_empty_zoo_says_where_it_looked(
        unpacked: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no_zoo"
    empty.mkdir()
    result = run_installed(unpacked, tmp_path, "-m", "ltpa", "eval", "vgg_att3_concat_pc", "--data",
                           str(FIXTURE), LTPA_ZOO=str(empty))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()  # one line, no traceback
    assert line.startswith("ltpa eval: error: ")
    assert f"no model zoo at {empty} (set by LTPA_ZOO): it has no manifest.json" in line
