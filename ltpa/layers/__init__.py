"""Reusable building blocks (attention) kept apart from whole architectures."""
from ltpa.layers.attention import (
    COMPATIBILITIES,
    DIMENSION_MATCHING,
    NORMALISATIONS,
    AttentionBlock,
    AttentionResult,
)

__all__ = [
    "AttentionBlock",
    "AttentionResult",
    "COMPATIBILITIES",
    "DIMENSION_MATCHING",
    "NORMALISATIONS",
]
