"""Adversarial: attack the chosen image with FGSM / I-FGSM at a chosen epsilon and watch the
prediction and every stage's attention move; the shipped robustness curves below compare attention
models with their baseline over the whole CIFAR-10 test set.

All numbers come from ``ltpa.attacks`` and ``ltpa.robustness``; results are cached per image,
model and setting (``st.cache_data``), so display controls (gain, opacity) never recompute.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import streamlit as st
import torch

from ltpa import viz
from ltpa.attacks import APP_MAX_LEVELS, ATTACK_NAMES, DEFAULT_STEPS, smallest_flipping_epsilon
from ltpa.maps import overlay
from ltpa.preprocess import image_to_input
from ltpa.robustness import (
    DEFINITIONS,
    RESULTS_JSON,
    SHIPPED_DIR,
    AttackReport,
    attack_report,
    confidence_curve,
    confidence_figure,
    load_results,
    measured_on,
    perturbation_image,
    robustness_figure,
)
from ltpa.zoo import zoo_dir
from pages.ui import views
from pages.ui.widgets import load_model, model_or_error, zoo_choices

DISPLAY_SIDE = 224  # the 32x32 model input, enlarged with nearest neighbour so pixels stay visible
LABEL_MODES = {
    "predicted": "push away from the predicted class",
    "true": "push away from the true class (choose it)",
    "target": "pull towards a target class (choose it)",
}
LAST_RESULT = "adv.last"  # the last good result: shown again when new input is bad

st.set_page_config(page_title="Adversarial · Learn to Pay Attention", page_icon="🔎", layout="wide")
st.title("Adversarial attacks: flip the prediction, move the attention")
st.markdown(
    "The **fast gradient sign method** (FGSM) changes every colour channel of every pixel of the "
    "32×32 model input by ±ε, in the direction that hurts the classifier most (the sign of the "
    "loss gradient). ε is in grey levels: **k/255** changes a pixel by at most k of its 255 "
    "levels, usually invisible. **I-FGSM** takes several smaller steps and stays within ε. The "
    "paper reports that attention models are fooled less often than their baseline at small ε; "
    "the curves at the bottom of the page test that claim on the whole test set."
)
with st.expander("What the attention-shift figures mean"):
    st.markdown(
        "For each stage the clean and adversarial maps are compared at the model's resolution:\n"
        "- **IoU**: overlap of the two masks that keep each map's top 25% of positions "
        "(1 = the same positions, 0 = none in common);\n"
        "- **mass moved**: the total-variation distance ½·Σ|p − q| between the two maps as "
        "distributions, the share of attention that went elsewhere (0 = none, 1 = all);\n"
        "- **rank correlation**: Spearman's ρ between the two maps over all positions "
        "(1 = same ordering of where the model looks).\n\n"
        "The smallest flipping ε: for FGSM every k from 1 to 32 is tried (FGSM success is not "
        "monotone in ε, so no bisection); for I-FGSM k doubles until the attack succeeds, then is "
        "bisected, giving a k that flips while k − 1 does not."
    )

chosen, model_id, opacity, colormap, scaling = views.sidebar_inputs()


# ----------------------------------------------------------------------------- cached computations
def _checkpoint(model_key: str) -> str:
    return f"{zoo_dir()}:{model_key}:{load_model(model_key).entry.card.get('sha256', '')}"


def _tensor(x: np.ndarray, model_key: str) -> torch.Tensor:
    device = next(load_model(model_key).model.parameters()).device
    return torch.from_numpy(x)[None].to(device)


@st.cache_data(show_spinner=False, max_entries=32)
def _model_input(image_sha: str, size: int, _image: np.ndarray) -> np.ndarray:
    return image_to_input(_image, size)[0].numpy()


@st.cache_data(show_spinner="Attacking…", max_entries=128)
def _report(checkpoint: str, image_sha: str, levels: int, method: str, steps: int,
            label: int | None, target: int | None, _model_key: str, _x: np.ndarray) -> AttackReport:
    return attack_report(load_model(_model_key).model, _tensor(_x, _model_key), levels, method,
                         label, target, steps)


@st.cache_data(show_spinner="Searching the smallest flipping epsilon…", max_entries=128)
def _smallest(checkpoint: str, image_sha: str, method: str, steps: int, label: int | None,
              target: int | None, _model_key: str, _x: np.ndarray) -> int | None:
    return smallest_flipping_epsilon(load_model(_model_key).model, _tensor(_x, _model_key), method,
                                     label, target, APP_MAX_LEVELS, steps)


@st.cache_data(show_spinner="Computing confidence against epsilon…", max_entries=128)
def _curve(checkpoint: str, image_sha: str, method: str, steps: int, label: int | None,
           target: int | None, _model_key: str, _x: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray]:
    return confidence_curve(load_model(_model_key).model, _tensor(_x, _model_key), None, method,
                            label, target, steps=steps)


@st.cache_data(show_spinner=False, max_entries=4)
def _shipped_results(path: str, modified: float) -> dict[str, Any] | None:
    return load_results(path)


def shipped_results() -> dict[str, Any] | None:
    """The shipped results (re-read when the file changes), None when none are shipped."""
    path = SHIPPED_DIR / RESULTS_JSON
    return _shipped_results(str(path), path.stat().st_mtime if path.is_file() else 0.0)


def _enlarged(image: np.ndarray) -> np.ndarray:
    """A [0, 1] float H x W x 3 image as uint8, enlarged for display without smoothing."""
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return cv2.resize(pixels, (DISPLAY_SIDE, DISPLAY_SIDE), interpolation=cv2.INTER_NEAREST)


# ----------------------------------------------------------------------------- controls
choices = zoo_choices()
if not choices:
    st.stop()  # model_picker has said the zoo is empty
class_names: list[str] = []
if model_id is not None:
    loaded = model_or_error(model_id)
    if loaded is not None:
        class_names = loaded.class_names

left, middle, right = st.columns(3)
with left:
    method = st.radio("Attack", list(ATTACK_NAMES), format_func=ATTACK_NAMES.get, horizontal=True,
                      key="adv.method")
    steps = DEFAULT_STEPS
    if method == "ifgsm":
        steps = int(st.slider("I-FGSM steps", 1, 20, DEFAULT_STEPS, 1, key="adv.steps",
                              help="Each step moves 2.5·ε/steps, then is projected back within ε."))
with middle:
    levels = int(st.slider("Epsilon ε (k/255)", 0, APP_MAX_LEVELS, 4, 1, format="%d/255", key="adv.eps",
                           help="Largest change of any colour channel of any pixel, in grey levels."))
    st.caption(f"ε = {levels}/255 = {levels / 255:.4f} in pixel units [0, 1]")
with right:
    label_mode = st.radio("Label", list(LABEL_MODES), format_func=LABEL_MODES.get, key="adv.label_mode")
    chosen_class: int | None = None
    if label_mode != "predicted" and class_names:
        chosen_class = st.selectbox(
            "True class" if label_mode == "true" else "Target class", range(len(class_names)),
            format_func=lambda i: class_names[i], key=f"adv.class.{label_mode}",
        )
label = chosen_class if label_mode == "true" else None
target = chosen_class if label_mode == "target" else None


# ----------------------------------------------------------------------------- compute (or keep the last result)
def compute() -> dict[str, Any] | None:
    """This run's result, or None after showing why there is none."""
    if chosen is None or model_id is None or not class_names:
        return None
    if label_mode != "predicted" and chosen_class is None:
        st.info("Choose the class in the controls above.")
        return None
    x = _model_input(chosen.sha256, load_model(model_id).input_size, chosen.array)
    checkpoint = _checkpoint(model_id)
    try:
        report = _report(checkpoint, chosen.sha256, levels, method, steps, label, target, model_id, x)
        smallest = _smallest(checkpoint, chosen.sha256, method, steps, label, target, model_id, x)
    except (ValueError, RuntimeError) as error:
        st.error(f"Cannot attack this image: {error}")
        return None
    return {"report": report, "smallest": smallest, "model_id": model_id, "class_names": class_names,
            "image_name": chosen.name, "image_sha": chosen.sha256, "x": x, "method": method,
            "steps": steps, "label": label, "target": target, "label_mode": label_mode}


