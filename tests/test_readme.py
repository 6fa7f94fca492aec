"""README.md and docs/ cannot drift: generated sections are regenerated and compared, the README's
example runs, its commands parse and match CI, and every relative link points at a real file."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ltpa
from ltpa.cli import build_parser
from ltpa.cli import main as cli_main
from ltpa.maintainer.docs import (
    GENERATED_SECTIONS,
    count_parameters,
    models_section_markdown,
    models_table_markdown,
    modules_markdown,
    read_section,
    replace_section,
    summarise_model,
    update_docs,
)

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
CI_SCRIPT = (REPO / ".ci" / "run").read_text(encoding="utf-8")
DOCS = sorted((REPO / "docs").glob("*.md"))
REGENERATE = 'python3 -c "from ltpa.maintainer.docs import update_docs; update_docs()"'


def generated(path: str, name: str):
    return next(s for s in GENERATED_SECTIONS if (s.path, s.name) == (path, name))


def test_models_section_is_the_generated_one() -> None:
    section = generated("docs/models.md", "models")
    assert section.current() == models_section_markdown().rstrip("\n"), (
        f"docs/models.md's models section is stale: run `ltpa models --update-readme docs/models.md`"
    )


def test_module_tree_is_the_generated_one() -> None:
    assert generated("docs/architecture.md", "modules").current() == modules_markdown(REPO), (
        f"docs/architecture.md's module tree is stale: run {REGENERATE}"
    )


def test_module_tree_lists_every_module_once() -> None:
    listed = re.findall(r"^- `([^`]+)`", modules_markdown(REPO), flags=re.M)
    on_disk = ["app.py"] + sorted(
        p.relative_to(REPO).as_posix() for folder in ("ltpa", "pages", "bench")
        for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts
    )
    assert sorted(listed) == sorted(on_disk)
    assert "`ltpa/maintainer/docs.py`: Documentation generated from the code" in modules_markdown(REPO)


def test_every_generated_section_has_its_markers_once() -> None:
    for section in GENERATED_SECTIONS:
        text = (REPO / section.path).read_text(encoding="utf-8")
        assert text.count(f"<!-- section:{section.name} -->") == 1, section
        assert text.count(f"<!-- /section:{section.name} -->") == 1, section


def test_update_docs_rewrites_a_stale_section_and_only_that(tmp_path: Path) -> None:
    """update_docs on a copy of the repository's documents: a stale section comes back exactly."""
    for section in GENERATED_SECTIONS:
        target = tmp_path / section.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((REPO / section.path).read_text(encoding="utf-8"), encoding="utf-8")
    for folder in ("ltpa", "pages", "bench", "assets"):
        (tmp_path / folder).symlink_to(REPO / folder)
    (tmp_path / "app.py").symlink_to(REPO / "app.py")
    update_docs(tmp_path)  # whatever the repository's copies lack, so that only the damage below shows
    current = (tmp_path / "docs/models.md").read_text()
    (tmp_path / "docs/models.md").write_text(current.replace("| `vgg` |", "| `not_vgg` |"))
    assert update_docs(tmp_path) == ["docs/models.md#models"]
    assert (tmp_path / "docs/models.md").read_text() == current
    assert "| `vgg` |" in current
    assert update_docs(tmp_path) == []


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


def test_cli_updates_a_models_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "models.md"
    doc.write_text("# x\n\n<!-- section:models -->\nold\n<!-- /section:models -->\ntail\n")
    assert cli_main(["models", "--update-readme", str(doc)]) == 0
    text = doc.read_text()
    assert read_section(text, "models") == models_section_markdown().rstrip("\n")
    assert text.startswith("# x\n") and text.endswith("<!-- /section:models -->\ntail\n")
    assert cli_main(["models", "--update-readme", str(doc)]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_missing_markers_are_an_error() -> None:
    with pytest.raises(ValueError, match="section:models"):
        replace_section("no markers here", "models", "body")


def test_readme_stays_short() -> None:
    assert len(README.splitlines()) < 250, "README.md is for users: move details into docs/"


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def test_readme_library_example_runs() -> None:
    """The README's Python example, run as written from the repository root, needs only ltpa."""
    (example,) = fenced_blocks(README, "python")
    assert [line for line in example.splitlines() if line.startswith(("import ", "from "))] == ["import ltpa"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LTPA_ZOO", None)
    done = subprocess.run([sys.executable, "-c", example], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[('cat', ")  # the gallery's cat photo, top class first
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == ["layer7", "layer10", "layer13"]


def shown_commands(text: str) -> list[list[str]]:
    """The ``ltpa ...`` lines of a Markdown file's bash blocks, as argument lists."""
    blocks = [block.replace("\\\n", " ") for block in fenced_blocks(text, "bash")]
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("ltpa ")]


def test_shown_commands_parse() -> None:
    """Every command README.md and docs/ show in a bash block is a real command with real options."""
    parser = build_parser()
    for document in [REPO / "README.md", *DOCS]:
        for argv in shown_commands(document.read_text(encoding="utf-8")):
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{document.name}: command does not parse: ltpa {' '.join(argv)}")


def test_readme_shows_every_user_command() -> None:
    (subparsers,) = [a for a in build_parser()._actions if a.dest == "command"]
    user_commands = set(subparsers.choices) - {"zoo"}
    assert user_commands <= {argv[0] for argv in shown_commands(README)}, user_commands


def test_readme_names_the_maintainer_group() -> None:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "command"]
    assert "zoo" in subparsers.choices, "maintainer commands are grouped as `ltpa zoo ...`"
    zoo = subparsers.choices["zoo"]
    (zoo_commands,) = [a for a in zoo._actions if getattr(a, "choices", None)]
    named = re.search(r"grouped under `ltpa zoo \.\.\.` \(([^)]*)\)", " ".join(README.split()))
    assert named is not None
    assert sorted(re.findall(r"`([a-z-]+)`", named.group(1))) == sorted(zoo_commands.choices)


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


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (outside code blocks)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def relative_links(text: str) -> list[str]:
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"[a-z]+:", link)]


@pytest.mark.parametrize("document", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_relative_links_point_at_files_and_headings(document: Path) -> None:
    links = relative_links(document.read_text(encoding="utf-8"))
    for link in links:
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        assert path.exists(), f"{document.name}: {link} points at a missing file"
        if anchor:
            assert anchor in heading_anchors(path.read_text(encoding="utf-8")), (
                f"{document.name}: {link} names a heading {path.name} does not have")


def test_link_checker_catches_a_broken_link() -> None:
    assert relative_links("[a](docs/x.md) [b](https://example.org) [c](#top)") == ["docs/x.md", "#top"]
    assert "retraining-and-promoting-maintainers" in heading_anchors("## Retraining and promoting (maintainers)\n")
    assert heading_anchors("```\n# not a heading\n```\n") == set()


def test_readme_links_every_document_in_docs() -> None:
    for document in DOCS:
        assert f"(docs/{document.name})" in README, f"README.md does not link docs/{document.name}"
