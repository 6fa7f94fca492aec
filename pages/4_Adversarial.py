"""Adversarial: attack the chosen image with FGSM / I-FGSM at a chosen epsilon and watch the
prediction and every stage's attention move; the shipped robustness curves below compare attention
models with their baseline over the whole CIFAR-10 test set.

The numbers come from ``ltpa.attacks`` and ``ltpa.robustness``. The attack at the chosen epsilon
is computed at once (cached per image, model and setting); each model's curve over epsilon and
its smallest flipping epsilon (``ltpa.attacks.sweep_levels``) run in the background with a
progress bar, so no control waits for them (``pages.ui.compute.background``).
"""
from __future__ import annotations

import json
import uuid
from typing import Any

import cv2
import numpy as np
import streamlit as st
import torch

import ltpa
from ltpa import viz
from ltpa.attacks import APP_MAX_LEVELS, ATTACK_NAMES, DEFAULT_STEPS, LevelSweep, sweep_levels
from ltpa.maps import overlay, panel_grid
from ltpa.preprocess import image_to_input
from ltpa.robustness import (
    DEFINITIONS,
    RESULTS_JSON,
    SHIPPED_DIR,
    AttackReport,
    attack_report,
    load_results,
    measured_on,
    perturbation_image,
)
from ltpa.viz import confidence_figure, robustness_figure
from pages.ui import compute, state, views
from pages.ui import url_state as url
from pages.ui.nav import page_setup
from pages.ui.text import plain
from pages.ui.widgets import ChosenImage, load_model, model_or_error, zoo_choices

DISPLAY_SIDE = 224  # the 32x32 model input, enlarged with nearest neighbour so pixels stay visible
LABEL_MODES = {
    "predicted": "push away from the predicted class",
    "true": "push away from the true class (choose it)",
    "target": "pull towards a target class (choose it)",
}
MAX_STEPS = 20
# Where this page's settings persist across pages (``pages.ui.state.persisted``).
METHOD, EPSILON, STEPS, LABEL_MODE, CLASS = "adv.method", "adv.eps", "adv.steps", "adv.label_mode", "adv.class"
GAIN, CURVE_MODELS = "adv.gain", "adv.curve_models"
LAST_RESULT = "adv.last"  # the last good result: shown again when new input is bad
OWNER, JOBS, STOPPED = "adv.owner", "adv.jobs", "adv.stopped"  # this session's background work
POLL_S = 0.5
FINDING = (
    "**What the shipped models show:** on FGSM curves the plain VGG looks the most robust, but that "
    "is gradient masking, not robustness (10-step PGD crafted on VGG-att3 and transferred to it "
    "fools it more than an attack on its own gradient: see the README's robustness section), so "
    "compare each attention model with its own baseline trained the same way: RN-att2 is fooled a "
    "few points less often than ResNet-164, VGG-att3 about as often as VGG-GAP."
)

page_setup("Adversarial")
link = url.incoming()
st.title("Adversarial attacks: flip the prediction, move the attention")
st.markdown(
    "The **fast gradient sign method** (FGSM) changes every colour channel of every pixel of the "
    "32×32 model input by ±ε, in the direction that hurts the classifier most (the sign of the "
    "loss gradient). ε is in grey levels: **k/255** changes a pixel by at most k of its 255 "
    "levels, usually invisible. **I-FGSM** takes several smaller steps and stays within ε. The "
    "paper reports that attention models are fooled less often than their baseline at small ε."
)
st.info(FINDING, icon=":material/info:")
with st.expander("What the attention-shift figures mean"):
    st.markdown(
        "For each stage the clean and adversarial maps are compared at the model's resolution:\n"
        "- **IoU**: overlap of the two masks that keep each map's top 25% of positions "
        "(1 = the same positions, 0 = none in common);\n"
        "- **mass moved**: the total-variation distance ½·Σ|p − q| between the two maps as "
        "distributions, the share of attention that went elsewhere (0 = none, 1 = all);\n"
        "- **rank correlation**: Spearman's ρ between the two maps over all positions "
        "(1 = same ordering of where the model looks).\n\n"
        "The smallest flipping ε: for FGSM every k from 1 to 32 is tried at once (FGSM success is "
        "not monotone in ε, so no bisection); for I-FGSM one batch of attacks at 1, 2, 4, … 32 "
        "brackets the answer, then batches inside the bracket narrow it to a k that flips while "
        "k − 1 does not."
    )

