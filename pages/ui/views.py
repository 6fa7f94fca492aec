"""Output blocks several pages draw: display controls, the top-5 chart, the stage overlays side by
side, raw-map heatmaps, per-stage figures and the downloads."""
from __future__ import annotations

import io
import json
from typing import Any, Sequence

import cv2
import numpy as np
import streamlit as st

import ltpa
import plotly.graph_objects as go

from ltpa import figures, viz
from ltpa.inference import Analysis, StageMap
from ltpa.maps import COLORMAPS, MapStats
from pages.ui import state
from pages.ui.compute import MiB, bounded_cache, cache_key, digest, overlay_for
from pages.ui.widgets import ChosenImage, image_picker, model_picker


def display_controls() -> tuple[float, str]:
    """Opacity and colormap of the overlays (persisted across pages)."""
    opacity = state.persisted(st.slider, "Overlay opacity", state.OPACITY, state.DEFAULT_OPACITY,
                              min_value=0.0, max_value=1.0, step=0.05)
    colormap = state.persisted(st.selectbox, "Colormap", state.COLORMAP, state.DEFAULT_COLORMAP,
                               options=list(COLORMAPS))
    return float(opacity), str(colormap)


SCALING_LABELS = {"max": "a / peak (keeps contrast honest)", "minmax": "stretch min to max"}


def sidebar_inputs() -> tuple[ChosenImage | None, str | None, float, str, str]:
    """The sidebar the single-model pages share: image, model, then display controls.

    Returns ``(image, model id, opacity, colormap, scaling)``.
    """
    with st.sidebar:
        st.header("Image")
        chosen = image_picker()
        st.header("Model")
        model_id = model_picker()
        st.header("Display")
        opacity, colormap = display_controls()
        scaling = scaling_control()
    return chosen, model_id, opacity, colormap, scaling


def scaling_control() -> str:
    """How maps are scaled to colours (persisted): ``max`` divides by the peak, so a nearly
    uniform map looks uniform; ``minmax`` stretches tiny differences to the full range."""
    return str(state.persisted(
        st.radio, "Map scaling", state.SCALING, state.DEFAULT_SCALING, options=list(SCALING_LABELS),
        format_func=SCALING_LABELS.get,
        help="Softmax maps are tiny numbers (uniform is 1/1024 on a 32x32 map), so they are scaled "
             "for display. Dividing by the peak shows a nearly uniform map as nearly uniform; "
             "min-max stretching reveals small differences but exaggerates them.",
    ))


# Building a Plotly figure costs 10-20 ms (validation), far more than drawing it, so figures are
# cached, in byte-bounded caches (``pages.ui.compute.bounded_cache``, a figure measured by its
# JSON data: about 50-80 KiB each). The cache hands back the object itself (no copy); figures are
# never mutated after they are built (st.plotly_chart only serialises them).
@bounded_cache(max_bytes=4 * MiB)
def _top_k_figure(top: tuple[tuple[str, float], ...], title: str):
    return viz.top_k_bar(list(top), title)


@bounded_cache(max_bytes=8 * MiB)
def _heatmap(map_key: tuple, title: str, colorscale: str, _native: np.ndarray):
    return viz.map_heatmap(_native, title, colorscale=colorscale)


def _heatmap_figure(native: np.ndarray, title: str, colorscale: str):
    """A raw map's heatmap, cached on the map's shape, dtype and sha256 (not the array itself)."""
    native = np.ascontiguousarray(native)
    map_key = cache_key(native.shape, str(native.dtype), digest(native.tobytes()))
    return _heatmap(map_key, title, colorscale, native)


@bounded_cache(max_bytes=2 * MiB)
def _stats_figure(stats: tuple[tuple[str, tuple[float, ...]], ...]):
    return viz.stage_stats_figure({stage: MapStats(*values) for stage, values in stats})


def top5_chart(analysis: Analysis, key: str, title: str | None = None) -> None:
    """The top-5 classes as a Plotly bar chart."""
    figure = _top_k_figure(tuple(analysis.top(5)), title or f"Top-5: {analysis.predicted_class}")
    st.plotly_chart(figure, width="stretch", key=key)


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB uint8 image encoded as PNG."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


