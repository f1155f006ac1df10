"""ROUGE-L against a reference response, as a golden evaluator.

The score is the ROUGE-L F-measure (longest common subsequence of words, with
Porter stemming) of the response against the task's reference, such as the
human TL;DR of a Reddit post, from the ``rouge-score`` package.
"""

from __future__ import annotations

from typing import Literal

from ivg_core import BuildContext, Evaluator, EvaluatorSpec, SpecError, hookimpl

__all__ = ["RougeEvaluator", "RougeEvaluatorSpec"]

INSTALL = "pip install rouge-score"


class RougeEvaluatorSpec(EvaluatorSpec):
    """Golden evaluator: ROUGE-L F-measure of the response against a reference."""

    kind: Literal["rouge_l"] = "rouge_l"

    def build(self, context: BuildContext) -> RougeEvaluator:
        return RougeEvaluator()


class RougeEvaluator(Evaluator):
    """Scores each response by ROUGE-L F-measure against its reference, in [0, 1]."""

    def __init__(self) -> None:
        try:
            from rouge_score import rouge_scorer
        except ImportError:
            raise SpecError(
                f"the rouge_l evaluator needs the rouge-score package; install it "
                f"with: {INSTALL}"
            ) from None
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def evaluate(
        self,
        prompts: list[str],
        responses: list[str],
        references: list[str | None] | None = None,
    ) -> list[float]:
        if references is None or any(r is None for r in references):
            raise SpecError(
                "the rouge_l evaluator needs a reference response for every "
                "prompt; use prompts from a source with references, such as the "
                "TL;DR posts with their human summaries"
            )
        return [
            self.scorer.score(reference, response)["rougeL"].fmeasure
            for reference, response in zip(references, responses, strict=True)
        ]


@hookimpl
def ivg_register_evaluators(register) -> None:
    register(RougeEvaluatorSpec)
