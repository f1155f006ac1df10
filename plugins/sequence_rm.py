"""Sequence score model as a chunk scorer or golden evaluator.

A sequence score model, such as the golden reward model
``chadlzx/golden_rm_summarize``, is a transformer backbone with a head
``Linear(hidden, score_dim, bias=False)`` stored as ``score_head.weight``. It
scores ``template(prompt) + response`` by one column of the head's output at
the text's last token. With ``append_eos`` the tokenizer's EOS token follows
the response, as the TL;DR summarization golden reward model expects for
``prompt + "TL;DR: " + response + EOS``. The model reads the whole text at
every call and keeps no cache.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field
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
from ivg_core.heads import SequenceScoreModel

__all__ = [
    "SequenceRM",
    "SequenceRMEvaluator",
    "SequenceRMEvaluatorSpec",
    "SequenceRMScorer",
    "SequenceRMScorerSpec",
]

logger = logging.getLogger(__name__)

HEAD = "sequence_score"
BATCH_SIZE = 32
MODEL_DESCRIPTION = (
    "Sequence score model checkpoint: a backbone under 'transformer.' (GPT-2) or "
    "'model.' (Llama) and score_head.weight of shape (score_dim, hidden). Its "
    "template renders the text before the response."
)
APPEND_EOS_DESCRIPTION = (
    "Append the tokenizer's EOS token after the response, for models trained "
    "on texts that end with EOS."
)
SCORE_INDEX_DESCRIPTION = "Column of the score head that gives the score."


class SequenceRM:
    """Scores prompt and response pairs with a sequence score model, in batches.

    Texts longer than the model's context window keep their last tokens, and a
    leading BOS token, because the score is read at the last token.
    """

    def __init__(
        self,
        model: SequenceScoreModel,
        tokenizer: PreTrainedTokenizerBase,
        ref: ModelRef,
        append_eos: bool = False,
        score_index: int = 0,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        score_dim = model.score_head.out_features
        if not 0 <= score_index < score_dim:
            raise SpecError(
                f"score_index {score_index} is out of range for "
                f"{ref.name_or_path!r}, whose score head has {score_dim} "
                f"outputs; set score_index between 0 and {score_dim - 1}"
            )
        if append_eos and tokenizer.eos_token_id is None:
            raise SpecError(
                f"append_eos is set, but the tokenizer of {ref.name_or_path!r} "
                "has no EOS token; set append_eos to false"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.ref = ref
        self.append_eos = append_eos
        self.score_index = score_index
        self.batch_size = batch_size
        config = model.config.get_text_config()
        self.window: int | None = getattr(config, "max_position_embeddings", None)

    def encode(self, prompt: str, response: str) -> list[int]:
        """Return the token ids that the model scores for one pair.

        The ids are those of ``template(prompt) + response`` with the
        tokenizer's special tokens, then EOS when ``append_eos`` is set, cut
        to the context window.

        Raises:
            SpecError: the text has no tokens and the tokenizer has no BOS or
                EOS token to score instead.
        """
        return self._fit_window(self._text_ids(prompt, response))

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Return one float64 score per (prompt, response) pair, shape (pairs,).

        Pairs are batched in order of length to save padding. Each text is
        right-padded and read at its own last token, so its batch changes its
        score only by rounding.
        """
        full = [
            self._text_ids(prompt, response)
            for prompt, response in zip(prompts, responses, strict=True)
        ]
        too_long = sum(
            self.window is not None and len(ids) > self.window for ids in full
        )
        if too_long:
            logger.warning(
                "%d of %d texts are longer than the context window of %s (%d "
                "tokens); scoring their last tokens",
                too_long,
                len(full),
                self.ref.name_or_path,
                self.window,
            )
        encoded = [self._fit_window(ids) for ids in full]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        scores = torch.empty(len(encoded), dtype=torch.float64)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            scores[batch] = self._score_batch([encoded[i] for i in batch])
        return scores

    def _text_ids(self, prompt: str, response: str) -> list[int]:
        ids = list(self.tokenizer(self.ref.render(prompt) + response)["input_ids"])
        if self.append_eos:
            ids.append(self.tokenizer.eos_token_id)
        if ids:
            return ids
        for token_id in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id):
            if token_id is not None:
                return [token_id]
        raise SpecError(
            f"the prompt {prompt!r} and its response render to no tokens for "
            f"{self.ref.name_or_path!r}, and its tokenizer has no BOS or EOS "
            "token to score instead; put text around '{prompt}' in the template"
        )

    def _fit_window(self, ids: list[int]) -> list[int]:
        """Return the last tokens that fit the context window, and a leading BOS."""
        if self.window is None or len(ids) <= self.window:
            return ids
        keep_bos = ids[0] == self.tokenizer.bos_token_id and self.window > 1
        head = ids[:1] if keep_bos else []
        return head + ids[len(ids) - (self.window - len(head)) :]

    def _score_batch(self, batch: list[list[int]]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        length = max(len(ids) for ids in batch)
        # Padding ids are masked out and follow the text, so any id will do.
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0
        input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        with torch.inference_mode():
            scores = self.model(input_ids.to(device), attention_mask.to(device))
        return scores[:, self.score_index].double().cpu()


class SequenceRMScorerSpec(ChunkScorerSpec):
    """Chunk scorer: a sequence score model's score of template(prompt) + response."""

    kind: Literal["sequence_rm"] = "sequence_rm"
    model: ModelRef = Field(description=MODEL_DESCRIPTION)
    append_eos: bool = Field(False, description=APPEND_EOS_DESCRIPTION)
    score_index: int = Field(0, ge=0, strict=True, description=SCORE_INDEX_DESCRIPTION)

    def build(self, context: BuildContext) -> SequenceRMScorer:
        return SequenceRMScorer(
            _load(context, self.model, self.append_eos, self.score_index)
        )


class SequenceRMScorer(ChunkScorer):
    """Scores each row's template(prompt) + response text with a sequence RM."""

    def __init__(self, rm: SequenceRM) -> None:
        self.rm = rm

    def score(self, decoder: Decoder, rows: torch.Tensor) -> torch.Tensor:
        indices = rows.tolist()
        prompts = [decoder.prompts[row // decoder.rows_per_prompt] for row in indices]
        responses = [decoder.response_text(row) for row in indices]
        return self.rm.score(prompts, responses)


class SequenceRMEvaluatorSpec(EvaluatorSpec):
    """Golden evaluator: a sequence score model's score of the finished pairs."""

    kind: Literal["sequence_rm"] = "sequence_rm"
    model: ModelRef = Field(description=MODEL_DESCRIPTION)
    append_eos: bool = Field(False, description=APPEND_EOS_DESCRIPTION)
    score_index: int = Field(0, ge=0, strict=True, description=SCORE_INDEX_DESCRIPTION)

    def build(self, context: BuildContext) -> SequenceRMEvaluator:
        return SequenceRMEvaluator(
            _load(context, self.model, self.append_eos, self.score_index)
        )


class SequenceRMEvaluator(Evaluator):
    """Scores finished template(prompt) + response texts with a sequence RM."""

    def __init__(self, rm: SequenceRM) -> None:
        self.rm = rm

    def evaluate(
        self,
        prompts: list[str],
        responses: list[str],
        references: list[str | None] | None = None,
    ) -> list[float]:
        return self.rm.score(prompts, responses).tolist()


def _load(
    context: BuildContext, ref: ModelRef, append_eos: bool, score_index: int
) -> SequenceRM:
    model = context.store.model(ref, HEAD)
    tokenizer = context.store.tokenizer(ref)
    return SequenceRM(model, tokenizer, ref, append_eos, score_index)


@hookimpl
def ivg_register_chunk_scorers(register) -> None:
    register(SequenceRMScorerSpec)


@hookimpl
def ivg_register_evaluators(register) -> None:
    register(SequenceRMEvaluatorSpec)
