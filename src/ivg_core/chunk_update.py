"""Chunk-level participants: how each catches up with the response at a boundary.

Three updaters share one interface:

- ``BaseIdsUpdater`` feeds the new base token ids into the participant's KV
  cache, for participants that share the base vocabulary;
- ``TextUpdater`` feeds the response text in the participant's own tokens:
  text up to the last space is encoded once and kept in the cache, and only
  the last, unfinished word is run again at each boundary;
- ``ReferenceUpdater`` recomputes every value from scratch, without a cache:
  the slow path that the tests compare the fast one against.

A response's tokens for a participant with another tokenizer are
``encode(text[:cut]) + encode(text[cut:])``, where ``cut`` is the position of
the text's last space. With a tokenizer that splits words before spaces, as
GPT-2's byte-level BPE does, encoding the text up to ``cut`` piece by piece
gives the same ids as encoding it at once, so the incremental and the
reference path agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .participant import FedValues, Participant, ParticipantState

if TYPE_CHECKING:
    from .decoder import Decoder, TrackedValues

__all__ = [
    "BaseIdsUpdater",
    "ChunkUpdater",
    "ReferenceUpdater",
    "TextUpdater",
    "pad_right",
    "split_response",
]


def pad_right(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return token ids right padded with 0, shape (n, width), and the lengths."""
    width = max((len(ids) for ids in sequences), default=0)
    tokens = torch.zeros(len(sequences), width, dtype=torch.long)
    for i, ids in enumerate(sequences):
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    lengths = torch.tensor([len(ids) for ids in sequences], dtype=torch.long)
    return tokens, lengths


def split_response(text: str, start: int = 0) -> int:
    """Return where the kept part of a response text ends: its last space."""
    return max(start, text.rfind(" "))


def text_response_ids(participant: Participant, text: str) -> list[int]:
    """Return a response's ids in a participant's own tokens (see module doc)."""
    cut = split_response(text)
    return participant.encode_text(text[:cut]) + participant.encode_text(text[cut:])