result = compute()
if result is not None:
    st.session_state[LAST_RESULT] = result
elif st.session_state.get(LAST_RESULT) is not None:
    result = st.session_state[LAST_RESULT]
    st.caption(f"Showing the last result (image **{result['image_name']}**, model `{result['model_id']}`, "
               f"{ATTACK_NAMES[result['report'].method]} at {result['report'].levels}/255) until the "
               "input above is fixed.")
if result is None:
    st.info("Choose an image and a model in the sidebar.")
    st.stop()

report: AttackReport = result["report"]
names: list[str] = result["class_names"]
clean_name, adversarial_name = names[report.clean_prediction], names[report.adversarial_prediction]
attack_name = ATTACK_NAMES[report.method]

# ----------------------------------------------------------------------------- before / after
st.subheader(f"{attack_name} at ε = {report.levels}/255")
if report.targeted:
    verdict = (f"reached the target **{names[report.attacked_class]}**" if report.flipped
               else f"did not reach the target **{names[report.attacked_class]}**")
else:
    verdict = "**flipped** the prediction" if report.flipped else "did **not** change the prediction"
st.markdown(f"The attack {verdict}: **{clean_name}** ({report.clean_probabilities.max():.1%}) → "
            f"**{adversarial_name}** ({report.adversarial_probabilities.max():.1%}).")
