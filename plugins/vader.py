"""VADER sentiment as a golden evaluator: the compound score of prompt + response.

VADER, from the ``vaderSentiment`` package, is a rule-based sentiment model
with a bundled lexicon, and its compound score lies in [-1, 1]. It needs no
download, so it serves as the golden reward offline.
"""

from __future__ import annotations

from typing import Literal

from ivg_core import BuildContext, Evaluator, EvaluatorSpec, SpecError, hookimpl

__all__ = ["VaderEvaluator", "VaderEvaluatorSpec"]

INSTALL = "pip install vaderSentiment"


class VaderEvaluatorSpec(EvaluatorSpec):
    """Golden evaluator: VADER compound sentiment of prompt + response."""

    kind: Literal["vader"] = "vader"

    def build(self, context: BuildContext) -> VaderEvaluator:
        return VaderEvaluator()


class VaderEvaluator(Evaluator):
    """Scores prompt + response with VADER's compound score, in [-1, 1]."""

    def __init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise SpecError(
                f"the vader evaluator needs the vaderSentiment package; install it "
                f"with: {INSTALL}"
            ) from None
        self.analyzer = SentimentIntensityAnalyzer()

    def evaluate(
        self,
        prompts: list[str],
        responses: list[str],
        references: list[str | None] | None = None,
    ) -> list[float]:
        return [
            self.analyzer.polarity_scores(prompt + response)["compound"]
            for prompt, response in zip(prompts, responses, strict=True)
        ]


@hookimpl
def ivg_register_evaluators(register) -> None:
    register(VaderEvaluatorSpec)
