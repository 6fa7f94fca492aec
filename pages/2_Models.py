"""Models: the shipped model cards, accuracy against the paper (each shipped file, or the paper
table of seed means), attention against its baseline, training curves, per-class accuracy and
confusion matrices, and training runs compared."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

from ltpa import viz
from ltpa.maintainer.baselines import gap_rows, zoo_gaps
from ltpa.maintainer.paper import paper_comparison, paper_table_rows
from ltpa.maintainer.quality import QUALITY_KEY, quality_rows
from ltpa.maintainer.runs import read_log_epochs, run_logs
from ltpa.maintainer.selection import SELECTION_KEY
from ltpa.registry import get_spec
from ltpa.zoo import PAPER_CIFAR10_ERROR, list_zoo, paper_cifar10_error, zoo_dir
from pages.ui import url_state as url
from pages.ui import views
from pages.ui.nav import page_setup
from pages.ui.text import plain
from pages.ui.widgets import choice_of, model_picker, no_models_message, zoo_choices

# Card fields too bulky for the card view (they get their own figures).
BULKY_FIELDS = ("confusion", "per_class_accuracy", "fixture")

page_setup("Models")
link = url.incoming()
st.title("The model zoo")

if not zoo_choices():  # a missing or empty zoo
    no_models_message()
    st.stop()
shown_ids = {c.id for c in zoo_choices()}  # cards the registry cannot build are left out (named above)
entries = [e for e in list_zoo() if e.id in shown_ids]
link.adopt([url.model()])

st.markdown(
    "Every model shipped with the app, as listed in its model card. Errors are top-1 test errors "
    "in percent. **Our data is a JPEG (quality 75) re-encode of CIFAR-10**, so our errors are "
    "measured on slightly degraded images and are not exactly comparable with the paper's, which "
    "used the original images and much longer schedules (see each card for the recipe)."
)


def _hours(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _paper_error(card: dict[str, Any]) -> float | None:
    # The paper's figure is for its softmax model: a deviating normalisation has none to meet.
    return paper_cifar10_error(card.get("registry_name", ""), card.get("kwargs"))


rows = []
for entry in entries:
    card = entry.card
    choice = choice_of(entry.id)
    training = card.get("training") or {}
    ours, paper = card.get("test_error"), _paper_error(card)
    rows.append({
        "id": entry.id,
        "paper name": choice.label if choice else entry.id,
        "attention stages": ", ".join(card.get("stages") or []) or "none",
        "parameters (M)": round(card["params"] / 1e6, 2) if card.get("params") else None,
        "test error % (ours)": ours,
        "test error % (paper)": paper,
        "ours − paper": round(ours - paper, 2) if ours is not None and paper is not None else None,
        "epochs": training.get("epochs"),
        "training time": _hours(training.get("wall_time_s")),
        "hardware": training.get("hardware", "—"),
        "checkpoint sha256": str(card.get("sha256", ""))[:12],
    })
st.subheader("Accuracy against the paper")
ACCURACY_VIEWS = {"files": "Shipped files", "paper": "Paper table"}
view = st.radio("View", list(ACCURACY_VIEWS), format_func=ACCURACY_VIEWS.get, horizontal=True,
                key="models.accuracy_view",
                help="Shipped files: every shipped model's file against the paper. Paper table: the "
                     "paper's Table 1, each model beside our seed mean and spread.")
if view == "paper":
    st.dataframe(paper_table_rows(paper_comparison()), hide_index=True, width="stretch")
    st.caption(
        "The paper's Table 1 (CIFAR-10 top-1 error) beside our errors on our JPEG (quality 75) "
        "re-encode of the CIFAR-10 test set, the seed mean and spread pooling every card of the "
        "shipped model and recipe (the shipped one and the repeats in `reproduction/`), with how "
        "each shipped seed was chosen quoted from the manifest; \"not shipped\" marks a model of "
        "the paper's table the zoo does not ship.")
else:
    st.dataframe(rows, hide_index=True, width="stretch")
    figures = ", ".join(f"{get_spec(name).paper_name} {error:.2f}" for name, error in PAPER_CIFAR10_ERROR.items())
    st.caption(f"Paper figures (CIFAR-10 top-1 error): {figures}. The paper lists no figure for the "
               "other variants shipped here, and a normalisation other than its softmax is a deviation "
               "with no figure to meet: their paper column is empty (None).")
    compared = [{"model": r["paper name"], "ours": r["test error % (ours)"], "paper": r["test error % (paper)"]}
                for r in rows if r["test error % (ours)"] is not None]
    if compared:
        st.plotly_chart(viz.error_vs_paper(compared), width="stretch", key="models.vs_paper")
    else:
        st.info("No shipped model has a measured test error yet.")

st.subheader("Attention against its baseline")
gap_table = gap_rows(zoo_gaps())
if gap_table:
    st.dataframe(gap_table, hide_index=True, width="stretch")
    st.caption(
        "The paper's central claim: attention beats the plain network trained the same way. Each "
        "attention model sits beside the baseline of its backbone (VGG, ResNet-164) trained with "
        "the same recipe (every setting that changes what is learnt, and the storage precision; "
        "the recipe column says how it differs from the zoo's) and built with the same model "
        "arguments the two share (a changed one is named in brackets), over every seed whose card we "
        "have: the shipped models plus the repeats, ablations and other recipes in "
        "`reproduction/` beside the zoo (cards only). A negative gap means attention has the "
        "lower error. Seeds of one recipe differ by a few tenths of a point (the spread column), "
        "so a gap smaller than that shows no difference either way. None: no baseline run of "
        "that recipe, or a single seed.")
else:
    st.info("No attention model in the zoo has a measured error beside a baseline.")

per_class = {choice_of(e.id).label if choice_of(e.id) else e.id: e.card["per_class_accuracy"]
             for e in entries if e.card.get("per_class_accuracy")}
if per_class:
    st.subheader("Per-class accuracy of every model")
    st.plotly_chart(viz.per_class_bars(per_class), width="stretch", key="models.per_class")


@st.cache_data(show_spinner=False, max_entries=64)
def read_log(path: str, mtime: float) -> list[dict[str, Any]]:
    """A training log's epoch rows (cached until the file changes); ValueError when unreadable."""
    return read_log_epochs(Path(path))