def npy_bytes(array: np.ndarray) -> bytes:
    """An array in NumPy's .npy format."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Several named arrays in one compressed .npz file."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def csv_text(array: np.ndarray) -> str:
    """A 2-D map as CSV (one row per map row)."""
    buffer = io.StringIO()
    np.savetxt(buffer, array, delimiter=",", fmt="%.8g")
    return buffer.getvalue()


def _file_stem(*parts: str) -> str:
    return "_".join(p.replace(" ", "-").replace("/", "-") for p in parts if p)


def stage_cell(
    chosen: ChosenImage, stage_map: StageMap, opacity: float, colormap: str, key: str,
    downloads: bool = True, caption: str | None = None, scaling: str = "max",
) -> None:
    """One stage's map over the image at the image's resolution, optionally with its downloads
    (overlay PNG at full resolution, raw map as .npy and CSV; generated only when clicked)."""
    image = overlay_for(chosen, stage_map, opacity, colormap, scaling=scaling)
    label = figures.near_uniform_label(stage_map.stats)
    if label is not None:  # said on the picture itself: scaled to its peak it looks like a finding
        image = figures.with_banner(image, label)
    height, width = stage_map.native_size
    st.image(image, caption=caption or f"{stage_map.stage} ({height}x{width} map)",
             width="stretch", output_format="JPEG")
    if not downloads:
        return
    name = _file_stem(chosen.name.rsplit(".", 1)[0], key, stage_map.stage)
    st.download_button(
        "Overlay PNG", lambda: png_bytes(overlay_for(chosen, stage_map, opacity, colormap,
                                                     full_resolution=True, scaling=scaling)),
        file_name=f"{name}_overlay.png", mime="image/png", key=f"{key}.{stage_map.stage}.png",
        on_click="ignore", icon=":material/download:",
    )
    left, right = st.columns(2)
    left.download_button(
        ".npy", lambda: npy_bytes(stage_map.native), file_name=f"{name}_map.npy",
        mime="application/octet-stream", key=f"{key}.{stage_map.stage}.npy", on_click="ignore",
    )
    right.download_button(
        "CSV", lambda: csv_text(stage_map.native), file_name=f"{name}_map.csv",
        mime="text/csv", key=f"{key}.{stage_map.stage}.csv", on_click="ignore",
    )


def stage_overlays(
    chosen: ChosenImage, maps: Sequence[StageMap], opacity: float, colormap: str, key: str,
    downloads: bool = True, scaling: str = "max",
) -> None:
    """Every stage's map over the image, side by side (see ``stage_cell``)."""
    if not maps:
        return
    if chosen.shown() is not chosen.array:
        height, width = chosen.shown().shape[:2]
        st.caption(f"This large image is drawn at {width}x{height} on screen; the overlay PNG "
                   f"downloads are at its full {chosen.loaded.width}x{chosen.loaded.height}.")
    colour_scale(colormap, scaling)
    for column, stage_map in zip(st.columns(len(maps)), maps):
        with column:
            stage_cell(chosen, stage_map, opacity, colormap, key, downloads, scaling=scaling)


def colour_scale(colormap: str, scaling: str) -> None:
    """The overlays' colour bar, with what its ends mean and the near-uniform rule."""
    low, high = figures.SCALE_ENDS.get(scaling, ("0", "1"))
    left, right = st.columns([1, 2])
    left.image(_colour_bar(colormap, low, high), width="stretch")
    right.caption(
        ("Colour = attention divided by the map's peak (0 to peak)" if scaling == "max" else
         "Colour = attention stretched from the map's minimum to its maximum")
        + f". Maps with entropy / log N ≥ {figures.NEAR_UNIFORM_ENTROPY} are spread almost evenly and "
        "are labelled *near-uniform* on the picture: their colours show noise, not a place.")


# A bar is 42x480x3 (59 KiB): 1 MiB holds every colormap and scaling (12 bars).
@bounded_cache(max_bytes=1 * MiB)
def _colour_bar(colormap: str, low: str, high: str) -> np.ndarray:
    return figures.colour_bar(colormap, 480, low=low, high=high)


def stages_figure_download(chosen: ChosenImage, panels: Sequence[tuple[str, np.ndarray]], opacity: float,
                           colormap: str, scaling: str, file_stem: str, key: str,
                           title: str | None = None) -> None:
    """A button downloading one PNG with the image and every map side by side (for slides),
    built when clicked (``ltpa.figures.stages_figure``, 320 px high pictures)."""
    if not panels:
        return
    st.download_button(
        "All stages figure (PNG)",
        lambda: png_bytes(figures.stages_figure(chosen.shown(), panels, colormap, opacity, scaling, title=title)),
        file_name=f"{file_stem}_stages.png", mime="image/png", key=key, on_click="ignore",
        icon=":material/download:", help="The image and every map side by side, with a colour bar: one picture for a slide.",
    )


