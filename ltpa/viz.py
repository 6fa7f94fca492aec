"""Plotly figure builders for the app (the only ltpa module that imports Plotly).

Each function takes plain numbers (arrays, dicts, lists) and returns a ``plotly.graph_objects
.Figure``; nothing here knows about Streamlit, so the figures can be tested and reused anywhere.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ltpa.attacks import APP_MAX_LEVELS
from ltpa.maps import MapStats
from ltpa.robustness.results import check_results
from ltpa.training import error_percent

_MARGIN = dict(l=10, r=10, t=40, b=10)


def top_k_bar(top: Sequence[tuple[str, float]], title: str = "Top-5 prediction") -> go.Figure:
    """Horizontal bars of (class, probability), the most probable at the top.

    Args:
        top: (class name, probability) pairs, most probable first.
        title: the figure's title.

    Returns:
        The bar chart.
    """
    names = [name for name, _ in top][::-1]
    probabilities = [float(p) for _, p in top][::-1]
    figure = go.Figure(go.Bar(
        x=probabilities, y=names, orientation="h",
        text=[f"{p:.1%}" for p in probabilities], textposition="auto",
        hovertemplate="%{y}: %{x:.2%}<extra></extra>",
    ))
    figure.update_layout(
        title=title, xaxis=dict(range=[0, 1], tickformat=".0%", title="probability"),
        height=60 + 34 * max(1, len(names)), margin=_MARGIN,
    )
    return figure


def map_heatmap(attention: np.ndarray, title: str = "", colorscale: str = "Jet") -> go.Figure:
    """A raw attention map as a heatmap in image orientation; hovering a cell shows its weight and
    its share of the map's total attention mass.

    Args:
        attention: h x w map.
        title: the figure's title.
        colorscale: a Plotly colour scale name.

    Returns:
        The heatmap (row 0 at the top, square cells).
    """
    values = np.asarray(attention, dtype=np.float64)
    total = values.sum()
    share = values / total if total > 0 else np.zeros_like(values)
    figure = go.Figure(go.Heatmap(
        z=values, customdata=share, colorscale=colorscale,
        hovertemplate=("row %{y}, column %{x}<br>weight %{z:.4g}<br>"
                       "share of attention mass %{customdata:.2%}<extra></extra>"),
        colorbar=dict(thickness=10),
    ))
    figure.update_layout(title=title, margin=_MARGIN, height=300)
    # Row 0 at the top and square cells, like the image.
    figure.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    figure.update_xaxes(constrain="domain")
    return figure


# (MapStats field, panel title, hint, value of a uniform map: drawn as a dashed reference line)
STAT_PANELS = (
    ("normalised_entropy", "entropy / log(N)", "1 = spread evenly", 1.0),
    ("peak_over_uniform", "peak × N", "1 = uniform", 1.0),
    ("top10_mass", "mass in top 10%", "0.1 = uniform", 0.1),
)


def stage_stats_figure(stats: Mapping[str, MapStats], title: str = "Per-stage attention") -> go.Figure:
    """Three panels comparing stages: normalised entropy, peak relative to uniform, and the share of
    attention mass held by the top 10% of positions; a dashed line marks a uniform map.

    Args:
        stats: stage name -> its MapStats.
        title: the figure's title.

    Returns:
        The three-panel bar chart.
    """
    stages = list(stats)
    gap = 0.08
    width = (1.0 - gap * (len(STAT_PANELS) - 1)) / len(STAT_PANELS)
    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {"title": {"text": title}, "height": 320, "showlegend": False,
                              "margin": dict(l=10, r=10, t=90, b=10), "annotations": [], "shapes": []}
    # Axes laid out by hand: make_subplots costs ~0.1 s per figure, too slow for every rerun.
    for index, (field, name, hint, uniform) in enumerate(STAT_PANELS):
        suffix = "" if index == 0 else str(index + 1)
        values = [float(getattr(stats[s], field)) for s in stages]
        data.append({"type": "bar", "x": stages, "y": values, "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                     "name": name, "text": [f"{v:.3g}" for v in values], "textposition": "auto",
                     "hovertemplate": "%{x}: %{y:.4g}<extra>" + name + "</extra>"})
        left = index * (width + gap)
        layout[f"xaxis{suffix}"] = {"domain": [left, left + width], "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", "rangemode": "tozero"}
        layout["annotations"].append({
            "text": f"{name}<br><sup>{hint}</sup>", "x": left + width / 2, "y": 1.0, "xref": "paper",
            "yref": "paper", "xanchor": "center", "yanchor": "bottom", "showarrow": False})
        layout["shapes"].append({
            "type": "line", "xref": f"x{suffix} domain", "yref": f"y{suffix}", "x0": 0, "x1": 1,
            "y0": uniform, "y1": uniform, "line": {"dash": "dash", "color": "grey"}})
    return go.Figure(data=data, layout=layout)


def training_curves(epochs: Sequence[Mapping[str, Any]], title: str = "Training") -> go.Figure:
    """Loss, test error and per-stage attention entropy against epoch.

    Args:
        epochs: a training log's ``epochs`` list (keys ``epoch``, ``train_loss``, ``test_loss``,
            ``train_acc``, ``test_acc``, optional ``entropy`` {stage: normalised entropy}).
        title: the figure's title.

    Returns:
        The figure.
    """
    x = [e["epoch"] for e in epochs]
    stages = list(dict.fromkeys(s for e in epochs for s in (e.get("entropy") or {})))
    columns = 3 if stages else 2
    figure = make_subplots(rows=1, cols=columns, subplot_titles=(
        "loss", "error (%)", "attention entropy / log(N)")[:columns])

    def series(key: str) -> list[float | None]:
        return [e.get(key) for e in epochs]

    def error(key: str) -> list[float | None]:
        return [error_percent(a) for a in series(key)]

    for key, name in (("train_loss", "train"), ("test_loss", "test")):
        figure.add_trace(go.Scatter(x=x, y=series(key), name=f"{name} loss", mode="lines", connectgaps=True), 1, 1)
    for key, name in (("train_acc", "train"), ("test_acc", "test")):
        figure.add_trace(go.Scatter(x=x, y=error(key), name=f"{name} error", mode="lines", connectgaps=True), 1, 2)
    for stage in stages:
        values = [(e.get("entropy") or {}).get(stage) for e in epochs]
        figure.add_trace(go.Scatter(x=x, y=values, name=f"entropy {stage}", mode="lines", connectgaps=True), 1, 3)
    figure.update_xaxes(title="epoch")
    figure.update_layout(title=title, height=340, margin=dict(l=10, r=10, t=60, b=10))
    return figure


# What a run comparison can plot, from each epoch row of a training log.
RUN_METRICS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "test error (%)": lambda row: error_percent(row.get("test_acc")),
    "train error (%)": lambda row: error_percent(row.get("train_acc")),
    "test loss": lambda row: row.get("test_loss"),
    "train loss": lambda row: row.get("train_loss"),
    "learning rate": lambda row: row.get("lr"),
    "epoch time (s)": lambda row: row.get("epoch_time_s"),
}
ENTROPY_METRIC = "attention entropy / log(N), "
# Errors and losses fall by an order of magnitude over a run: on a log axis the last epochs, where
# runs differ, are not squeezed against the floor.
LOG_SCALE_METRICS = ("test error (%)", "train error (%)", "test loss", "train loss")


def run_metric_names(logs: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The metrics :func:`compare_runs` can plot for these logs.

    Args:
        logs: run name -> its ``epochs`` list.

    Returns:
        The common metrics, then the entropy of every attention stage any run logged.
    """
    stages = dict.fromkeys(stage for epochs in logs.values() for row in epochs
                           for stage in (row.get("entropy") or {}))
    return list(RUN_METRICS) + [ENTROPY_METRIC + stage for stage in stages]