def run_from_scratch(
    decoder: Decoder, participant: Participant, row: int, suffix_ids: list[int]
) -> tuple[dict[str, FedValues], torch.Tensor]:
    """Run a participant on one row's prompt, response and suffix, without a cache.

    Returns:
        the tracked values of the response tokens, shape (1,) each, and the
        output after the suffix (after the response when it is empty).
    """
    prompt = decoder.prompts[row // decoder.rows_per_prompt]
    if participant.shares_base_vocabulary:
        response = decoder.tokens[row, : decoder.lengths[row]].tolist()
    else:
        response = text_response_ids(participant, decoder.response_text(row))
    state = ParticipantState([participant])
    state.prefill([[participant.encode_prompt(prompt)]], torch.tensor([row]))
    fed = state.feed(*pad_right([response]), participant.tracks)
    if suffix_ids:
        state.feed(*pad_right([list(suffix_ids)]))
    return fed, state.output


class ChunkUpdater:
    """Keeps one chunk-level participant's tracked values up to date."""

    def __init__(self, decoder: Decoder, participant: Participant) -> None:
        self.decoder = decoder
        self.participant = participant

    @property
    def state(self) -> ParticipantState:
        return self.decoder.states[self.participant]

    @property
    def tracked(self) -> dict[str, TrackedValues]:
        return self.decoder.tracked[self.participant]

    def update(self) -> None:
        """Bring the tracked values of every row in the state up to date."""
        raise NotImplementedError

    def output_after(self, rows: torch.Tensor, suffix_ids: list[int]) -> torch.Tensor:
        """Return the output after each row's response and ``suffix_ids``."""
        raise NotImplementedError

    def select(self, index: torch.Tensor) -> None:
        """Reorder per-row data kept here: row j becomes row ``index[j]``."""

    def _lookup(self, rows: torch.Tensor) -> torch.Tensor:
        from .errors import SearchError

        state_rows = self.state.rows
        lookup = torch.full((self.decoder.num_rows,), -1, dtype=torch.long)
        lookup[state_rows] = torch.arange(state_rows.numel())
        positions = lookup[rows]
        if (positions < 0).any():
            raise SearchError(
                f"rows {rows[positions < 0].tolist()} have no cache in participant "
                f"{self.participant.label!r}; read outputs only while scoring"
            )
        return positions


class BaseIdsUpdater(ChunkUpdater):
    """Feeds new base token ids to a participant with the base vocabulary."""

    def update(self) -> None:
        rows = self.state.rows
        if rows.numel() == 0:
            return
        tokens, lengths = self.decoder.unfed_tokens(rows, self.state.fed)
        fed = self.state.feed(tokens, lengths, self.participant.tracks)
        for track, values in fed.items():
            self.tracked[track].add(rows, values)

    def output_after(self, rows: torch.Tensor, suffix_ids: list[int]) -> torch.Tensor:
        count = self.state.rows.numel()
        tokens, lengths = pad_right([list(suffix_ids)] * count)
        _, output = self.state.peek(tokens, lengths, frozenset())
        return output[self._lookup(rows).to(output.device)]


class TextUpdater(ChunkUpdater):
    """Feeds the response text, in the participant's tokens, incrementally.

    Per row, the text up to the last space is fed once and kept; the rest (the
    tail) is fed again at each boundary and cropped from the cache afterwards.
    """

    def __init__(self, decoder: Decoder, participant: Participant) -> None:
        from .decoder import TrackedValues

        super().__init__(decoder, participant)
        rows = decoder.num_rows
        self.kept_text = [""] * rows
        self.tails: dict[int, list[int]] = {}
        self.rewritten: set[int] = set()
        self.kept = {t: TrackedValues.zeros(rows) for t in participant.tracks}

    def update(self) -> None:
        rows = self.state.rows
        if rows.numel() == 0:
            return
        pieces, self.tails, self.rewritten = [], {}, set()
        for row in rows.tolist():
            pieces.append(self._next_piece(row))
        fed = self.state.feed(*pad_right(pieces), self.participant.tracks)
        for track, values in fed.items():
            self.kept[track].add(rows, values)
        if self.participant.tracks:
            self._track_tails(rows)
        for row in self.rewritten:
            fed, _ = run_from_scratch(self.decoder, self.participant, row, [])
            for track, values in fed.items():
                self.tracked[track].replace(torch.tensor([row]), values)

    def _next_piece(self, row: int) -> list[int]:
        """Return the ids of a row's text to keep, and set aside its tail."""
        text = self.decoder.response_text(row)
        kept = self.kept_text[row]
        if not text.startswith(kept):
            # A stop string that began in the kept text cut it short: this
            # finished row is scored from scratch and then leaves the cache.
            self.rewritten.add(row)
            self.tails[row] = []
            return []
        cut = split_response(text, len(kept))
        self.tails[row] = self.participant.encode_text(text[cut:])
        self.kept_text[row] = text[:cut]
        return self.participant.encode_text(text[len(kept) : cut])

    def _track_tails(self, rows: torch.Tensor) -> None:
        tails = [self.tails[row] for row in rows.tolist()]
        fed, _ = self.state.peek(*pad_right(tails), self.participant.tracks)
        for track, values in fed.items():
            kept = self.kept[track]
            self.tracked[track].replace(
                rows,
                FedValues(
                    kept.total[rows] + values.total,
                    torch.where(values.count > 0, values.last, kept.last[rows]),
                    kept.count[rows] + values.count,
                ),
            )

    def output_after(self, rows: torch.Tensor, suffix_ids: list[int]) -> torch.Tensor:
        state_rows = self.state.rows.tolist()
        sequences = [self.tails[row] + list(suffix_ids) for row in state_rows]
        _, output = self.state.peek(*pad_right(sequences), frozenset())
        output = output[self._lookup(rows).to(output.device)].clone()
        for i, row in enumerate(rows.tolist()):
            if row in self.rewritten:
                output[i] = run_from_scratch(
                    self.decoder, self.participant, row, suffix_ids
                )[1][0]
        return output

    def select(self, index: torch.Tensor) -> None:
        self.kept_text = [self.kept_text[i] for i in index.tolist()]
        for values in self.kept.values():
            values.select(index)
        self.tails, self.rewritten = {}, set()


class ReferenceUpdater(ChunkUpdater):
    """Recomputes every value from the prompt and the whole response, no cache.

    The decoder gives this participant no state; each call runs the model on
    one row at a time.
    """

    def update(self) -> None:
        stale = torch.nonzero(~self.decoder.scored).squeeze(-1)
        for row in stale.tolist():
            fed, _ = run_from_scratch(self.decoder, self.participant, row, [])
            for track, values in fed.items():
                self.tracked[track].replace(torch.tensor([row]), values)

    def output_after(self, rows: torch.Tensor, suffix_ids: list[int]) -> torch.Tensor:
        outputs = [
            run_from_scratch(self.decoder, self.participant, row, suffix_ids)[1]
            for row in rows.tolist()
        ]
        return torch.cat(outputs)
