"""Robustness to adversarial perturbations, split by concern:

* ``ltpa.robustness.sweeps``: accuracy and fooling-rate curves over a dataset (``sweep_model``,
  ``run_robustness``, the ``ltpa robustness`` command); the definitions are in its docstring;
* ``ltpa.robustness.results``: the results file format, its check, CSV, merging, reading/writing;
* ``ltpa.robustness.report``: the Markdown tables of a results file;
* ``ltpa.robustness.one_image``: one image under attack (the Adversarial page's report,
  confidence curves, attention shift).

The figures are in ``ltpa.viz`` (``robustness_figure``, ``confidence_figure``). The names below
are the public API, importable from ``ltpa.robustness`` directly.
"""
from ltpa.robustness.one_image import (
    IFGSM_CURVE_LEVELS,
    SHIFT_RULE,
    SHIFT_VALUE,
    AttackReport,
    AttentionShift,
    attack_report,
    attention_shift,
    confidence_curve,
    moved_mass,
    perturbation_image,
)
from ltpa.robustness.report import measured_on, results_markdown
from ltpa.robustness.results import (
    DEFINITIONS,
    RESULTS_CSV,
    RESULTS_FORMAT,
    RESULTS_HTML,
    RESULTS_JSON,
    SHIPPED_DIR,
    check_results,
    load_results,
    merge_results,
    results_csv,
    write_results,
)
from ltpa.robustness.sweeps import (
    DEFAULT_LEVELS,
    LABEL_MODES,
    ModelCurve,
    check_levels,
    load_eval_images,
    parse_levels,
    run_robustness,
    subset,
    sweep_model,
)

__all__ = [
    "IFGSM_CURVE_LEVELS", "SHIFT_RULE", "SHIFT_VALUE", "AttackReport", "AttentionShift",
    "attack_report", "attention_shift", "confidence_curve", "moved_mass", "perturbation_image",
    "measured_on", "results_markdown", "DEFINITIONS", "RESULTS_CSV", "RESULTS_FORMAT",
    "RESULTS_HTML", "RESULTS_JSON", "SHIPPED_DIR", "check_results", "load_results",
    "merge_results", "results_csv", "write_results", "DEFAULT_LEVELS", "LABEL_MODES",
    "ModelCurve", "check_levels", "load_eval_images", "parse_levels", "run_robustness", "subset",
    "sweep_model",
]
