"""The result tables of README.md and docs/ are generated from the shipped files, so they cannot
drift: each is rebuilt from the manifest, the cards or the robustness results and compared."""
from __future__ import annotations

from pathlib import Path

import pytest

from ltpa.maintainer.baselines import gaps_markdown, zoo_gaps
from ltpa.maintainer.docs import GENERATED_SECTIONS, read_section
from ltpa.maintainer.shipping import zoo_table_markdown
from ltpa.robustness import load_results, results_markdown
from ltpa.zoo import PAPER_CIFAR10_ERROR, read_manifest

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "assets" / "models"


def section(path: str, name: str) -> str:
    return read_section((REPO / path).read_text(encoding="utf-8"), name).strip()


@pytest.fixture(autouse=True)
def shipped_zoo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LTPA_ZOO", raising=False)


def test_readme_zoo_summary_has_every_shipped_model_with_its_errors() -> None:
    cards = read_manifest(ZOO)["models"]
    rows = [line for line in section("README.md", "zoo-summary").splitlines()[2:]]
    assert len(rows) == len(cards)
    for row, card in zip(rows, cards):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        # The paper's figure is for its softmax model; a deviation from it has none to meet.
        softmax = card["kwargs"].get("normalisation", "softmax") == "softmax"
        paper = PAPER_CIFAR10_ERROR.get(card["registry_name"]) if softmax else None
        assert cells == [f"`{card['id']}`", card["paper_name"], f"{card['test_error']:.2f}%",
                         "—" if paper is None else f"{paper:.2f}%"]


def test_docs_zoo_table_matches_the_manifest() -> None:
    assert section("docs/zoo.md", "zoo") == zoo_table_markdown(read_manifest(ZOO)["models"], ZOO)


def test_docs_robustness_tables_match_the_shipped_results() -> None:
    shipped = load_results()
    assert shipped is not None, "assets/robustness/robustness.json is missing"
    assert section("docs/results.md", "robustness") == results_markdown(shipped).strip()
    rows = [line for line in section("docs/results.md", "robustness").splitlines()
            if line.startswith("| ") and "`" in line]
    assert len(rows) == 2 * len(shipped["models"])  # accuracy and fooling rate per model


def test_docs_baselines_table_matches_the_cards() -> None:
    assert section("docs/reproduction.md", "baselines") == gaps_markdown(zoo_gaps(ZOO))


@pytest.mark.parametrize("generated", [s for s in GENERATED_SECTIONS
                                       if s.name in ("zoo-summary", "zoo", "baselines", "robustness")],
                         ids=lambda s: f"{s.path}#{s.name}")
def test_result_sections_are_current(generated) -> None:
    assert generated.current() == generated.expected(), (
        f"{generated.path}'s {generated.name} section is stale: run "
        'python3 -c "from ltpa.maintainer.docs import update_docs; update_docs()"'
    )


def test_figures_quoted_in_the_prose_match_the_cards() -> None:
    """The shipped errors the README and docs/reproduction.md quote in prose are the cards' errors."""
    errors = {card["paper_name"]: f"{card['test_error']:.2f}%" for card in read_manifest(ZOO)["models"]}
    prose = " ".join((REPO / "docs" / "reproduction.md").read_text(encoding="utf-8").split())
    for notation, error in errors.items():
        if notation.startswith("("):
            assert f"{notation} {error}" in prose, (notation, error)