st.subheader("Model card")
with st.sidebar:
    st.header("Model")
    model_id = model_picker()
if model_id is None:
    st.stop()
url.publish({"model": model_id})
card = next(e.card for e in entries if e.id == model_id)
choice = choice_of(model_id)
title = choice.label if choice else model_id
st.markdown(f"### {title} (`{model_id}`)")

left, middle, right = st.columns(3)
error = card.get("test_error")
paper = _paper_error(card)
left.metric("Test error (ours)", f"{error:.2f}%" if error is not None else "not measured",
            delta=f"{error - paper:+.2f} vs paper" if error is not None and paper is not None else None,
            delta_color="inverse")
middle.metric("Parameters", f"{card['params'] / 1e6:.2f} M" if card.get("params") else "—")
right.metric("Map sizes", " · ".join(f"{h}×{w}" for h, w in card.get("map_sizes") or []) or "no attention")
st.caption(f"Dataset: {card.get('dataset') or 'not stated'}")

training = card.get("training") or {}
if card.get("trained_as"):
    seed = (training.get("config") or {}).get("seed", 0)
    st.info(f"Shipped from the run `{card['trained_as']}` (seed {seed})"
            + (f": {card['promotion_note']}" if card.get("promotion_note") else "."))
selection = card.get(SELECTION_KEY)
if isinstance(selection, dict):
    st.markdown(f"**How this seed was chosen**: {plain(str(selection.get('rule_text', selection.get('rule'))))}, "
                "on the validation split (never the test set).")
    candidates = selection.get("candidates") if isinstance(selection.get("candidates"), dict) else {}
    st.dataframe([{"run": run, "validation error %": error, "shipped": run == card.get("trained_as")}
                  for run, error in candidates.items()], hide_index=True, key="models.selection")
if training.get("command"):
    st.markdown("Trained with:")
    st.code(training["command"], language="bash")
st.markdown(" · ".join(f"**{k}**: {training[k]}" for k in ("epochs", "hardware", "images_per_s") if k in training)
            + (f" · **wall time**: {_hours(training['wall_time_s'])}" if "wall_time_s" in training else ""))

