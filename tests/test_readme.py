"""The README cannot drift: its Models section is regenerated and compared; its commands match CI."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

import ltpa
from ltpa.cli import main as cli_main
from ltpa.docs import (
    count_parameters,
    models_section_markdown,
    models_table_markdown,
    read_section,
    replace_section,
    summarise_model,
)

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
CI_SCRIPT = (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_models_section_is_the_generated_one() -> None:
    expected = models_section_markdown().rstrip("\n")
    assert read_section(README, "models") == expected, (
        "README's models section is stale: run `ltpa models --update-readme README.md`"
    )


def test_table_has_one_row_per_registered_model_with_real_figures() -> None:
    rows = [line for line in models_table_markdown().splitlines()[2:] if line.startswith("|")]
    assert len(rows) == len(ltpa.list_models())
    for row, name in zip(rows, ltpa.list_models()):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == f"`{name}`"
        assert cells[1] == ltpa.get_spec(name).paper_name
        model = ltpa.create_model(name, width=0.7) if not name.startswith("resnet") else None
        if model is not None:  # width-0.7 count checked against a real model; ResNets are slow
            assert cells[5] == f"{sum(p.numel() for p in model.parameters()):,}"


def test_summary_counts_and_maps_agree_with_real_models() -> None:
    summary = summarise_model("vgg_att3_concat_pc")
    model = ltpa.create_model("vgg_att3_concat_pc").eval()
    assert summary.params[1.0] == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 32, 32))
    assert summary.map_sizes == tuple(tuple(m.shape[-2:]) for m in out.maps)
    assert summary.stages == out.stages
    assert count_parameters("resnet164") == summarise_model("resnet164").params[1.0]


def test_cli_prints_the_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["models", "--markdown"]) == 0
    assert capsys.readouterr().out == models_section_markdown()
    assert cli_main(["models"]) == 0
    plain = capsys.readouterr().out
    assert "|" not in plain
    for name in ltpa.list_models():
        assert re.search(rf"^{name}\s", plain, flags=re.M), name


def test_cli_updates_a_readme_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- section:models -->\nold\n<!-- /section:models -->\ntail\n")
    assert cli_main(["models", "--update-readme", str(readme)]) == 0
    text = readme.read_text()
    assert read_section(text, "models") == models_section_markdown().rstrip("\n")
    assert text.startswith("# x\n") and text.endswith("<!-- /section:models -->\ntail\n")
    assert cli_main(["models", "--update-readme", str(readme)]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_missing_markers_are_an_error() -> None:
    with pytest.raises(ValueError, match="section:models"):
        replace_section("no markers here", "models", "body")


def ci_commands() -> list[str]:
    return [line.strip() for line in CI_SCRIPT.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_has_the_ci_test_command() -> None:
    lines = CI_SCRIPT.splitlines()
    marker = lines.index("# README test command:")
    test_command = lines[marker + 1].strip()
    assert test_command == "python3 -m pytest -q"
    assert test_command in README


def test_readme_installs_what_ci_installs() -> None:
    """Same pip install of the same requirements file (CI only adds ``python3 -m`` and ``-q``)."""
    ci_installs = [c for c in ci_commands() if "pip install" in c and "requirements" in c]
    assert len(ci_installs) == 1

    def pip_arguments(command: str) -> list[str]:
        words = shlex.split(command.split("&&")[0])
        words = words[words.index("install") + 1:]
        return [w for w in words if w not in ("-q", "--quiet")]

    readme_installs = [line for line in README.splitlines() if "pip install" in line]
    assert any(pip_arguments(line) == pip_arguments(ci_installs[0]) for line in readme_installs), (
        readme_installs, ci_installs
    )
