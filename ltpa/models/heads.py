"""Classifier heads over attended descriptors: ``concat`` and ``indep``."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ltpa.models.outputs import ModelOutput
from ltpa.choices import check_choice

HEADS = ("concat", "indep")


def descriptor_norm(dim: int, dropout: float) -> nn.Sequential:
    """BN-ReLU-Dropout applied to each attended descriptor before classification (authors' code)."""
    return nn.Sequential(nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Dropout(dropout))


class AttentionHead(nn.Module):
    """``concat``: one linear layer on [g_a^1, ..., g_a^S]; ``indep``: one per stage, log-softmaxes summed.

    ``stage_classifiers`` (concat only; an attention-quality lever, not in the paper) adds one
    linear classifier per stage on that stage's descriptor, used only by a training loss on them
    (deep supervision), so that every stage's attention must pick out class evidence on its own.
    """

    def __init__(self, dims: list[int], num_classes: int, head: str, dropout: float,
                 stage_classifiers: bool = False) -> None:
        super().__init__()
        check_choice("head", head, HEADS)
        if stage_classifiers and head != "concat":
            raise ValueError("stage_classifiers applies to the concat head; the indep head already "
                             "classifies each stage on its own")
        self.head = head
        self.norms = nn.ModuleList(descriptor_norm(d, dropout) for d in dims)
        if head == "concat":
            self.classifiers = nn.ModuleList([nn.Linear(sum(dims), num_classes)])
        else:
            self.classifiers = nn.ModuleList(nn.Linear(d, num_classes) for d in dims)
        self.stage_classifiers = (nn.ModuleList(nn.Linear(d, num_classes) for d in dims)
                                  if stage_classifiers else None)

    def forward(self, descriptors: list[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The logits and the per-stage logits (empty unless the head has per-stage classifiers)."""
        normed = [norm(d) for norm, d in zip(self.norms, descriptors)]
        if self.head == "concat":
            logits = self.classifiers[0](torch.cat(normed, dim=1))
            if self.stage_classifiers is None:
                return logits, ()
            return logits, tuple(c(d) for c, d in zip(self.stage_classifiers, normed))
        # Summing per-stage log-probabilities makes a product of experts; cross-entropy on this
        # sum renormalises it, exactly as the authors' indep model trains.
        stage_logits = tuple(torch.log_softmax(classifier(d).float(), dim=1)
                             for classifier, d in zip(self.classifiers, normed))
        return sum(stage_logits), stage_logits


class PlainHead(nn.Module):
    """The baseline classifier on ``g``, with the same BN-ReLU-Dropout as an attention head."""

    def __init__(self, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.norm = descriptor_norm(dim, dropout)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, feature: Tensor) -> Tensor:
        return self.classifier(self.norm(feature))


def attend_and_classify(
    blocks: nn.ModuleList, classifier: nn.Module, tapped: list[Tensor], global_feature: Tensor,
    stage_names: tuple[str, ...], features: Tensor,
) -> ModelOutput:
    """Run each stage's attention block on its tapped features and classify the descriptors."""
    results = [block(local, global_feature) for block, local in zip(blocks, tapped)]
    logits, stage_logits = classifier([r.descriptor for r in results])
    return ModelOutput(
        logits,
        tuple(r.attention for r in results),
        tuple(r.scores for r in results),
        stage_names,
        features,
        stage_logits,
    )