def readable_log_axis(figure: go.Figure) -> go.Figure:
    """A copy of ``figure`` whose log-scale y axis is labelled with whole numbers at 1-2-5 steps
    (Plotly's default labels a short log range "2, 3, 4, 5" beside a lone "10")."""
    if figure.layout.yaxis.type != "log":
        return figure
    values = np.array([v for trace in figure.data for v in (trace.y or ()) if v is not None], dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return figure
    low, high = np.floor(np.log10(values.min())), np.ceil(np.log10(values.max()))
    ticks = [m * 10.0 ** e for e in range(int(low), int(high) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if values.min() / 2 <= t <= values.max() * 2]
    copy = go.Figure(figure)
    copy.update_yaxes(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], minor=dict(showgrid=False))
    return copy


def with_threshold_line(figure: go.Figure, threshold: float) -> go.Figure:
    """A copy of a Jaccard-versus-threshold figure with the threshold in use marked."""
    copy = go.Figure(figure)
    copy.add_vline(x=threshold, line_dash="dash", line_color="black",
                   annotation_text=f"in use: {threshold:g}", annotation_position="top")
    return copy


def raw_heatmaps(maps: Sequence[StageMap], key: str, per_row: int = 3, colormap: str = "jet") -> None:
    """Each stage's raw map as a Plotly heatmap (hover: weight and share of attention mass)."""
    for start in range(0, len(maps), per_row):
        row = maps[start:start + per_row]
        for column, stage_map in zip(st.columns(per_row), row):
            height, width = stage_map.native_size
            figure = _heatmap_figure(stage_map.native, f"{stage_map.stage} ({height}x{width})", colormap)
            column.plotly_chart(figure, width="stretch", key=f"{key}.{stage_map.stage}.heatmap")


def stats_rows(maps: Sequence[StageMap]) -> list[dict[str, Any]]:
    """Per-stage figures as table rows."""
    return [{
        "stage": m.stage,
        "map size": f"{m.native_size[0]}x{m.native_size[1]}",
        "entropy (nats)": round(m.stats.entropy, 4),
        "entropy / log(N)": round(m.stats.normalised_entropy, 4),
        "peak weight": float(f"{m.stats.peak:.4g}"),
        "peak × N": round(m.stats.peak_over_uniform, 3),
        "mass in top 10%": round(m.stats.top10_mass, 4),
    } for m in maps]


def stage_stats(maps: Sequence[StageMap], key: str) -> None:
    """Entropy, peak and top-10% mass of every stage: a table and a figure."""
    st.dataframe(stats_rows(maps), hide_index=True, width="stretch")
    figure = _stats_figure(tuple((m.stage, tuple(m.stats)) for m in maps))
    st.plotly_chart(figure, width="stretch", key=f"{key}.stats")


def view_record(chosen: ChosenImage, analyses: Sequence[Analysis], settings: dict[str, Any]) -> dict[str, Any]:
    """What is needed to reproduce a view: models and checkpoint hashes, settings, image hash."""
    return {
        "ltpa_version": ltpa.__version__,
        "image": {"name": chosen.name, "sha256": chosen.sha256, "height": chosen.loaded.height,
                  "width": chosen.loaded.width, "notes": list(chosen.loaded.notes)},
        "models": [{
            "id": a.model_id, "checkpoint_sha256": a.checkpoint_sha256, "device": a.device,
            "input_size": a.input_size, "top5": [[name, round(p, 6)] for name, p in a.top(5)],
            "stages": [{"stage": m.stage, "map_size": list(m.native_size), **m.stats._asdict()}
                       for m in a.maps],
        } for a in analyses],
        "settings": settings,
    }


def record_download(record: dict[str, Any], file_stem: str, key: str) -> None:
    """A button downloading the view record as JSON."""
    st.download_button(
        "View record (JSON)", json.dumps(record, indent=2), file_name=f"{file_stem}_view.json",
        mime="application/json", key=key, on_click="ignore", icon=":material/download:",
    )