def compare_runs(logs: Mapping[str, Sequence[Mapping[str, Any]]], metric: str,
                 title: str = "Training runs compared") -> go.Figure:
    """One line per run of ``metric`` against epoch; epochs without it are gaps.

    Args:
        logs: run name -> its ``epochs`` list.
        metric: a name from :func:`run_metric_names`.
        title: the figure's title.

    Returns:
        The line chart.
    """
    if metric.startswith(ENTROPY_METRIC):
        stage = metric[len(ENTROPY_METRIC):]

        def value(row: Mapping[str, Any]) -> Any:
            return (row.get("entropy") or {}).get(stage)
    elif metric in RUN_METRICS:
        value = RUN_METRICS[metric]
    else:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(RUN_METRICS)} or "
                         f"{ENTROPY_METRIC}<stage>")
    figure = go.Figure()
    for name, epochs in logs.items():
        figure.add_trace(go.Scatter(x=[row.get("epoch") for row in epochs],
                                    y=[value(row) for row in epochs], name=name, mode="lines",
                                    connectgaps=True))
    figure.update_layout(title=title, height=420, margin=dict(l=10, r=10, t=60, b=10),
                         xaxis=dict(title="epoch"),
                         yaxis=dict(title=metric, type="log" if metric in LOG_SCALE_METRICS else "linear"),
                         legend=dict(orientation="h", y=-0.2))
    return figure


