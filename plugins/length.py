"""Response length in words, as an evaluator for runs without a golden reward."""

from __future__ import annotations

from typing import Literal

from ivg_core import BuildContext, Evaluator, EvaluatorSpec, hookimpl

__all__ = ["WordsEvaluator", "WordsEvaluatorSpec"]


class WordsEvaluatorSpec(EvaluatorSpec):
    """Evaluator: the number of whitespace-separated words of the response.

    Use it where the golden reward runs outside ivg, such as AlpacaEval's
    judge on the instruction-following outputs.
    """

    kind: Literal["words"] = "words"

    def build(self, context: BuildContext) -> WordsEvaluator:
        return WordsEvaluator()


class WordsEvaluator(Evaluator):
    """Counts the words of each response."""

    def evaluate(
        self,
        prompts: list[str],
        responses: list[str],
        references: list[str | None] | None = None,
    ) -> list[float]:
        return [float(len(response.split())) for response in responses]


@hookimpl
def ivg_register_evaluators(register) -> None:
    register(WordsEvaluatorSpec)
