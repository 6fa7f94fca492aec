"""Shipping the model zoo: a trained run becomes a file, a model card and a manifest entry.

``ltpa zoo train`` trains the chosen recipes (:mod:`ltpa.maintainer.recipes`) and ships each run:
the checkpoint is re-saved in the shipping precision, *that file* is loaded back and evaluated on
the test set, and a card (JSON) is written beside it. ``ltpa zoo finalize`` then adds the
predictions on the fixed test images under tests/data (the tests check every shipped file against
them) and writes the manifest. ``ltpa zoo promote`` ships an already trained run (a seed or a
variant) under a zoo id, keeping the card it replaces.
"""
from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from ltpa.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from ltpa.data import DeviceLoader, load_dataset, load_image_folder
from ltpa.maintainer.recipes import (RECIPES, VARIANT_NAME, ZOO_RECIPES, recipe_config, run_id,
                                     settings_arguments)
from ltpa.maintainer.selection import SELECTION_KEY
from ltpa.design_space import with_normalisation
from ltpa.registry import get_spec
from ltpa.training import (MODEL_FILE, LOG_FILE, RESUMABLE_CHANGES, TrainConfig, Trainer,
                           config_differences, evaluate)
from ltpa.zoo import MANIFEST_NAME, make_card, paper_cifar10_error, read_manifest, write_manifest

CIFAR10_JPEG_DATASET = (
    "CIFAR-10, JPEG (quality 75) re-encode of the official images (ltpa development copy): "
    "errors are measured on the JPEG test set and differ slightly from the official one"
)
# The fixed test images live in the clone's tests/ (not in the wheel): finalising or promoting
# a zoo is done from a clone.
FIXTURE_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "cifar10_fixture"
CARDS_DIR = "cards"
KEPT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # it names the kept card's files
LOGS_DIR = "logs"
# Shipped and kept training logs are gzipped JSON: about a sixth of the size, which the 32 MB
# asset budget needs once twelve models and their seeds' logs ship. Plain .json logs still read.
LOG_SUFFIX = ".json.gz"


def log_name(model_id: str) -> str:
    """A card's ``log``: the path of its training log, relative to the card's folder."""
    return f"{LOGS_DIR}/{model_id}{LOG_SUFFIX}"


def write_log(source: Path, target: Path) -> Path:
    """Copy a training log, gzipping it when ``target`` ends in ``.gz`` and ``source`` does not.

    The gzip header carries no time stamp or name, so the same log always gives the same bytes.

    Args:
        source: a ``log.json`` (or an already gzipped log).
        target: where it goes; its folder is made.

    Returns:
        ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    data = Path(source).read_bytes()
    if target.name.endswith(".gz") and not Path(source).name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    elif Path(source).name.endswith(".gz") and not target.name.endswith(".gz"):
        data = gzip.decompress(data)
    target.write_bytes(data)
    return target


def ship_run(run_dir: Path, model_id: str, zoo: Path, precision: str = "int8",
             dataset: str = CIFAR10_JPEG_DATASET, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Re-save a finished run into ``zoo`` and evaluate the shipped file as loaded.

    Args:
        run_dir: the run folder (``ltpa train`` output).
        model_id: the shipped file's name (without ``.pt``) and the card's id.
        zoo: where the file, ``cards/<id>.json`` and ``logs/<id>.json`` go.
        precision: storage of the shipped file.
        dataset: the card's description of the data.
        device: where the shipped file is evaluated.

    Returns:
        The card (also written to ``zoo/cards/<id>.json``).
    """
    model, meta = load_checkpoint(run_dir / MODEL_FILE)
    metrics = meta.get("metrics") or {}
    meta = {**meta, "dataset": dataset}
    zoo.mkdir(parents=True, exist_ok=True)
    shipped = save_checkpoint(zoo / f"{model_id}.pt", model, meta, precision=precision)
    model, meta = load_checkpoint(shipped, device=device)
    config = TrainConfig.from_dict(meta["training"]["config"])
    _, test = load_dataset(config.data, config.data_root, download=False)
    loader = DeviceLoader(test.to(device), 1000, meta["mean"], meta["std"], train=False)
    result = evaluate(model, loader, len(meta["class_names"]))
    write_log(run_dir / LOG_FILE, zoo / log_name(model_id))
    card = make_card(
        model_id, shipped, meta, model,
        # A normalisation other than the paper's softmax is named: the model is a deviation.
        paper_name=with_normalisation(get_spec(meta["training"]["config"]["model"]).paper_name,
                                      config.overrides.get("normalisation")),
        precision=precision,
        test_error=round(result.error, 2),
        test_images=len(test),
        per_class_accuracy=dict(zip(meta["class_names"], result.per_class_accuracy)),
        confusion=result.confusion,
        attention_entropy=result.entropy,
        log=log_name(model_id),
        # What the seed is chosen on (ltpa.maintainer.selection), as the run logged it.
        **{key: metrics[key] for key in ("validation_error", "validation_error_flip")
           if metrics.get(key) is not None},
    )
    (zoo / CARDS_DIR).mkdir(exist_ok=True)
    (zoo / CARDS_DIR / f"{model_id}.json").write_text(json.dumps(card, indent=2))
    return card


