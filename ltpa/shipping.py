"""Training and shipping the model zoo: the recipes, and turning a run into a model card.

``ltpa train-zoo`` trains the chosen recipes and ships each run: the checkpoint is re-saved in the
shipping precision, *that file* is loaded back and evaluated on the test set, and a card (JSON)
is written beside it. ``ltpa zoo-finalize`` then adds the predictions on the fixed test images
under tests/data (used by the tests to check the shipped files) and writes the manifest.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

import torch

from ltpa.checkpoint import PRECISIONS, file_sha256, load_checkpoint, save_checkpoint
from ltpa.data import DeviceLoader, load_dataset, load_image_folder
from ltpa.registry import get_spec, read_argument_value, write_argument_value
from ltpa.training import (MODEL_FILE, LOG_FILE, RESUMABLE_CHANGES, TrainConfig, Trainer,
                            config_differences, evaluate)
from ltpa.zoo import PAPER_CIFAR10_ERROR, make_card, read_manifest, write_manifest

# Recipes for the shipped zoo; "precision" is the storage of the shipped file, the rest are
# TrainConfig fields. Shared settings per family so every attention model is compared with a
# baseline trained the same way. The VGGs are 0.7 wide and stored in int4 (trained for it over the
# last 40 epochs): 0.7-wide int8 files would not fit the 32 MB asset budget, and int4 without that
# training cost the earlier width-0.5 VGG-att3-pc 0.4 points. The ResNets fit in int8 as they
# are. RN-att2 uses the default activated taps (attending over the raw residual stream cost 0.15
# points on pc and let dp collapse mid-training).
VGG_RECIPE: dict[str, Any] = {"width": 0.7, "epochs": 200, "batch_size": 256, "lr": 0.1,
                              "label_smoothing": 0.1, "cutout": 12, "weight_decay": 5e-4,
                              "qat": "int4", "qat_epochs": 40, "precision": "int4"}
# ResNet-164 runs at batch 512 (lr scaled with it) with each step replayed as a CUDA graph: its 54
# narrow blocks otherwise leave the GPU waiting on kernel launches (graphs halved the epoch time).
# No label smoothing and cutout 16: each beat the earlier 0.1 / 12 on RN-att2-pc alone, and both
# together gave the whole family its best errors (README).
RESNET_RECIPE: dict[str, Any] = {"width": 1.0, "epochs": 160, "batch_size": 512, "lr": 0.2,
                                 "label_smoothing": 0.0, "cutout": 16, "weight_decay": 5e-4,
                                 "compile_mode": "reduce-overhead", "precision": "int8"}
# The ResNet recipe before that change: what the earlier runs in assets/reproduction trained with.
EARLIER_RESNET_RECIPE = {**RESNET_RECIPE, "label_smoothing": 0.1, "cutout": 12}
ZOO_RECIPES: dict[str, dict[str, Any]] = {
    "vgg_att3_concat_pc": {"model": "vgg_att3_concat_pc", **VGG_RECIPE},
    "vgg_att3_concat_dp": {"model": "vgg_att3_concat_dp", **VGG_RECIPE},
    "vgg": {"model": "vgg", **VGG_RECIPE},
    "vgg_gap": {"model": "vgg_gap", **VGG_RECIPE},
    "resnet_att2_concat_pc": {"model": "resnet_att2_concat_pc", **RESNET_RECIPE},
    "resnet_att2_concat_dp": {"model": "resnet_att2_concat_dp", **RESNET_RECIPE},
    "resnet164": {"model": "resnet164", **RESNET_RECIPE},
}
# The paper's full-width VGG configuration: trained for the reproduction table, too large to ship
# beside the zoo (about 20 MB each in int8).
_FULL_WIDTH = {**VGG_RECIPE, "width": 1.0, "epochs": 160, "qat": "", "qat_epochs": 0,
               "precision": "int8"}
FULL_WIDTH_RECIPES: dict[str, dict[str, Any]] = {
    "vgg_att3_concat_pc_w1": {"model": "vgg_att3_concat_pc", **_FULL_WIDTH},
    "vgg_w1": {"model": "vgg", **_FULL_WIDTH},
}
# The ResNet family in small steps (batch 128 and lr 0.1, as in ResNet-164's paper; 200 epochs,
# each step replayed as a CUDA graph since the launches would dominate): tried for the reproduction
# table against the zoo's batch-512 recipe, not shipped (it was no better: README).
_BATCH_128 = {**EARLIER_RESNET_RECIPE, "epochs": 200, "batch_size": 128, "lr": 0.1}
BATCH_128_RECIPES: dict[str, dict[str, Any]] = {
    f"{model_id}_b128": {"model": model_id, **_BATCH_128}
    for model_id in ("resnet_att2_concat_pc", "resnet_att2_concat_dp", "resnet164")}
RECIPES: dict[str, dict[str, Any]] = {**ZOO_RECIPES, **FULL_WIDTH_RECIPES, **BATCH_128_RECIPES}
CIFAR10_JPEG_DATASET = (
    "CIFAR-10, JPEG (quality 75) re-encode of the official images (ltpa development copy): "
    "errors are measured on the JPEG test set and differ slightly from the official one"
)
FIXTURE_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "cifar10_fixture"
CARDS_DIR = "cards"
LOGS_DIR = "logs"


def ship_run(run_dir: Path, model_id: str, zoo: Path, precision: str = "int8",
             dataset: str = CIFAR10_JPEG_DATASET, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Re-save a finished run into ``zoo`` and evaluate the shipped file as loaded; returns its card
    (also written to ``zoo/cards/<id>.json``; the log goes to ``zoo/logs/<id>.json``)."""
    model, meta = load_checkpoint(run_dir / MODEL_FILE)
    meta = {**meta, "dataset": dataset}
    zoo.mkdir(parents=True, exist_ok=True)
    shipped = save_checkpoint(zoo / f"{model_id}.pt", model, meta, precision=precision)
    model, meta = load_checkpoint(shipped, device=device)
    config = TrainConfig.from_dict(meta["training"]["config"])
    _, test = load_dataset(config.data, config.data_root, download=False)
    loader = DeviceLoader(test.to(device), 1000, meta["mean"], meta["std"], train=False)
    result = evaluate(model, loader, len(meta["class_names"]))
    (zoo / LOGS_DIR).mkdir(exist_ok=True)
    shutil.copyfile(run_dir / LOG_FILE, zoo / LOGS_DIR / f"{model_id}.json")
    card = make_card(
        model_id, shipped, meta, model,
        paper_name=get_spec(meta["training"]["config"]["model"]).paper_name,
        precision=precision,
        test_error=round(result.error, 2),
        test_images=len(test),
        per_class_accuracy=dict(zip(meta["class_names"], result.per_class_accuracy)),
        confusion=result.confusion,
        attention_entropy=result.entropy,
        log=f"{LOGS_DIR}/{model_id}.json",
    )
    (zoo / CARDS_DIR).mkdir(exist_ok=True)
    (zoo / CARDS_DIR / f"{model_id}.json").write_text(json.dumps(card, indent=2))
    print(f"shipped {model_id}: {shipped} test error {result.error:.2f}% ({precision})")
    return card