metrics = st.columns(3)
metrics[0].metric("Largest pixel change", f"{report.linf:.0f}/255")
smallest = result["smallest"]
metrics[1].metric(
    f"Smallest flipping ε ({attack_name})",
    f"{smallest}/255" if smallest is not None else f"none up to {APP_MAX_LEVELS}/255",
    help="The smallest k/255 at which the attack changes the prediction (or reaches the target).",
)
metrics[2].metric(f"Probability of {names[report.attacked_class]}",
                  f"{report.adversarial_probabilities[report.attacked_class]:.1%}",
                  delta=f"{100 * (report.adversarial_probabilities[report.attacked_class] - report.clean_probabilities[report.attacked_class]):+.1f} points",
                  delta_color="off")

gain = float(st.slider("Perturbation gain", 1, 100, 20, 1, key="adv.gain",
                       help="The perturbation is shown as 0.5 + gain × change: grey means no change."))
images = st.columns(3)
images[0].image(_enlarged(report.clean), caption=f"clean input (32×32): {clean_name}", width="stretch")
images[1].image(_enlarged(perturbation_image(report.perturbation, gain)),
                caption=f"perturbation × {gain:.0f} (grey = 0)", width="stretch")
images[2].image(_enlarged(report.adversarial), caption=f"adversarial input: {adversarial_name}", width="stretch")


def _top5(probabilities: np.ndarray) -> list[tuple[str, float]]:
    order = np.argsort(-probabilities, kind="stable")[:5]
    return [(names[i], float(probabilities[i])) for i in order]


charts = st.columns(2)
charts[0].plotly_chart(viz.top_k_bar(_top5(report.clean_probabilities), f"Top-5 before: {clean_name}"),
                       width="stretch", key="adv.top5.clean")
charts[1].plotly_chart(viz.top_k_bar(_top5(report.adversarial_probabilities), f"Top-5 after: {adversarial_name}"),
                       width="stretch", key="adv.top5.adversarial")

# ----------------------------------------------------------------------------- attention shift
st.subheader("Attention of every stage, clean vs adversarial")
if not report.stages:
    st.info(f"`{result['model_id']}` is a baseline without attention: it has no stage maps to compare. "
            "Pick an attention model in the sidebar.")
else:
    clean_big, adversarial_big = _enlarged(report.clean), _enlarged(report.adversarial)
    for column, stage, clean_map, adversarial_map, shift in zip(
            st.columns(len(report.stages)), report.stages, report.clean_maps, report.adversarial_maps,
            report.shifts):
        with column:
            height, width = clean_map.shape
            st.markdown(f"**{stage}** ({height}×{width} map)")
            pair = st.columns(2)
            pair[0].image(overlay(clean_big, clean_map, opacity, colormap, scaling), caption="clean", width="stretch")
            pair[1].image(overlay(adversarial_big, adversarial_map, opacity, colormap, scaling),
                          caption="adversarial", width="stretch")
            rho = "n/a" if np.isnan(shift.spearman) else f"{shift.spearman:.3f}"
            st.caption(f"IoU {shift.iou:.3f} · mass moved {shift.moved_mass:.1%} · rank correlation {rho}")
    st.dataframe([{
        "stage": stage, "map size": f"{c.shape[0]}x{c.shape[1]}", "IoU (top 25%)": round(s.iou, 4),
        "mass moved": round(s.moved_mass, 4),
        "rank correlation": None if np.isnan(s.spearman) else round(s.spearman, 4),
    } for stage, c, s in zip(report.stages, report.clean_maps, report.shifts)], hide_index=True, width="stretch")