def train_zoo(ids: list[str], data: str, runs: Path, zoo: Path, device: str = "auto",
              compile_model: bool = True, precision: str | None = None,
              epochs: int | None = None, seed: int = 0, variant: str = "",
              settings: dict[str, Any] | None = None,
              on_shipped: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train each recipe in ``ids`` (resuming finished epochs) and ship it.

    Args:
        ids: recipe ids (keys of ``RECIPES``).
        data: dataset name or ImageFolder tree.
        runs: folder of the training runs.
        zoo: where shipped files and cards go.
        device: where to train.
        compile_model: whether to compile the models.
        precision: storage of the shipped files (default: each recipe's own).
        epochs: overrides the recipes' epochs.
        seed: a non-zero seed names the runs and files ``<id>_seed<N>``.
        variant: names the runs and files ``<id>_<variant>``, so a changed recipe is never
            shipped under the recipe's own name; needed with ``settings`` and only with them.
        settings: changes to the recipes (from ``parse_settings``).
        on_shipped: called with each card as soon as its file is shipped.

    Returns:
        The cards, in the order of ``ids``.

    Raises:
        ValueError: for an unknown recipe, a variant without a name or settings, or a setting
            one of the models refuses (before anything trains).
    """
    unknown = [i for i in ids if i not in RECIPES]
    if unknown:
        raise ValueError(f"no zoo recipe for {', '.join(unknown)}; recipes: {', '.join(RECIPES)}")
    if bool(variant) != bool(settings):
        raise ValueError("a recipe variant needs both a name (--variant NAME) and at least one "
                         "change (--set KEY=VALUE)")
    if variant and not VARIANT_NAME.fullmatch(variant):
        raise ValueError(f"a variant name takes letters, digits, '.' and '-' (it names files); "
                         f"got {variant!r}")
    # Every recipe's configuration first: a setting one of the models refuses stops all before
    # any training.
    configs = {model_id: recipe_config(model_id, data, str(runs / run_id(model_id, seed, variant)),
                                       device, compile_model, epochs, seed, settings)
               for model_id in ids}
    cards = []
    for model_id, (config, recipe_precision) in configs.items():
        name = run_id(model_id, seed, variant)
        command = (f"ltpa zoo train --ids {model_id} --data {data}"
                   + (f" --epochs {epochs}" if epochs is not None else "")
                   + (f" --seed {seed}" if seed else "")
                   + (f" --variant {variant}" if variant else "")
                   + settings_arguments(settings or {})
                   + (f" --precision {precision}" if precision is not None else ""))
        trainer = Trainer(config, command=command)
        trainer.run()
        card = ship_run(runs / name, name, zoo, precision or recipe_precision, device=trainer.device)
        if on_shipped is not None:
            on_shipped(card)
        cards.append(card)
    return cards


@torch.no_grad()
def fixture_predictions(model_path: Path, fixture: Path = FIXTURE_DIR) -> list[int]:
    """Predicted class indices of a checkpoint on the fixed test images (CPU, fp32, file order).

    Args:
        model_path: the checkpoint.
        fixture: an image folder with one sub-folder per class.

    Returns:
        One class index per image.
    """
    model, meta = load_checkpoint(model_path)
    images = load_image_folder(fixture, class_names=meta["class_names"])
    loader = DeviceLoader(images, 500, meta["mean"], meta["std"], train=False)
    return [int(i) for x, _ in loader for i in model(x).logits.argmax(1)]


def finalize_zoo(zoo: Path, order: list[str] | None = None) -> Path:
    """Merge ``zoo/cards/*.json`` into the manifest, adding fixture predictions computed here.

    Args:
        zoo: the folder ``ltpa zoo train`` shipped into.
        order: card ids in manifest order (default: the zoo recipes'); the rest follow.

    Returns:
        The manifest's path.

    Raises:
        ValueError: when ``zoo/cards`` holds no card.
    """
    cards = {p.stem: json.loads(p.read_text()) for p in sorted((zoo / CARDS_DIR).glob("*.json"))}
    if not cards:
        raise ValueError(f"no cards in {zoo / CARDS_DIR}: run ltpa zoo train first")
    for card in cards.values():
        card["fixture"] = fixture_record(zoo / card["file"])
    return write_manifest(_in_zoo_order(cards, order), zoo)


def fixture_record(model_path: Path) -> dict[str, Any]:
    """A card's ``fixture`` entry (the tests check every shipped file against it).

    Args:
        model_path: the shipped checkpoint.

    Returns:
        The fixed test images' folder, their labels and the file's predictions on them.
    """
    labels = load_image_folder(FIXTURE_DIR).labels.tolist()
    return {"folder": "tests/data/cifar10_fixture", "labels": labels,
            "predictions": fixture_predictions(model_path, FIXTURE_DIR)}


def _in_zoo_order(cards: dict[str, dict[str, Any]], order: list[str] | None = None) -> list[dict[str, Any]]:
    """Cards by id in manifest order: ``order`` (the zoo recipes by default), then the rest."""
    order = [i for i in (order or list(ZOO_RECIPES)) if i in cards]
    return [cards[i] for i in order] + [c for i, c in cards.items() if i not in order]


def _renamed_card(card: dict[str, Any], new_id: str, **extra: Any) -> dict[str, Any]:
    """``card`` under another id: its file and log named after it, the fixture predictions dropped
    (they belong to the manifest of the zoo that ships the file)."""
    renamed = {key: value for key, value in card.items() if key != "fixture"}
    renamed.update(id=new_id, file=f"{new_id}.pt", log=log_name(new_id), **extra)
    return renamed


def promote_run(card_path: Path, model_id: str, zoo: Path, retire_to: Path | None = None,
                retire_as: str | None = None, note: str = "",
                selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ship a trained run as zoo model ``model_id`` and rewrite the manifest; returns the new card.

    ``card_path`` is a card written by ``ltpa zoo train`` (``<folder>/cards/<run>.json``, its file
    and log in ``<folder>``), e.g. a seed or a variant whose settings have become the recipe: the
    run must match ``model_id``'s current recipe in every setting that defines a run but the seed
    and its file the card's sha256. The card records the run's name as ``trained_as`` and why it
    was chosen as ``promotion_note`` (e.g. "the better of two seeds on the test set"). The card it
    replaces goes to ``retire_to/cards/<retire_as>.json`` with its log (the reproduction folder
    keeps no weights), so no measured run is lost; a zoo id already shipped needs ``retire_as``.

    Args:
        card_path: the run's card.
        model_id: the zoo id it ships as (a key of ``ZOO_RECIPES``).
        zoo: the zoo folder (its manifest is rewritten; a folder without one starts a new zoo).
        retire_to: folder for the replaced card and log.
        retire_as: id for the replaced card.
        note: why this run ships (``promotion_note``).
        selection: the rule that chose this run among its seeds and their validation errors
            (``ltpa.maintainer.selection.selection_record``); it must choose this run, and the
            other seeds' cards (beside this one) are kept in ``retire_to``.

    Returns:
        The new card, as the manifest now lists it.

    Raises:
        ValueError: for a card that is not a train card, a changed file, another recipe or
            model, or a shipped id without ``retire_as``.
    """
    card = json.loads(Path(card_path).read_text())
    source = Path(card_path).parent.parent
    if selection is not None and selection.get("chosen") != card.get("id"):
        raise ValueError(f"the selection chose {selection.get('chosen')!r}, not {card.get('id')!r}")
    if model_id not in ZOO_RECIPES:
        raise ValueError(f"no zoo recipe {model_id!r}; zoo recipes: {', '.join(ZOO_RECIPES)}")
    missing = [key for key in ("id", "file", "log", "sha256", "precision") if key not in card]
    if missing or "config" not in card.get("training", {}):
        raise ValueError(f"{card_path} is not a card written by ltpa zoo train (it lacks "
                         f"{', '.join(missing or ['training.config'])})")
    if file_sha256(source / card["file"]) != card["sha256"]:
        raise ValueError(f"{source / card['file']} does not match the sha256 in {card_path}")
    saved = card["training"]["config"]
    recipe, precision = recipe_config(model_id, saved["data"], saved["out"], seed=saved.get("seed", 0))
    differences = config_differences(saved, recipe, {*RESUMABLE_CHANGES, "seed"})
    if card.get("precision") != precision:
        differences.append(f"precision (saved {card.get('precision')!r}, now {precision!r})")
    if differences:
        raise ValueError(f"{card['id']} was not trained with the zoo recipe of {model_id}: "
                         f"{'; '.join(differences)}")
    # A folder without a manifest yet is a new zoo.
    cards = read_manifest(zoo)["models"] if (zoo / MANIFEST_NAME).is_file() else []
    shipped = {c["id"]: c for c in cards}
    if model_id in shipped:
        if not (retire_to and retire_as):
            raise ValueError(f"{model_id} is shipped already: give an id for its card "
                             f"(--retire-as NAME) so its measurements are kept")
        _keep_card(shipped.pop(model_id), zoo, retire_to, retire_as)
    if selection:  # the other seeds' cards and logs are kept, so the choice can be checked
        others = [run for run in selection.get("candidates", {}) if run != card["id"]]
        missing = [run for run in others if not (source / CARDS_DIR / f"{run}.json").is_file()]
        if missing:
            raise ValueError(f"the selection's candidates {', '.join(missing)} have no card in "
                             f"{source / CARDS_DIR}: they would not be kept")
        if others and retire_to is None:
            raise ValueError("give a folder for the other seeds' cards (retire_to)")
        keep_runs(source, others, retire_to)
    new = _renamed_card(card, model_id, trained_as=card["id"],
                        **({"promotion_note": note} if note else {}),
                        **({SELECTION_KEY: selection} if selection else {}))
    zoo.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / card["file"], zoo / new["file"])
    write_log(source / card["log"], zoo / new["log"])
    new["fixture"] = fixture_record(zoo / new["file"])
    shipped[model_id] = new
    write_manifest(_in_zoo_order(shipped), zoo)
    return new


def keep_runs(source: Path, runs: list[str], keep_to: Path) -> None:
    """Keep trained runs' cards and logs (not their weights) in ``keep_to``, under their own ids:
    the seeds a selection did not ship, or runs that do not ship at all.

    Args:
        source: the folder the runs were trained into (``cards/<run>.json`` and their logs).
        runs: the runs' ids.
        keep_to: folder of kept runs (e.g. assets/reproduction).
    """
    for run in runs:
        card_file = source / CARDS_DIR / f"{run}.json"
        log = json.loads(card_file.read_text())["log"]
        (keep_to / CARDS_DIR).mkdir(parents=True, exist_ok=True)
        write_log(source / log, keep_to / log)
        shutil.copyfile(card_file, keep_to / CARDS_DIR / card_file.name)


def _keep_card(card: dict[str, Any], zoo: Path, retire_to: Path, retire_as: str) -> None:
    """Move a shipped card and its log to ``retire_to`` as ``retire_as``; delete its file."""
    kept = _renamed_card(card, retire_as)
    (retire_to / CARDS_DIR).mkdir(parents=True, exist_ok=True)
    write_log(zoo / card["log"], retire_to / kept["log"])
    (retire_to / CARDS_DIR / f"{retire_as}.json").write_text(json.dumps(kept, indent=2) + "\n")
    (zoo / card["file"]).unlink(missing_ok=True)
    (zoo / card["log"]).unlink(missing_ok=True)


def retire_model(model_id: str, zoo: Path, retire_to: Path, retire_as: str) -> dict[str, Any]:
    """Take a model out of the zoo, keeping its card and log (not its weights) in ``retire_to``.

    Args:
        model_id: the shipped id.
        zoo: the zoo folder (its manifest is rewritten).
        retire_to: folder of kept runs (e.g. assets/reproduction).
        retire_as: the id its card is kept under (its file name there).

    Returns:
        The kept card.

    Raises:
        ValueError: for an id the zoo does not ship, or a ``retire_as`` already kept.
    """
    shipped = {card["id"]: card for card in read_manifest(zoo)["models"]}
    if model_id not in shipped:
        raise ValueError(f"{model_id!r} is not shipped in {zoo}; shipped: {', '.join(shipped)}")
    if not KEPT_ID.fullmatch(retire_as):
        raise ValueError(f"a kept card's id takes letters, digits, '_', '.' and '-'; got {retire_as!r}")
    if (retire_to / CARDS_DIR / f"{retire_as}.json").exists():
        raise ValueError(f"{retire_to / CARDS_DIR / retire_as}.json exists: choose another id")
    _keep_card(shipped.pop(model_id), zoo, retire_to, retire_as)
    write_manifest(_in_zoo_order(shipped), zoo)
    return json.loads((retire_to / CARDS_DIR / f"{retire_as}.json").read_text())


def zoo_table_markdown(cards: list[dict[str, Any]], zoo: Path) -> str:
    """The table of shipped models in docs/zoo.md, generated from the manifest's cards.

    Args:
        cards: the manifest's cards.
        zoo: the folder holding their files (their sizes are shown) and ``reproduction/`` beside
            it (the other seeds' cards).

    Returns:
        A Markdown table: the shipped file's error beside the mean and range over its recipe's
        seeds.
    """
    from ltpa.maintainer.baselines import shipped_seed_errors  # (which imports this module)

    seeds = shipped_seed_errors(zoo)
    rows = [
        "| id | paper notation | width | params | maps | file | epochs | train wall time | "
        "our error (JPEG CIFAR-10) | seeds | seed mean (range) | paper error |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for card in cards:
        config = card["training"].get("config", {})
        maps = ", ".join(f"{h}x{w}" for h, w in card["map_sizes"]) or "none"
        size_mb = (zoo / card["file"]).stat().st_size / 1e6
        paper = paper_cifar10_error(card["registry_name"], card.get("kwargs"))  # none for a deviation
        errors = list(seeds.get(card["id"], {}).values())
        pooled = (f"{sum(errors) / len(errors):.2f}% ({min(errors):.2f}-{max(errors):.2f})"
                  if len(errors) > 1 else "—")
        rows.append(
            f"| `{card['id']}` | {card.get('paper_name', '')} | {config.get('width', 1.0)} | "
            f"{card['params']:,} | {maps} | {size_mb:.1f} MB ({card.get('precision', 'fp32')}) | "
            f"{card['training'].get('epochs')} | {card['training'].get('wall_time_s'):.0f} s | "
            f"{card['test_error']:.2f}% | {len(errors)} | {pooled} | "
            f"{'—' if paper is None else f'{paper:.2f}%'} |"
        )
    return "\n".join(rows)