link.adopt(url.single_model_view())
chosen, model_id, opacity, colormap, scaling = views.sidebar_inputs()


# ----------------------------------------------------------------------------- cached computations
@compute.bounded_cache(max_bytes=2 * compute.MiB, name="adversarial.model_input")
def _model_input(image_sha: str, size: int, _image: np.ndarray) -> np.ndarray:
    return image_to_input(_image, size)[0].numpy()


def model_input(chosen: ChosenImage, model_id: str) -> np.ndarray:
    """The chosen image as the model's pixel-space input (3 x H x W in [0, 1])."""
    return _model_input(chosen.sha256, load_model(model_id).input_size, chosen.array)


def _tensor(x: np.ndarray, model_id: str) -> torch.Tensor:
    device = next(load_model(model_id).model.parameters()).device
    return torch.from_numpy(np.array(x))[None].to(device)


@compute.bounded_cache(max_bytes=8 * compute.MiB, name="adversarial.report")
def _report(model: compute.Key, image_sha: str, levels: int, method: str, steps: int,
            label: int | None, target: int | None, _model_id: str, _x: np.ndarray) -> AttackReport:
    return attack_report(load_model(_model_id).model, _tensor(_x, _model_id), levels, method, label, target, steps)


def sweep_job(curve_id: str, image_sha: str, x: np.ndarray, method: str, steps: int,
              label: int | None, target: int | None) -> compute.Job:
    """The background sweep (curve and smallest flipping epsilon) of one model on this image."""
    key = compute.cache_key("sweep", compute.model_key(curve_id), image_sha, method, steps, label, target,
                            APP_MAX_LEVELS)
    model, tensor = load_model(curve_id).model, _tensor(x, curve_id)

    def work(progress) -> LevelSweep:
        return sweep_levels(model, tensor, method, label, target, APP_MAX_LEVELS, steps, progress)

    return compute.background(key, work, owner=st.session_state[OWNER])


@st.cache_data(show_spinner=False, max_entries=4)
def _shipped_results(path: str, modified: float) -> dict[str, Any] | None:
    return load_results(path)


def shipped_results() -> dict[str, Any] | None:
    """The shipped results (re-read when the file changes), None when none are shipped."""
    path = SHIPPED_DIR / RESULTS_JSON
    return _shipped_results(str(path), path.stat().st_mtime if path.is_file() else 0.0)


def _enlarged(image: np.ndarray) -> np.ndarray:
    """A [0, 1] float H x W x 3 image as uint8, enlarged for display without smoothing."""
    return cv2.resize(_pixels(image), (DISPLAY_SIDE, DISPLAY_SIDE), interpolation=cv2.INTER_NEAREST)