def per_class_bars(accuracy: Mapping[str, Mapping[str, float]], title: str = "Per-class accuracy") -> go.Figure:
    """Grouped bars of each model's accuracy on each class.

    Args:
        accuracy: model -> {class: accuracy in [0, 1]}.
        title: the figure's title.

    Returns:
        The bar chart.
    """
    figure = go.Figure()
    for model, per_class in accuracy.items():
        classes = list(per_class)
        figure.add_trace(go.Bar(
            x=classes, y=[100.0 * float(per_class[c]) for c in classes], name=model,
            hovertemplate="%{x}: %{y:.1f}%<extra>" + model + "</extra>",
        ))
    figure.update_layout(title=title, barmode="group", yaxis=dict(title="accuracy (%)"),
                         height=380, margin=_MARGIN)
    return figure


def confusion_heatmap(confusion: Sequence[Sequence[float]], class_names: Sequence[str],
                      title: str = "Confusion matrix") -> go.Figure:
    """A confusion matrix: rows are true classes, columns predicted; colour is the share of the
    true class's images, hover also shows the raw count.

    Args:
        confusion: counts, true x predicted.
        class_names: the classes, in index order.
        title: the figure's title.

    Returns:
        The heatmap.
    """
    counts = np.asarray(confusion, dtype=np.float64)
    row_totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
    names = list(class_names)
    figure = go.Figure(go.Heatmap(
        z=rates, x=names, y=names, customdata=counts, colorscale="Blues", zmin=0, zmax=1,
        hovertemplate=("true %{y}, predicted %{x}<br>%{customdata:.0f} images "
                       "(%{z:.1%} of the class)<extra></extra>"),
    ))
    figure.update_layout(title=title, height=480, margin=_MARGIN,
                         xaxis=dict(title="predicted"), yaxis=dict(title="true", autorange="reversed"))
    return figure


def error_vs_paper(rows: Sequence[Mapping[str, Any]], title: str = "Test error: ours vs paper") -> go.Figure:
    """Grouped bars of our test error next to the paper's.

    Args:
        rows: dicts with ``model``, ``ours`` and ``paper`` (percent; either may be None).
        title: the figure's title.

    Returns:
        The bar chart.
    """
    models = [r["model"] for r in rows]
    figure = go.Figure()
    for key, name in (("ours", "this repository"), ("paper", "paper (CIFAR-10)")):
        values = [r.get(key) for r in rows]
        figure.add_trace(go.Bar(
            x=models, y=values, name=name,
            text=[f"{v:.2f}" if v is not None else "" for v in values], textposition="auto",
            hovertemplate="%{x}: %{y:.2f}%<extra>" + name + "</extra>",
        ))
    figure.update_layout(title=title, barmode="group", yaxis=dict(title="top-1 error (%)"),
                         height=380, margin=_MARGIN)
    return figure


RULE_AXIS_TITLES = {
    "fraction": "threshold (fraction of the map's maximum)",
    "top": "threshold (% of pixels kept)",
    "mass": "threshold (% of attention mass kept)",
}