quality = quality_rows(card)
st.markdown("#### How well its maps find the object")
if quality:
    section = card[QUALITY_KEY]
    st.dataframe(quality, hide_index=True, width="stretch", key="models.quality")
    st.caption(f"On {plain(section['dataset'])} ({section['images']} images): mean Jaccard of each map's "
               "mask under each rule at its fixed threshold, and the pointing game (the map's peak inside "
               "the object). The centre prior, a blob in the middle of the image, is the floor a map must "
               "beat. Test entropy: the map's normalised entropy on the test set (1 = uniform).")
else:
    st.info("This card records no attention quality: the model has no map to score.")

log_path = zoo_dir() / card["log"] if card.get("log") else None
if log_path is not None and log_path.is_file():
    try:
        epochs = read_log(str(log_path), log_path.stat().st_mtime)
    except ValueError:
        st.warning(f"The training log {card['log']} cannot be read.")
    else:
        if epochs:
            st.plotly_chart(viz.training_curves(epochs, f"Training of {title}"), width="stretch",
                            key="models.curves")
        else:
            st.info("The training log lists no epochs.")
else:
    st.info("No training log is shipped with this model.")

left, right = st.columns(2)
with left:
    if card.get("per_class_accuracy"):
        st.plotly_chart(viz.per_class_bars({title: card["per_class_accuracy"]}, f"Per-class accuracy: {title}"),
                        width="stretch", key="models.card_per_class")
    else:
        st.info("No per-class accuracy in this card.")
with right:
    if card.get("confusion"):
        confusion = viz.confusion_heatmap(card["confusion"], card["class_names"], f"Confusion matrix: {title}")
        # Room for the longest class name on both axes (Plotly cuts labels off otherwise).
        confusion.update_xaxes(automargin=True, tickangle=-45)
        confusion.update_yaxes(automargin=True)
        confusion.update_layout(margin=dict(l=90, b=90))
        st.plotly_chart(confusion, width="stretch", key="models.confusion")
    else:
        st.info("No confusion matrix in this card.")

with st.expander("The full model card (JSON)"):
    st.json({k: v for k, v in card.items() if k not in BULKY_FIELDS})
st.download_button("Model card (JSON)", json.dumps(card, indent=2), file_name=f"{model_id}_card.json",
                   mime="application/json", key="models.card_download", on_click="ignore",
                   icon=":material/download:")

st.subheader("Compare training runs")
runs = {run.id: run for run in run_logs()}
if not runs:
    st.info("No training logs to compare.")
    st.stop()
# By default the chosen model beside every other run of the same network (its repeats, recipe
# variants and ablations); each model keeps its own choice.
related = [model_id] + [i for i, run in runs.items()
                        if run.registry_name == card.get("registry_name") and i != model_id]
chosen = st.multiselect(
    "Runs", list(runs), default=[i for i in related if i in runs][:8],
    format_func=lambda i: f"{i}: {runs[i].description}", key=f"models.compare_runs.{model_id}",
    help="The shipped models and the runs kept in reproduction/ beside the zoo (logs only).")
logs, unreadable = {}, []
for run_id in chosen:
    path = runs[run_id].path
    try:
        logs[run_id] = read_log(str(path), path.stat().st_mtime)
    except (OSError, ValueError):
        unreadable.append(run_id)
if unreadable:
    st.warning(f"Unreadable training log, left out: {', '.join(unreadable)}.")
if logs:
    metric = st.selectbox("Metric", viz.run_metric_names(logs), key="models.compare_metric")
    try:
        figure = viz.compare_runs(logs, metric, f"Training runs compared: {metric}")
    except (TypeError, ValueError) as error:  # a hand-edited log with text where numbers belong
        st.warning(f"A chosen training log holds values that are not numbers ({error}); "
                   "leave it out to see the others.")
    else:
        st.plotly_chart(views.readable_log_axis(figure), width="stretch", key="models.compare")
    st.caption("Per-epoch figures from each run's training log, on the JPEG CIFAR-10 test set "
               "where they are test figures. A log's last test error is that of the run in bf16 "
               "before it was stored; the card's error, measured on the stored file, can differ "
               "by a few hundredths.")
elif not unreadable:
    st.info("Choose runs to compare.")