def _pixels(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- controls
choices = zoo_choices()
if not choices:
    st.stop()  # model_picker has said the zoo is empty
class_names: list[str] = []
if model_id is not None:
    loaded = model_or_error(model_id)
    if loaded is not None:
        class_names = list(loaded.class_names)
st.session_state.setdefault(OWNER, uuid.uuid4().hex)

link.adopt([
    url.Setting("attack", url.choice("attack", list(ATTACK_NAMES)), url.to_state(METHOD)),
    url.Setting("eps", url.integer("epsilon (k/255)", 0, APP_MAX_LEVELS), url.to_state(EPSILON)),
    url.Setting("steps", url.integer("I-FGSM steps", 1, MAX_STEPS), url.to_state(STEPS)),
    url.Setting("label", url.choice("label mode", list(LABEL_MODES)), url.to_state(LABEL_MODE)),
    *([url.Setting("cls", url.choice("class", class_names), url.to_state(CLASS))] if class_names else []),
])

left, middle, right = st.columns(3)
with left:
    method = state.persisted(st.radio, "Attack", METHOD, "fgsm", options=list(ATTACK_NAMES),
                             format_func=ATTACK_NAMES.get, horizontal=True)
    steps = DEFAULT_STEPS
    if method == "ifgsm":
        steps = int(state.persisted(st.slider, "I-FGSM steps", STEPS, DEFAULT_STEPS, min_value=1,
                                    max_value=MAX_STEPS, step=1,
                                    help="Each step moves 2.5·ε/steps, then is projected back within ε."))
with middle:
    levels = int(state.persisted(st.slider, "Epsilon ε (k/255)", EPSILON, 4, min_value=0,
                                 max_value=APP_MAX_LEVELS, step=1, format="%d/255",
                                 help="Largest change of any colour channel of any pixel, in grey levels."))
    st.caption(f"ε = {levels}/255 = {levels / 255:.4f} in pixel units [0, 1]")
with right:
    label_mode = state.persisted(st.radio, "Label", LABEL_MODE, "predicted", options=list(LABEL_MODES),
                                 format_func=LABEL_MODES.get)
    chosen_class: int | None = None
    if label_mode != "predicted" and class_names:
        if state.get(CLASS) not in class_names:
            state.put(CLASS, class_names[0])
        name = state.persisted(st.selectbox, "True class" if label_mode == "true" else "Target class",
                               CLASS, class_names[0], options=class_names)
        chosen_class = class_names.index(name)
label = chosen_class if label_mode == "true" else None
target = chosen_class if label_mode == "target" else None
url.publish({**url.single_model_values(chosen, model_id, colormap, opacity, scaling),
             "attack": method, "eps": levels,
             "steps": steps if method == "ifgsm" else None, "label": label_mode,
             "cls": class_names[chosen_class] if chosen_class is not None else None})


# ----------------------------------------------------------------------------- compute (or keep the last result)
def compute_result() -> dict[str, Any] | None:
    """This run's result, or None after showing why there is none."""
    if chosen is None or model_id is None or not class_names:
        return None
    try:
        x = model_input(chosen, model_id)
        with st.spinner(f"{ATTACK_NAMES[method]} at {levels}/255…"), compute.foreground():
            report = _report(compute.model_key(model_id), chosen.sha256, levels, method, steps, label, target,
                             model_id, x)
    except (ValueError, RuntimeError) as error:
        st.error(f"Cannot attack this image: {plain(str(error))}")
        return None
    return {"report": report, "model_id": model_id, "class_names": class_names, "image_name": chosen.name,
            "image_sha": chosen.sha256, "x": x, "method": method, "steps": steps, "label": label,
            "target": target, "label_mode": label_mode,
            "checkpoint_sha256": str(load_model(model_id).entry.card.get("sha256", ""))}


result = compute_result()
if result is not None:
    st.session_state[LAST_RESULT] = result
elif st.session_state.get(LAST_RESULT) is not None:
    result = st.session_state[LAST_RESULT]
    st.caption(f"Showing the last result (image **{plain(result['image_name'])}**, model `{result['model_id']}`, "
               f"{ATTACK_NAMES[result['report'].method]} at {result['report'].levels}/255) until the "
               "input above is fixed.")
if result is None:
    st.info("Choose an image and a model in the sidebar.")
    st.stop()

report: AttackReport = result["report"]
names: list[str] = result["class_names"]
clean_name, adversarial_name = names[report.clean_prediction], names[report.adversarial_prediction]
attack_name = ATTACK_NAMES[report.method]

# ----------------------------------------------------------------------------- background sweeps
ids = [c.id for c in choices]
labels = {c.id: c.label for c in choices}
baseline = next((c.id for c in choices if not c.attention and not c.gap), None)
settings = (result["image_sha"], result["method"], result["steps"], result["label"], result["target"])


def curve_models() -> list[str]:
    """The models whose curves are drawn: the result's model, then those chosen to compare with."""
    others = state.get(CURVE_MODELS, [baseline] if baseline else [])
    return list(dict.fromkeys([result["model_id"], *(i for i in others if i in ids)]))


def wanted_jobs(curve_ids: list[str]) -> dict[str, compute.Job]:
    """Submit (or find) the sweeps this view needs and release the ones it no longer needs."""
    if st.session_state.get(STOPPED) == settings:
        return {}
    jobs: dict[str, compute.Job] = {}
    for curve_id in dict.fromkeys([result["model_id"], *curve_ids]):
        curve_model = model_or_error(curve_id)
        if curve_model is None or list(curve_model.class_names) != names:
            continue
        x = model_input(chosen, curve_id) if chosen is not None and chosen.sha256 == result["image_sha"] \
            else (result["x"] if curve_id == result["model_id"] else None)
        if x is None:
            continue  # showing the last result of an image that is gone: only its own model
        jobs[curve_id] = sweep_job(curve_id, result["image_sha"], x, result["method"], result["steps"],
                                   result["label"], result["target"])
    keys = {job.key for job in jobs.values()}
    for old in st.session_state.get(JOBS, set()) - keys:
        compute.BACKGROUND.release(old, st.session_state[OWNER])
    st.session_state[JOBS] = keys
    return jobs


def stop() -> None:
    for key in st.session_state.get(JOBS, set()):
        compute.BACKGROUND.release(key, st.session_state[OWNER])
    st.session_state[JOBS] = set()
    st.session_state[STOPPED] = settings


def resume() -> None:
    st.session_state.pop(STOPPED, None)


jobs = wanted_jobs(curve_models())
own_job = jobs.get(result["model_id"])
own_sweep: LevelSweep | None = own_job.result if own_job is not None and own_job.state == "done" else None

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
if own_sweep is not None:
    smallest_text = f"{own_sweep.smallest}/255" if own_sweep.smallest is not None else f"none up to {APP_MAX_LEVELS}/255"
elif own_job is not None and own_job.state == "failed":
    smallest_text = "failed"
else:
    smallest_text = "computing…" if own_job is not None else "stopped"
metrics[1].metric(f"Smallest flipping ε ({attack_name})", smallest_text,
                  help="The smallest k/255 at which the attack changes the prediction (or reaches the target).")
attacked = report.attacked_class
metrics[2].metric(f"Probability of {names[attacked]}", f"{report.adversarial_probabilities[attacked]:.1%}",
                  delta=f"{100 * (report.adversarial_probabilities[attacked] - report.clean_probabilities[attacked]):+.1f} points",
                  delta_color="off")

gain = float(state.persisted(st.slider, "Perturbation gain", GAIN, 20, min_value=1, max_value=100, step=1,
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


# ----------------------------------------------------------------------------- exports
def _png(image: np.ndarray) -> bytes:
    return views.png_bytes(image)


def all_stages_figure() -> np.ndarray:
    """Clean and adversarial input with every stage's map over each, one row each (for slides)."""
    def row(kind: str, image: np.ndarray, maps: tuple[np.ndarray, ...], prediction: str) -> list[tuple[str, np.ndarray]]:
        big = _enlarged(image)
        return [(f"{kind}: {prediction}", big)] + [
            (f"{stage} ({kind})", overlay(big, m, opacity, colormap, scaling)) for stage, m in zip(report.stages, maps)]
    return panel_grid([row("clean", report.clean, report.clean_maps, clean_name),
                       row("adversarial", report.adversarial, report.adversarial_maps, adversarial_name)],
                      title=f"{result['model_id']} · {attack_name} at {report.levels}/255", pixelated=True)


def record() -> dict[str, Any]:
    """What reproduces this result: model, checkpoint and file hashes, the attack and its outcome."""
    return {
        "ltpa_version": ltpa.__version__,
        "image": {"name": result["image_name"], "sha256": result["image_sha"]},
        "model": {"id": result["model_id"], "checkpoint_sha256": result["checkpoint_sha256"]},
        "attack": {"method": report.method, "name": attack_name, "steps": result["steps"] if report.method == "ifgsm" else None,
                   "epsilon_levels": report.levels, "epsilon": report.levels / 255,
                   "label_mode": result["label_mode"], "targeted": report.targeted,
                   "attacked_class": names[attacked]},
        "clean": {"label": clean_name, "probabilities": dict(zip(names, map(float, report.clean_probabilities)))},
        "adversarial": {"label": adversarial_name,
                        "probabilities": dict(zip(names, map(float, report.adversarial_probabilities)))},
        "flipped": bool(report.flipped),
        "largest_pixel_change_levels": round(report.linf, 3),
        "smallest_flipping_epsilon_levels": own_sweep.smallest if own_sweep is not None else None,
        "attention_shift": [{"stage": s, **shift._asdict()} for s, shift in zip(report.stages, report.shifts)],
    }


st.subheader("Downloads")
st.caption("The three images are the 32×32 model input as PNG (8 bits per channel: an I-FGSM step "
           "that is not a whole grey level is rounded); the figure shows every stage at 224×224 "
           "per panel. Files are made when you click.")
stem = "_".join([result["image_name"].rsplit(".", 1)[0], result["model_id"], report.method, f"eps{report.levels}"])
stem = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in stem)[:120]
downloads = st.columns(5)
downloads[0].download_button("Clean PNG", lambda: _png(_pixels(report.clean)), file_name=f"{stem}_clean.png",
                             mime="image/png", key="adv.dl.clean", on_click="ignore")
downloads[1].download_button("Perturbation PNG", lambda: _png(_pixels(perturbation_image(report.perturbation, gain))),
                             file_name=f"{stem}_perturbation_x{gain:.0f}.png", mime="image/png",
                             key="adv.dl.perturbation", on_click="ignore",
                             help="0.5 + gain × change, as shown above (grey = no change).")
downloads[2].download_button("Adversarial PNG", lambda: _png(_pixels(report.adversarial)),
                             file_name=f"{stem}_adversarial.png", mime="image/png", key="adv.dl.adversarial",
                             on_click="ignore")
downloads[3].download_button("Record (JSON)", lambda: json.dumps(record(), indent=2), file_name=f"{stem}.json",
                             mime="application/json", key="adv.dl.record", on_click="ignore")
downloads[4].download_button("All stages (PNG)", lambda: _png(all_stages_figure()), file_name=f"{stem}_stages.png",
                             mime="image/png", key="adv.dl.figure", on_click="ignore",
                             help="Clean and adversarial input with every stage's map, for a slide.")

# ----------------------------------------------------------------------------- confidence against epsilon
st.subheader("This image's confidence against ε")
compare_options = [i for i in ids if i != result["model_id"]]
state.put(CURVE_MODELS, [i for i in state.get(CURVE_MODELS, [baseline] if baseline else []) if i in compare_options])
state.persisted(st.multiselect, "Compare with", CURVE_MODELS, [baseline] if baseline else [],
                options=compare_options, format_func=lambda i: f"{labels[i]} ({i})",
                help="Each model's curve is computed once per image and setting, in the background.")
if result["label_mode"] == "predicted":
    followed = "each model's own clean prediction"
else:
    followed = f"{'target' if result['target'] is not None else 'true'} class {names[attacked]}"
pending_at_start = any(not job.finished for job in jobs.values())


def draw_curves() -> None:
    """The curves of the chosen models; while some are being computed, a progress bar and a stop
    button (this part of the page then redraws itself every POLL_S seconds)."""
    if st.session_state.get(STOPPED) == settings:
        st.info("Stopped: the curves and the smallest flipping ε are not computed for this setting.")
        st.button("Compute them", on_click=resume, key="adv.resume")
        return
    curve_ids = curve_models()
    current = wanted_jobs(curve_ids)
    curves: dict[str, tuple[list[int], np.ndarray]] = {}
    for curve_id in curve_ids:
        job = current.get(curve_id)
        if job is not None and job.state == "done":
            sweep: LevelSweep = job.result
            curves[f"{labels[curve_id]} ({curve_id})"] = (
                list(sweep.levels), sweep.probability_of(sweep.attacked_class).numpy())
        elif job is not None and job.state == "failed":
            st.error(f"Cannot compute the curve of {curve_id}: {plain(job.error or '')}")
    running = [job for job in current.values() if not job.finished]
    if running:
        share = float(np.mean([job.progress for job in current.values()]))
        st.progress(share, text=f"Attacking at every ε: {len(current) - len(running)} of {len(current)} "
                                "models done (the controls above stay usable)")
        st.button("Stop", on_click=stop, key="adv.stop", icon=":material/stop:")
    if curves:
        st.plotly_chart(confidence_figure(curves, f"{attack_name}: probability of {followed}", report.levels),
                        width="stretch", key="adv.confidence")
        if result["method"] == "ifgsm":
            st.caption("I-FGSM needs a full attack per ε, so its curve is drawn at 0, 1, 2, 4, 8, 16 and 32 "
                       "and at the levels the smallest-ε search tried.")
    if pending_at_start and not running:
        st.rerun()  # everything arrived: redraw the whole page (the smallest-ε figure above)


st.fragment(draw_curves, run_every=POLL_S if pending_at_start else None)()

# ----------------------------------------------------------------------------- shipped curves
st.subheader("Robustness over the test set: attention vs baseline")
try:
    shipped = shipped_results()
except ValueError as error:
    shipped = None
    st.error(f"The shipped robustness results cannot be read: {plain(str(error))}")
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