def jaccard_threshold_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    rule: str,
    current: float | None = None,
    title: str = "Jaccard versus threshold",
) -> go.Figure:
    """Jaccard (IoU with the ground truth) against the threshold of one mask rule, one line per map;
    each line's best threshold is marked with a star, the threshold in use with a dashed line.

    Args:
        curves: label -> (thresholds, Jaccard values).
        rule: the mask rule (axis title).
        current: the threshold in use, or None.
        title: the figure's title.

    Returns:
        The line chart.
    """
    figure = go.Figure()
    palette = plotly.colors.qualitative.Plotly
    for index, (label, (thresholds, values)) in enumerate(curves.items()):
        x, y = np.asarray(thresholds, dtype=np.float64), np.asarray(values, dtype=np.float64)
        if x.size == 0:
            continue
        best = int(np.argmax(y))
        colour = palette[index % len(palette)]  # a line and its best-threshold star share a colour
        figure.add_trace(go.Scatter(
            x=x, y=y, mode="lines", name=label, legendgroup=label, line=dict(color=colour),
            hovertemplate="threshold %{x:g}: Jaccard %{y:.3f}<extra>" + label + "</extra>",
        ))
        figure.add_trace(go.Scatter(
            x=[x[best]], y=[y[best]], mode="markers", marker=dict(symbol="star", size=13, color=colour),
            name=f"best: {x[best]:g} (J = {y[best]:.3f})", legendgroup=label, showlegend=True,
            hovertemplate="best threshold %{x:g}: Jaccard %{y:.3f}<extra>" + label + "</extra>",
        ))
    if current is not None:
        figure.add_vline(x=float(current), line_dash="dash", line_color="grey")
    figure.update_layout(
        title=title, height=380, margin=_MARGIN,
        xaxis=dict(title=RULE_AXIS_TITLES.get(rule, "threshold")),
        yaxis=dict(title="Jaccard (IoU)", range=[0, 1]),
        legend=dict(orientation="h", y=-0.25),
    )
    return figure


def robustness_figure(results: Mapping[str, Any]) -> go.Figure:
    """Accuracy and fooling rate against epsilon, one line per model; attention models solid,
    baselines dashed.

    Args:
        results: a robustness results dict (``ltpa.robustness.load_results``).

    Returns:
        The two-panel figure.
    """
    check_results(results)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Accuracy", "Fooling rate"))
    # 24 distinct colours, so no two models of the twelve-model zoo share one.
    palette = plotly.colors.qualitative.Dark24
    for index, model in enumerate(results["models"]):
        name = model.get("paper_name") or model["id"]
        style = dict(color=palette[index % len(palette)], dash="solid" if model.get("attention") else "dash")
        for col, key in ((1, "accuracy"), (2, "fooling_rate")):
            fig.add_trace(go.Scatter(
                x=results["levels"], y=[100 * v for v in model[key]], mode="lines+markers",
                name=name, legendgroup=model["id"], showlegend=col == 1, line=style,
                hovertemplate=f"{name}<br>epsilon %{{x}}/255<br>{key.replace('_', ' ')} %{{y:.1f}}%<extra></extra>",
            ), row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title_text="epsilon (k/255)", row=1, col=col)
        fig.update_yaxes(title_text="%", range=[0, 100], row=1, col=col)
    dataset = results["dataset"]
    fig.update_layout(
        title=f"{results.get('attack_name', results['attack'])} on {dataset['n_images']} test images "
              "(solid: attention, dashed: baseline)",
        height=420, margin=dict(t=70, b=40), legend=dict(orientation="h", y=-0.2),
    )
    return fig



def confidence_figure(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str,
                      current_levels: int | None = None) -> go.Figure:
    """Probability against epsilon, one line per model; a dotted vertical line marks the
    epsilon chosen on the page.

    Args:
        curves: ``{name: (levels, probabilities)}``, e.g. from ``ltpa.robustness.confidence_curve``.
        title: the figure's title.
        current_levels: the epsilon (grey levels) to mark, or None.

    Returns:
        The figure.
    """
    fig = go.Figure()
    for name, (levels, probability) in curves.items():
        fig.add_trace(go.Scatter(
            x=list(levels), y=[float(p) for p in probability], mode="lines+markers", name=name,
            hovertemplate=f"{name}<br>epsilon %{{x}}/255<br>probability %{{y:.1%}}<extra></extra>",
        ))
    if current_levels is not None:
        fig.add_vline(x=current_levels, line_dash="dot", line_color="grey")
    fig.update_layout(title=title, height=360, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(title_text="epsilon (k/255)", range=[0, APP_MAX_LEVELS + 0.5])
    fig.update_yaxes(title_text="probability", range=[0, 1.02], tickformat=".0%")
    return fig