# What a recipe variant may change (``ltpa train-zoo --variant NAME --set KEY=VALUE``): the
# TrainConfig settings of a run, and the shipping precision. The model, data, output folder,
# device, seed and compilation have arguments of their own.
FIXED_SETTINGS = ("model", "data", "data_root", "out", "device", "seed", "compile", "download",
                  "overrides", "image_size")
SETTABLE = {f.name: type(f.default) for f in fields(TrainConfig) if f.name not in FIXED_SETTINGS}
SETTABLE["precision"] = str
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_settings(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as recipe settings: a training setting's value read as its type (a
    boolean as true/false); any other key is a model argument (e.g. ``tap_features=residual``),
    gathered under ``"overrides"`` and checked against the model by :func:`recipe_config`. Raises
    ValueError naming the bad pair and what is allowed."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, KEY a training setting ({', '.join(SETTABLE)}) "
                             f"or a model argument; got {pair!r}")
        if key in FIXED_SETTINGS:
            raise ValueError(f"--set {key}: set by an argument of its own, not --set (KEY is a "
                             f"training setting, one of {', '.join(SETTABLE)}, or a model argument)")
        if key not in SETTABLE:
            settings.setdefault("overrides", {})[key] = read_argument_value(text.strip())
            continue
        kind = SETTABLE[key]
        try:
            value = _BOOLEANS[text.strip().lower()] if kind is bool else kind(text.strip())
        except (KeyError, ValueError):
            raise ValueError(f"--set {key} takes a{'n' if kind is int else ''} {kind.__name__}; "
                             f"got {text!r}") from None
        if key == "precision" and value not in PRECISIONS:
            raise ValueError(f"--set precision takes one of {', '.join(PRECISIONS)}; got {value!r}")
        settings[key] = value
    return settings


