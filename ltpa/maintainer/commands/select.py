"""``ltpa zoo select``: which seed of a recipe ships, chosen on the validation split by a rule.

Reads each seed's run folder (its ``log.json``) or card (JSON), applies the rule to their final
validation errors, prints the candidates and the choice, and writes the selection record that
``ltpa zoo promote --selection FILE`` stores on the shipped card (ltpa.maintainer.selection).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ltpa.maintainer.selection import SELECTION_RULES, selection_record, validation_error
from ltpa.training import LOG_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path,
                        help="each seed's run folder (with log.json) or card (.json)")
    parser.add_argument("--rule", default="lowest_validation_error", choices=list(SELECTION_RULES),
                        help="how the shipped seed is chosen")
    parser.add_argument("--out", type=Path, default=None, help="write the selection record here")


def _read(path: Path) -> tuple[str, dict]:
    """(run id, record) of a run folder or a card; ValueError for anything else."""
    source = path / LOG_FILE if path.is_dir() else path
    if not source.is_file():
        raise ValueError(f"{path} is neither a run folder with {LOG_FILE} nor a card file")
    try:
        record = json.loads(source.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{source} cannot be read as JSON: {error}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{source} holds no run record")
    return (path.name if path.is_dir() else str(record.get("id") or path.stem)), record


def run(args: argparse.Namespace) -> int:
    errors = {}
    for path in args.runs:
        run_id, record = _read(path)
        if run_id in errors:
            raise ValueError(f"{run_id} is given twice")
        errors[run_id] = validation_error(record)
    record = selection_record(errors, args.rule)
    for run_id, error in record["candidates"].items():
        print(f"{'*' if run_id == record['chosen'] else ' '} {run_id}: {error:.2f}% validation error")
    print(f"chosen: {record['chosen']} ({args.rule}: {record['rule_text']})")
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
