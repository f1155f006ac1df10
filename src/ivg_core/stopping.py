"""End-of-response detection (EOS, stop strings, length) and response text."""

from __future__ import annotations

from enum import IntEnum

import torch
from transformers import PreTrainedTokenizerBase

__all__ = ["FinishReason", "StopChecker"]


class FinishReason(IntEnum):
    """Why a row ended; ``NONE`` while it is still decoding."""

    NONE = 0
    EOS = 1
    STOP = 2
    LENGTH = 3

    @property
    def label(self) -> str | None:
        return None if self is FinishReason.NONE else self.name.lower()


class StopChecker:
    """Decides which rows end after a token and renders response text.

    Stop strings are searched in the text decoded with special tokens kept, so
    a stop string such as ``<|endoftext|>`` is found, and a stop string split
    across several tokens is found once its last token arrives.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        stop_strings: list[str],
        eos_token_ids: set[int],
        max_new_tokens: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = list(stop_strings)
        self.eos_token_ids = torch.tensor(sorted(eos_token_ids), dtype=torch.long)
        self.max_new_tokens = max_new_tokens

    def check(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        new_tokens: torch.Tensor,
        max_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the finish reason of each row after its newest token.

        Args:
            tokens: response ids of the rows, shape (rows, max_new_tokens).
            lengths: response lengths, newest token included, shape (rows,).
            new_tokens: the newest token of each row, shape (rows,).
            max_lengths: each row's length limit, shape (rows,); default:
                ``max_new_tokens`` for every row.

        Returns:
            ``FinishReason`` values of shape (rows,), ``NONE`` for rows that go on.
        """
        reasons = torch.full_like(lengths, FinishReason.NONE)
        limit = self.max_new_tokens if max_lengths is None else max_lengths
        reasons[lengths >= limit] = FinishReason.LENGTH
        if self.stop_strings:
            for i in range(len(lengths)):
                text = self._raw_text(tokens[i, : lengths[i]])
                if self._stop_index(text) is not None:
                    reasons[i] = FinishReason.STOP
        is_eos = torch.isin(new_tokens.cpu(), self.eos_token_ids)
        reasons[is_eos] = FinishReason.EOS
        return reasons

    def text(self, ids: torch.Tensor, reason: FinishReason) -> str:
        """Return the response text of one row.

        The EOS token is left out; a stopped row's text ends before its stop
        string. Special tokens are left out as ``skip_special_tokens`` does.
        """
        if reason is FinishReason.EOS:
            ids = ids[:-1]
        if reason is not FinishReason.STOP:
            return self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)
        text = self._raw_text(ids)
        index = self._stop_index(text)
        text = text[:index] if index is not None else text
        for special in self.tokenizer.all_special_tokens:
            text = text.replace(special, "")
        return text

    def _raw_text(self, ids: torch.Tensor) -> str:
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=False)

    def _stop_index(self, text: str) -> int | None:
        found = [text.find(stop) for stop in self.stop_strings]
        found = [index for index in found if index >= 0]
        return min(found) if found else None