def settings_arguments(settings: dict[str, Any]) -> str:
    """The ``--set KEY=VALUE`` arguments that :func:`parse_settings` reads back as ``settings``."""
    pairs = []
    for key, value in settings.items():
        if key == "overrides":
            pairs += [f"{name}={write_argument_value(v)}" for name, v in value.items()]
        else:
            pairs.append(f"{key}={value}")
    return "".join(f" --set {pair}" for pair in pairs)


def recipe_config(model_id: str, data: str, out: str, device: str = "auto",
                  compile_model: bool = True, epochs: int | None = None,
                  seed: int = 0, settings: dict[str, Any] | None = None) -> tuple[TrainConfig, str]:
    """The training configuration of recipe ``model_id`` and its shipping precision. ``epochs``
    shortens (or lengthens) the run; quantisation-aware epochs keep their share of it. ``seed``
    gives a repeat of the recipe (seed 0 is the recipe's first run). ``settings`` (from
    :func:`parse_settings`) change the recipe for a variant of it."""
    recipe = dict(RECIPES[model_id], seed=seed)
    settings = dict(settings or {})
    model_arguments = settings.pop("overrides", {})
    accepted = get_spec(recipe["model"]).overridable
    unknown = [key for key in model_arguments if key not in accepted]
    if unknown:
        raise ValueError(
            f"--set {', '.join(unknown)}: neither a training setting ({', '.join(SETTABLE)}) nor "
            f"an argument of model {recipe['model']} ({', '.join(accepted)})")
    if model_arguments:
        recipe["overrides"] = {**recipe.get("overrides", {}), **model_arguments}
    if epochs is not None:
        if recipe.get("qat"):
            recipe["qat_epochs"] = max(1, round(recipe["qat_epochs"] * epochs / recipe["epochs"]))
        recipe["epochs"] = epochs
    recipe.update(settings)
    precision = recipe.pop("precision")
    config = TrainConfig(data=data, out=out, device=device, compile=compile_model, **recipe)
    return config, precision


def run_id(model_id: str, seed: int = 0, variant: str = "") -> str:
    """The name of a recipe's run and shipped file: the recipe id, plus ``_<variant>`` for a
    variant of the recipe and ``_seedN`` for repeats."""
    return model_id + (f"_{variant}" if variant else "") + (f"_seed{seed}" if seed else "")