# ----------------------------------------------------------------------------- confidence against epsilon
st.subheader("This image's confidence against ε")
ids = [c.id for c in choices]
labels = {c.id: c.paper_name for c in choices}
default_curve_ids = [result["model_id"]] if result["model_id"] in ids else []
baseline = next((c.id for c in choices if not c.attention and not c.gap), None)
if baseline and baseline not in default_curve_ids:
    default_curve_ids.append(baseline)
curve_ids = st.multiselect("Models", ids, default=default_curve_ids, format_func=lambda i: f"{labels[i]} ({i})",
                           key="adv.curve_models")
if result["label_mode"] == "predicted":
    followed = "each model's own clean prediction"
else:
    followed = f"{'target' if result['target'] is not None else 'true'} class {names[report.attacked_class]}"
curves: dict[str, tuple[list[int], np.ndarray]] = {}
for curve_id in curve_ids:
    curve_model = model_or_error(curve_id)
    if curve_model is None or curve_model.class_names != names:
        continue
    if chosen is not None and chosen.sha256 == result["image_sha"]:
        x = _model_input(chosen.sha256, curve_model.input_size, chosen.array)
    else:  # showing the last result: its own model input
        x = result["x"]
    try:
        curve_levels, probability, _ = _curve(_checkpoint(curve_id), result["image_sha"], result["method"],
                                              result["steps"], result["label"], result["target"], curve_id, x)
    except (ValueError, RuntimeError) as error:
        st.error(f"Cannot compute the curve of {curve_id}: {error}")
        continue
    curves[f"{labels[curve_id]} ({curve_id})"] = (curve_levels, probability)
if curves:
    st.plotly_chart(confidence_figure(curves, f"{attack_name}: probability of {followed}", report.levels),
                    width="stretch", key="adv.confidence")
    if result["method"] == "ifgsm":
        st.caption("I-FGSM needs a full attack per ε, so its curve is drawn at 0, 1, 2, 4, 8, 16 and 32.")
else:
    st.info("Pick at least one model to draw its curve.")

# ----------------------------------------------------------------------------- shipped curves
st.subheader("Robustness over the test set: attention vs baseline")
try:
    shipped = shipped_results()
except ValueError as error:
    shipped = None
    st.error(f"The shipped robustness results cannot be read: {error}")
if shipped is None:
    st.info(
        "No robustness curves have been shipped yet (expected `assets/robustness/robustness.json`). "
        "Produce them with `ltpa robustness --models all --data <CIFAR-10 test folder> --out "
        "assets/robustness` (on a GPU: seconds per model)."
    )
else:
    st.plotly_chart(robustness_figure(shipped), width="stretch", key="adv.shipped")
    dataset = shipped["dataset"]
    st.caption(
        f"{shipped.get('attack_name', shipped['attack'])} on the {shipped['label']} label, "
        f"{dataset['n_images']:,} images ({dataset['source']}), measured on {measured_on(shipped)}. "
        f"Accuracy: {DEFINITIONS['accuracy']}. Fooling rate: {DEFINITIONS['fooling_rate']}. "
        "Compare each attention model with its own baseline, trained the same way, not across "
        "backbones: the training recipe moves FGSM curves a lot (label smoothing, for one, blunts "
        "one-step attacks without making a model robust; the model cards name each recipe)."
    )
    st.dataframe([{
        "model": m.get("paper_name") or m["id"], "attention": bool(m.get("attention")),
        **{f"acc {k}/255": round(100 * a, 1) for k, a in zip(shipped["levels"], m["accuracy"])},
        **{f"fool {k}/255": round(100 * f, 1) for k, f in zip(shipped["levels"], m["fooling_rate"])},
    } for m in shipped["models"]], hide_index=True, width="stretch")
