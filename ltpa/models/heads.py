"""Classifier heads over attended descriptors: ``concat`` and ``indep``."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ltpa.models.outputs import ModelOutput

HEADS = ("concat", "indep")


def descriptor_norm(dim: int, dropout: float) -> nn.Sequential:
    """BN-ReLU-Dropout applied to each attended descriptor before classification (authors' code)."""
    return nn.Sequential(nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Dropout(dropout))


class AttentionHead(nn.Module):
    """``concat``: one linear layer on [g_a^1, ..., g_a^S]; ``indep``: one per stage, log-softmaxes summed."""

    def __init__(self, dims: list[int], num_classes: int, head: str, dropout: float) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; valid choices: {', '.join(HEADS)}")
        self.head = head
        self.norms = nn.ModuleList(descriptor_norm(d, dropout) for d in dims)
        if head == "concat":
            self.classifiers = nn.ModuleList([nn.Linear(sum(dims), num_classes)])
        else:
            self.classifiers = nn.ModuleList(nn.Linear(d, num_classes) for d in dims)

    def forward(self, descriptors: list[Tensor]) -> Tensor:
        normed = [norm(d) for norm, d in zip(self.norms, descriptors)]
        if self.head == "concat":
            return self.classifiers[0](torch.cat(normed, dim=1))
        # Summing per-stage log-probabilities makes a product of experts; cross-entropy on this
        # sum renormalises it, exactly as the authors' indep model trains.
        return sum(
            torch.log_softmax(classifier(d).float(), dim=1)
            for classifier, d in zip(self.classifiers, normed)
        )


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
    return ModelOutput(
        classifier([r.descriptor for r in results]),
        tuple(r.attention for r in results),
        tuple(r.scores for r in results),
        stage_names,
        features,
    )
