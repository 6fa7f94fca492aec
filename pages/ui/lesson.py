"""The Lesson page's content: a guided tour in steps, each with short text for students, notes for
the teacher, and presets that open another page in a given state (a link carrying URL settings,
see ``pages/ui/url_state.py``). Everything is local: no external image, font or link is needed.

Presets name zoo ids; a preset whose model the running zoo lacks simply leaves that setting out,
so the target page uses its default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

HOME, COMPARE, MASKS, ADVERSARIAL = "app.py", "pages/1_Compare.py", "pages/3_Masks.py", "pages/4_Adversarial.py"


@dataclass(frozen=True)
class Preset:
    """A link to ``page`` opened with ``settings`` (URL parameter -> value)."""

    label: str
    page: str
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class Step:
    """One step of the tour."""

    title: str
    text: str  # for students (Markdown)
    notes: str  # for the teacher (Markdown)
    presets: tuple[Preset, ...] = field(default_factory=tuple)


STEPS: tuple[Step, ...] = (
    Step(
        "What each stage attends to",
        "An attention model looks at an image at several **stages**, from fine detail (32×32 maps) "
        "to whole objects (8×8 maps). At each stage it scores every position and turns the scores "
        "into a map that sums to 1; the classifier only sees the features weighted by these maps. "
        "Open the cat and compare the three pictures: which stage finds the cat?",
        "- Ask the class to guess first which stage will be sharpest; the late stage (layer 13, "
        "8×8) usually is, the early one (layer 7) often spreads its attention almost evenly.\n"
        "- A map labelled *near-uniform* on the picture has entropy / log N ≥ 0.98: its colours "
        "are noise, however striking. Switch *Map scaling* to *stretch min to max* to show how "
        "display scaling can make an empty map look meaningful.\n"
        "- The models were trained on 32×32 CIFAR-10 images and know only its ten classes.",
        (Preset("The cat, stage by stage (VGG-att3, pc)", HOME,
                {"image": "photo_chelsea.jpg", "model": "vgg_att3_concat_pc", "scaling": "max"}),
         Preset("A CIFAR-10 horse (ResNet-att2, pc)", HOME,
                {"image": "cifar_horse_0000.jpg", "model": "resnet_att2_concat_pc", "scaling": "max"})),
    ),
    Step(
        "Learned attention vs a post-hoc map",
        "Attention is part of the decision: the model computes it on the way to its answer. "
        "**Grad-CAM** and **CAM** are computed *afterwards* from a model without attention, to "
        "explain it. The Compare page puts both kinds side by side, columns lined up by map size.",
        "- Point out that Grad-CAM of the plain VGG works on an 8×8 map behind three poolings "
        "and is often empty (no positive evidence), while CAM of VGG-GAP is smooth by design.\n"
        "- Ask: if a post-hoc map and an attention map disagree, which one tells you what the "
        "model used? (Attention is used by construction; a post-hoc map is an estimate.)",
        (Preset("Two attention models beside Grad-CAM and CAM", COMPARE,
                {"image": "photo_coffee.jpg", "models": ["vgg_att3_concat_pc", "resnet_att2_concat_pc"]}),),
    ),
    Step(
        "From attention to a mask, and its score",
        "Threshold a map and you get a mask of the object. With the object's true outline (the "
        "*ground truth*) the mask gets a score, the Jaccard index: overlap divided by union, 1 for "
        "a perfect mask. A plain centred blob is thresholded the same way: can attention beat it?",
        "- On the 328 Weizmann horses the shipped VGG attention maps score below the centred blob "
        "under every fixed rule; only ResNet-att2-pc beats it, narrowly (docs/results.md). Say so: "
        "a result that contradicts the paper is still a result.\n"
        "- Upload a ground-truth mask of the chosen image in the sidebar to get scores; drag the "
        "threshold and watch the dashed line move along the curve. The star marks the best "
        "threshold *for this image*, an optimistic figure.",
        (Preset("ResNet-att2-pc, stages combined, top 25% of pixels", MASKS,
                {"image": "cifar_horse_0000.jpg", "model": "resnet_att2_concat_pc", "stage": "combined",
                 "rule": "top", "t": 25}),
         Preset("VGG-att3-pc, last stage, half the attention mass", MASKS,
                {"image": "cifar_horse_0000.jpg", "model": "vgg_att3_concat_pc", "stage": "layer13",
                 "rule": "mass", "t": 50})),
    ),
    Step(
        "FGSM: predict, then reveal",
        "The fast gradient sign method nudges every pixel by at most ε grey levels in the "
        "direction that hurts the classifier most. **Before each link, predict**: will the label "
        "change at this ε? Then open it and see. Even 1/255, invisible to us, can be enough.",
        "- Run the links in order (1, 2, 4, 8 /255) and collect a show of hands before each.\n"
        "- Watch the attention maps under the attack too: the prediction can flip while the "
        "attention barely moves, or the attention can move without a flip.",
        tuple(Preset(f"ε = {k}/255", ADVERSARIAL,
                     {"image": "cifar_ship_0000.jpg", "model": "vgg_att3_concat_pc", "attack": "fgsm",
                      "eps": k, "label": "predicted"}) for k in (1, 2, 4, 8)),
    ),
    Step(
        "Why a flat curve can be gradient masking",
        "On the shipped curves the plain VGG keeps the highest accuracy under FGSM, which seems to "
        "say it is the most robust model. A one-step attack only follows the gradient at the "
        "start; if that gradient is tiny or misleading (a saturated, over-confident model), FGSM "
        "fails without the model being robust. An iterative attack (I-FGSM) takes many small "
        "steps and usually breaks such a model anyway.",
        "- Compare FGSM and I-FGSM on the plain VGG at the same ε: a large gap between them is "
        "the signature of gradient masking, not of robustness.\n"
        "- Compare each attention model only with its own baseline trained the same way: the "
        "training recipe (e.g. label smoothing) moves FGSM curves more than attention does.",
        (Preset("Plain VGG, FGSM at 8/255", ADVERSARIAL,
                {"image": "cifar_ship_0000.jpg", "model": "vgg", "attack": "fgsm", "eps": 8, "label": "predicted"}),
         Preset("Plain VGG, I-FGSM at 8/255", ADVERSARIAL,
                {"image": "cifar_ship_0000.jpg", "model": "vgg", "attack": "ifgsm", "eps": 8, "label": "predicted"})),
    ),
)


def available(preset: Preset, model_ids: set[str], example_files: set[str]) -> dict[str, Any]:
    """The preset's settings without the models or image this installation lacks."""
    settings: dict[str, Any] = {}
    for name, value in preset.settings.items():
        if name == "model" and value not in model_ids:
            continue
        if name == "models":
            value = [i for i in value if i in model_ids]
            if not value:
                continue
        if name == "image" and value not in example_files:
            continue
        settings[name] = value
    return settings