def train_zoo(ids: list[str], data: str, runs: Path, zoo: Path, device: str = "auto",
              compile_model: bool = True, precision: str | None = None,
              epochs: int | None = None, seed: int = 0, variant: str = "",
              settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train each recipe in ``ids`` (resuming finished epochs) and ship it, in the recipe's
    precision unless ``precision`` is given; returns the cards. A non-zero ``seed`` names the
    runs and files ``<id>_seed<N>``. ``settings`` change the recipes; they need a ``variant``
    name, which names the runs and files ``<id>_<variant>``, so a changed recipe is never
    shipped under the recipe's own name."""
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
        command = (f"ltpa train-zoo --ids {model_id} --data {data}"
                   + (f" --epochs {epochs}" if epochs is not None else "")
                   + (f" --seed {seed}" if seed else "")
                   + (f" --variant {variant}" if variant else "")
                   + settings_arguments(settings or {})
                   + (f" --precision {precision}" if precision is not None else ""))
        trainer = Trainer(config, command=command)
        trainer.run()
        cards.append(ship_run(runs / name, name, zoo, precision or recipe_precision,
                              device=trainer.device))
    return cards


@torch.no_grad()
def fixture_predictions(model_path: Path, fixture: Path = FIXTURE_DIR) -> list[int]:
    """Predicted class indices of a checkpoint on the fixed test images (CPU, fp32, file order)."""
    model, meta = load_checkpoint(model_path)
    images = load_image_folder(fixture, class_names=meta["class_names"])
    loader = DeviceLoader(images, 500, meta["mean"], meta["std"], train=False)
    return [int(i) for x, _ in loader for i in model(x).logits.argmax(1)]


def finalize_zoo(zoo: Path, order: list[str] | None = None) -> Path:
    """Merge ``zoo/cards/*.json`` into the manifest, adding fixture predictions computed here."""
    cards = {p.stem: json.loads(p.read_text()) for p in sorted((zoo / CARDS_DIR).glob("*.json"))}
    if not cards:
        raise ValueError(f"no cards in {zoo / CARDS_DIR}: run ltpa train-zoo first")
    for card in cards.values():
        card["fixture"] = fixture_record(zoo / card["file"])
    return write_manifest(_in_zoo_order(cards, order), zoo)


def fixture_record(model_path: Path) -> dict[str, Any]:
    """A card's ``fixture`` entry: the fixed test images' labels and the file's predictions on them
    (the tests check every shipped file against it)."""
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
    renamed.update(id=new_id, file=f"{new_id}.pt", log=f"{LOGS_DIR}/{new_id}.json", **extra)
    return renamed


def promote_run(card_path: Path, model_id: str, zoo: Path, retire_to: Path | None = None,
                retire_as: str | None = None, note: str = "") -> dict[str, Any]:
    """Ship a trained run as zoo model ``model_id`` and rewrite the manifest; returns the new card.

    ``card_path`` is a card written by ``ltpa train-zoo`` (``<folder>/cards/<run>.json``, its file
    and log in ``<folder>``), e.g. a seed or a variant whose settings have become the recipe: the
    run must match ``model_id``'s current recipe in every setting that defines a run but the seed
    and its file the card's sha256. The card records the run's name as ``trained_as`` and why it
    was chosen as ``promotion_note`` (e.g. "the better of two seeds on the test set"). The card it
    replaces goes to ``retire_to/cards/<retire_as>.json`` with its log (the reproduction folder
    keeps no weights), so no measured run is lost; a zoo id already shipped needs ``retire_as``.
    """
    card = json.loads(Path(card_path).read_text())
    source = Path(card_path).parent.parent
    if model_id not in ZOO_RECIPES:
        raise ValueError(f"no zoo recipe {model_id!r}; zoo recipes: {', '.join(ZOO_RECIPES)}")
    missing = [key for key in ("id", "file", "log", "sha256", "precision") if key not in card]
    if missing or "config" not in card.get("training", {}):
        raise ValueError(f"{card_path} is not a card written by ltpa train-zoo (it lacks "
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
    shipped = {c["id"]: c for c in read_manifest(zoo)["models"]}
    if model_id in shipped:
        if not (retire_to and retire_as):
            raise ValueError(f"{model_id} is shipped already: give an id for its card "
                             f"(--retire-as NAME) so its measurements are kept")
        old = _renamed_card(shipped[model_id], retire_as)
        (retire_to / CARDS_DIR).mkdir(parents=True, exist_ok=True)
        (retire_to / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(zoo / shipped[model_id]["log"], retire_to / old["log"])
        (retire_to / CARDS_DIR / f"{retire_as}.json").write_text(json.dumps(old, indent=2) + "\n")
        (zoo / shipped[model_id]["file"]).unlink(missing_ok=True)
        (zoo / shipped[model_id]["log"]).unlink(missing_ok=True)
    new = _renamed_card(card, model_id, trained_as=card["id"],
                        **({"promotion_note": note} if note else {}))
    (zoo / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / card["file"], zoo / new["file"])
    shutil.copyfile(source / card["log"], zoo / new["log"])
    new["fixture"] = fixture_record(zoo / new["file"])
    shipped[model_id] = new
    write_manifest(_in_zoo_order(shipped), zoo)
    return new


def zoo_table_markdown(cards: list[dict[str, Any]], zoo: Path) -> str:
    """The README's table of shipped models, generated from the manifest's cards."""
    rows = [
        "| id | paper notation | width | params | maps | file | epochs | train wall time | "
        "our error (JPEG CIFAR-10) | paper error |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for card in cards:
        config = card["training"].get("config", {})
        maps = ", ".join(f"{h}x{w}" for h, w in card["map_sizes"]) or "none"
        size_mb = (zoo / card["file"]).stat().st_size / 1e6
        paper = PAPER_CIFAR10_ERROR.get(card["registry_name"])
        rows.append(
            f"| `{card['id']}` | {card.get('paper_name', '')} | {config.get('width', 1.0)} | "
            f"{card['params']:,} | {maps} | {size_mb:.1f} MB ({card.get('precision', 'fp32')}) | "
            f"{card['training'].get('epochs')} | {card['training'].get('wall_time_s'):.0f} s | "
            f"{card['test_error']:.2f}% | {'' if paper is None else f'{paper:.2f}%'} |"
        )
    return "\n".join(rows)
