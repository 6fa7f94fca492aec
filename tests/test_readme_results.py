"""The README's result tables are generated from the shipped files, so they cannot drift."""
from __future__ import annotations

from pathlib import Path

from ltpa.baselines import gaps_markdown, zoo_gaps
from ltpa.robustness import load_results, results_markdown
from ltpa.shipping import zoo_table_markdown
from ltpa.zoo import DEFAULT_ZOO_DIR, read_manifest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def section(name: str) -> str:
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    assert start in README and end in README, f"README lacks the {name} section markers"
    return README[README.index(start) + len(start):README.index(end)].strip()


def test_readme_zoo_table_matches_the_manifest() -> None:
    cards = read_manifest(DEFAULT_ZOO_DIR)["models"]
    assert section("zoo") == zoo_table_markdown(cards, DEFAULT_ZOO_DIR)


def test_readme_robustness_tables_match_the_shipped_results() -> None:
    shipped = load_results()
    assert shipped is not None, "assets/robustness/robustness.json is missing"
    generated = results_markdown(shipped).splitlines()
    rows = [l for l in section("robustness").splitlines() if l.startswith("| ") and "`" in l]
    assert rows == [l for l in generated if l.startswith("| ") and "`" in l]
    assert len(rows) == 2 * len(shipped["models"])  # accuracy and fooling rate per model


def test_readme_baselines_table_matches_the_cards(monkeypatch) -> None:
    monkeypatch.delenv("LTPA_ZOO", raising=False)
    assert section("baselines") == gaps_markdown(zoo_gaps(DEFAULT_ZOO_DIR))
