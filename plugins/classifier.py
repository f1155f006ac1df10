"""Sequence classifier as a chunk scorer or golden evaluator.

Any ``AutoModelForSequenceClassification`` checkpoint scores ``prompt +
response``: ``logit(positive) − logit(negative)`` for a two-label model such
as ``lvwerra/distilbert-imdb``, or the single logit of a one-output model.
The classifier reads the whole text at every call, since it attends in both
directions and keeps no cache.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from transformers import PreTrainedTokenizerBase

from ivg_core import (
    BuildContext,
    ChunkScorer,
    ChunkScorerSpec,
    Decoder,
    Evaluator,
    EvaluatorSpec,
    ModelRef,
    SpecError,
    hookimpl,
)

__all__ = [
    "Classifier",
    "ClassifierEvaluator",
    "ClassifierEvaluatorSpec",
    "ClassifierScorer",
    "ClassifierScorerSpec",
]

HEAD = "sequence_classifier"
MODEL_DESCRIPTION = (
    "Sequence classification checkpoint; it reads prompt + response, so its "
    "template is not used."
)
POSITIVE_DESCRIPTION = "Label (config.id2label) whose logit counts up."
NEGATIVE_DESCRIPTION = (
    "Label whose logit counts down; with a one-output model both labels are ignored."
)


class Classifier:
    """Scores texts with a sequence classification model, in batches."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        positive: str,
        negative: str,
        batch_size: int = 32,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.columns = _label_columns(model, positive, negative)

    def score_texts(self, texts: list[str]) -> torch.Tensor:
        """Return one float64 score per text, shape (len(texts),)."""
        scores = [
            self._score_batch(texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        return torch.cat(scores) if scores else torch.empty(0, dtype=torch.float64)

    def _score_batch(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        # Right padding keeps the absolute positions of models such as GPT-2
        # the same whatever the other texts of the batch.
        encoded = self.tokenizer(
            texts,
            padding=True,
            padding_side="right",
            truncation=True,
            return_tensors="pt",
        ).to(device)
        with torch.inference_mode():
            logits = self.model(**encoded).logits.double().cpu()
        if self.columns is None:
            return logits[:, 0]
        positive, negative = self.columns
        return logits[:, positive] - logits[:, negative]


class ClassifierScorerSpec(ChunkScorerSpec):
    """Chunk scorer logit(positive) − logit(negative) on prompt + response."""

    kind: Literal["classifier"] = "classifier"
    model: ModelRef = Field(description=MODEL_DESCRIPTION)
    positive: str = Field("POSITIVE", description=POSITIVE_DESCRIPTION)
    negative: str = Field("NEGATIVE", description=NEGATIVE_DESCRIPTION)

    def build(self, context: BuildContext) -> ClassifierScorer:
        return ClassifierScorer(
            _load(context, self.model, self.positive, self.negative)
        )


class ClassifierScorer(ChunkScorer):
    """Scores each row's prompt + response text with a classifier."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    def score(self, decoder: Decoder, rows: torch.Tensor) -> torch.Tensor:
        texts = [
            decoder.prompts[row // decoder.rows_per_prompt] + decoder.response_text(row)
            for row in rows.tolist()
        ]
        return self.classifier.score_texts(texts)


class ClassifierEvaluatorSpec(EvaluatorSpec):
    """Golden evaluator logit(positive) − logit(negative) on prompt + response."""

    kind: Literal["classifier"] = "classifier"
    model: ModelRef = Field(description=MODEL_DESCRIPTION)
    positive: str = Field("POSITIVE", description=POSITIVE_DESCRIPTION)
    negative: str = Field("NEGATIVE", description=NEGATIVE_DESCRIPTION)

    def build(self, context: BuildContext) -> ClassifierEvaluator:
        classifier = _load(context, self.model, self.positive, self.negative)
        return ClassifierEvaluator(classifier)


class ClassifierEvaluator(Evaluator):
    """Scores finished prompt + response pairs with a classifier."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    def evaluate(
        self,
        prompts: list[str],
        responses: list[str],
        references: list[str | None] | None = None,
    ) -> list[float]:
        texts = [p + r for p, r in zip(prompts, responses, strict=True)]
        return self.classifier.score_texts(texts).tolist()


def _load(context: BuildContext, ref: ModelRef, positive: str, negative: str):
    model = context.store.model(ref, HEAD)
    tokenizer = context.store.tokenizer(ref)
    return Classifier(model, tokenizer, positive, negative)


def _label_columns(
    model: nn.Module, positive: str, negative: str
) -> tuple[int, int] | None:
    """Return the logit columns of the two labels, or None for one output."""
    if model.config.num_labels == 1:
        return None
    label_to_id = {label: int(i) for i, label in model.config.id2label.items()}
    missing = [label for label in (positive, negative) if label not in label_to_id]
    if missing:
        raise SpecError(
            f"classifier {model.config.name_or_path!r} has no label {missing[0]!r}; "
            f"its labels are {sorted(label_to_id)}. Set positive and negative to "
            "two of them."
        )
    return label_to_id[positive], label_to_id[negative]


@hookimpl
def ivg_register_chunk_scorers(register) -> None:
    register(ClassifierScorerSpec)


@hookimpl
def ivg_register_evaluators(register) -> None:
    register(ClassifierEvaluatorSpec)
