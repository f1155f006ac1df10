"""The batched guided decoder: rows = prompts × rows per prompt, in one batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .chunk_update import (
    BaseIdsUpdater,
    ChunkUpdater,
    ReferenceUpdater,
    TextUpdater,
)
from .errors import GuidanceError, SearchError
from .participant import FedValues, Participant, ParticipantState, token_values
from .results import GenerationResult
from .sampling import Sampler
from .stopping import FinishReason, StopChecker

if TYPE_CHECKING:
    from .generator import GuidedGenerator

__all__ = ["Decoder", "TrackedValues"]

logger = logging.getLogger(__name__)

# Token-level participants of one model share a state (one forward pass) when
# each one's longest prompt is at least this fraction of the group's longest,
# or shorter by at most this many tokens.
SHARED_WIDTH_RATIO = 0.8
SHARED_WIDTH_SLACK = 32


@dataclass
class TrackedValues:
    """Per-row running values of one participant's tracked quantity.

    Attributes:
        total: sum over the response tokens, shape (rows,), float64.
        last: value at the last response token, shape (rows,), float64.
        count: number of response tokens seen, shape (rows,).
    """

    total: torch.Tensor
    last: torch.Tensor
    count: torch.Tensor

    @classmethod
    def zeros(cls, rows: int) -> TrackedValues:
        zeros = torch.zeros(rows, dtype=torch.float64)
        return cls(zeros, zeros.clone(), torch.zeros(rows, dtype=torch.long))

    def add(self, rows: torch.Tensor, fed: FedValues) -> None:
        """Add the values of newly fed tokens to ``rows``."""
        self.total[rows] += fed.total
        self.count[rows] += fed.count
        self.last[rows] = torch.where(fed.count > 0, fed.last, self.last[rows])

    def replace(self, rows: torch.Tensor, fed: FedValues) -> None:
        """Set ``rows`` to values computed over their whole response."""
        self.total[rows] = fed.total
        self.count[rows] = fed.count
        self.last[rows] = fed.last

    def select(self, index: torch.Tensor) -> None:
        self.total, self.last, self.count = (
            self.total[index],
            self.last[index],
            self.count[index],
        )


class Decoder:
    """Decoding state of one batch of prompts, driven by a search strategy.

    Global row ``r`` belongs to prompt ``r // rows_per_prompt``. The search
    strategy calls ``decode`` to add tokens, ``score`` at chunk boundaries and
    ``select`` to keep rows. Finished rows stop changing and leave every
    participant's KV cache.
    """

    def __init__(
        self,
        generator: GuidedGenerator,
        prompts: list[str],
        seeds: list[int],
        reference: bool = False,
    ) -> None:
        spec = generator.spec
        self.reference = reference
        self.generator = generator
        self.prompts = prompts
        self.rows_per_prompt = spec.search.rows_per_prompt()
        self.num_prompts = len(prompts)
        self.num_rows = self.num_prompts * self.rows_per_prompt
        self.max_new_tokens = spec.sampling.max_new_tokens
        self.steps = 0
        self.decoded_tokens = 0

        n = self.num_rows
        self.tokens = torch.zeros(n, self.max_new_tokens, dtype=torch.long)
        self.lengths = torch.zeros(n, dtype=torch.long)
        self.reasons = torch.zeros(n, dtype=torch.long)
        self.scores = torch.zeros(len(generator.scorers), n, dtype=torch.float64)
        self.scored = torch.zeros(n, dtype=torch.bool)
        self.sampler = Sampler(spec.sampling, seeds, self.rows_per_prompt)
        self.stop_checker = StopChecker(
            generator.base.tokenizer,
            spec.sampling.stop_strings,
            generator.eos_token_ids,
            self.max_new_tokens,
        )
        self.prompt_ids = {
            p: [self._fitted_prompt(p, i) for i in range(self.num_prompts)]
            for p in generator.participants
        }
        self.states, self.member_index = self._build_states()
        self.tracked = {
            p: {track: TrackedValues.zeros(n) for track in p.tracks}
            for p in generator.participants
        }
        self.updaters = self._build_updaters()
        self._prefill()

    @property
    def finished(self) -> torch.Tensor:
        """Whether each row has ended, shape (rows,)."""
        return self.reasons != FinishReason.NONE

    @property
    def active_rows(self) -> torch.Tensor:
        """Global indices of the rows that are still decoding."""
        return self.states[self.generator.base].rows

    def prompt_of_rows(self) -> torch.Tensor:
        """Return the prompt index of every row, shape (rows,)."""
        return torch.arange(self.num_rows) // self.rows_per_prompt

    def token_output(self, participant: Participant) -> torch.Tensor:
        """Return a token-level participant's output for the next token.

        Returns:
            shape (active rows, vocab), sliced to the base vocabulary; rows are
            in the order of ``active_rows``.
        """
        state = self.states[participant]
        output = state.member_output(self.member_index[participant])
        output = output[:, : self.generator.vocab_size]
        return output.to(self.states[self.generator.base].device)

    def tracked_values(self, participant: Participant, track: str) -> TrackedValues:
        """Return the running values of a participant's tracked quantity."""
        return self.tracked[participant][track]

    def decode(self, max_steps: int | None = None) -> None:
        """Add up to ``max_steps`` tokens to every active row (all, when None)."""
        limit = self.max_new_tokens if max_steps is None else max_steps
        for _ in range(limit):
            if self.active_rows.numel() == 0:
                return
            self._step()

    def score(self) -> torch.Tensor:
        """Bring chunk scores up to date and return each row's weighted total.

        Returns:
            float64 tensor of shape (rows,): the sum of coefficient × score.
        """
        stale = torch.nonzero(~self.scored).squeeze(-1)
        if stale.numel() and self.generator.scorers:
            for updater in self.updaters.values():
                updater.update()
            for i, running in enumerate(self.generator.scorers):
                values = running.scorer.score(self, stale)
                self.scores[i, stale] = _checked_scores(values, stale, running.name)
        self.scored[stale] = True
        self._drop_finished_from_chunk_participants()
        return self.total_scores()

    def total_scores(self) -> torch.Tensor:
        """Return coefficient × score summed over scorers, shape (rows,)."""
        coefficients = torch.tensor(
            [running.coefficient for running in self.generator.scorers],
            dtype=torch.float64,
        )
        return (coefficients[:, None] * self.scores).sum(0)

    def select(self, index: torch.Tensor) -> None:
        """Make row ``j`` a copy of row ``index[j]``; rows stay within their prompt.

        Raises:
            SearchError: ``index`` has the wrong shape or crosses prompts.
        """
        index = index.to(torch.long).cpu()
        self._check_selection(index)
        self.tokens = self.tokens[index]
        self.lengths = self.lengths[index]
        self.max_lengths = self.max_lengths[index]
        self.reasons = self.reasons[index]
        self.scores = self.scores[:, index]
        self.scored = self.scored[index]
        for values in self.tracked.values():
            for tracked in values.values():
                tracked.select(index)
        for state in self._unique_states():
            self._select_state(state, index)
        for updater in self.updaters.values():
            updater.select(index)
        for running in self.generator.scorers:
            running.scorer.select(index)

    def results(self, chosen: torch.Tensor) -> list[GenerationResult]:
        """Return the result of each prompt from its chosen row, shape (prompts,)."""
        names = [running.name for running in self.generator.scorers]
        totals = self.total_scores()
        results = []
        for prompt_index, row in enumerate(chosen.tolist()):
            reason = FinishReason(int(self.reasons[row]))
            ids = self.tokens[row, : self.lengths[row]]
            results.append(
                GenerationResult(
                    prompt=self.prompts[prompt_index],
                    text=self.stop_checker.text(ids, reason),
                    token_ids=ids.tolist(),
                    finish_reason=reason.label or "length",
                    scores={n: float(self.scores[i, row]) for i, n in enumerate(names)},
                    score=float(totals[row]) if names else None,
                )
            )
        return results

    def output_after(
        self, participant: Participant, rows: torch.Tensor, suffix_ids: list[int]
    ) -> torch.Tensor:
        """Return a chunk-level participant's output after each row's response.

        The participant reads the prompt in its template, the response (base
        ids, or the response text in its own tokens) and then ``suffix_ids``.
        Its cache is left as it was.

        Args:
            participant: a chunk-level participant of a scorer.
            rows: global rows to read, shape (n,); they must be unscored or
                still decoding.
            suffix_ids: token ids in the participant's vocabulary.

        Returns:
            output of shape (n, participant vocabulary).
        """
        if participant.level != "chunk":
            raise SearchError(
                f"output_after() needs a chunk-level participant, and "
                f"{participant.label!r} runs at the token level; request it with "
                "level='chunk' and a tag of its own"
            )
        return self.updaters[participant].output_after(rows, suffix_ids)

    def response_text(self, row: int) -> str:
        """Return the current response text of a row, as results render it."""
        ids = self.tokens[row, : self.lengths[row]]
        return self.stop_checker.text(ids, FinishReason(int(self.reasons[row])))

    def _build_states(
        self,
    ) -> tuple[dict[Participant, ParticipantState], dict[Participant, int]]:
        """Create the participants' states; token-level ones of a model share one.

        Sharing a state pads every member's prompts to the longest of them, so
        members whose prompts are much shorter get states of their own. The
        reference path gives every token-level participant its own state and
        chunk-level participants none.
        """
        groups: list[list[Participant]] = []
        by_model: dict[int, list[Participant]] = {}
        for participant in self.generator.participants:
            if participant.level == "chunk":
                if not self.reference:
                    groups.append([participant])
            elif self.reference:
                groups.append([participant])
            else:
                by_model.setdefault(id(participant.model), []).append(participant)
        for members in by_model.values():
            groups.extend(self._group_by_prompt_width(members))
        states, member_index = {}, {}
        for members in groups:
            state = ParticipantState(members)
            for index, member in enumerate(members):
                states[member] = state
                member_index[member] = index
        return states, member_index

    def _group_by_prompt_width(
        self, members: list[Participant]
    ) -> list[list[Participant]]:
        """Group members whose longest prompts are of similar length."""
        widths = {m: max(len(ids) for ids in self.prompt_ids[m]) for m in members}
        groups: list[list[Participant]] = []
        for member in sorted(members, key=lambda m: -widths[m]):
            widest = widths[groups[-1][0]] if groups else 0
            similar = (
                widths[member] >= SHARED_WIDTH_RATIO * widest
                or widest - widths[member] <= SHARED_WIDTH_SLACK
            )
            if groups and similar:
                groups[-1].append(member)
            else:
                groups.append([member])
        # Keep the participants' order inside each group for stable outputs.
        order = {m: i for i, m in enumerate(members)}
        return [sorted(group, key=order.__getitem__) for group in groups]

    def _build_updaters(self) -> dict[Participant, ChunkUpdater]:
        updaters: dict[Participant, ChunkUpdater] = {}
        for participant in self.generator.participants:
            if self.reference and (participant.level == "chunk" or participant.tracks):
                # The reference path recomputes every chunk score from scratch,
                # even values that the token level tracks as it decodes.
                updaters[participant] = ReferenceUpdater(self, participant)
            elif participant.level != "chunk":
                continue
            elif participant.shares_base_vocabulary:
                updaters[participant] = BaseIdsUpdater(self, participant)
            else:
                updaters[participant] = TextUpdater(self, participant)
        return updaters

    def _unique_states(self) -> list[ParticipantState]:
        return list(dict.fromkeys(self.states.values()))

    def _prefill(self) -> None:
        """Prefill each prompt once per participant, then copy it to its rows.

        The reference path prefills every row separately instead.
        """
        rows = torch.arange(self.num_rows)
        expand = torch.arange(self.num_prompts).repeat_interleave(self.rows_per_prompt)
        budgets = torch.full((self.num_prompts,), self.max_new_tokens)
        for state in self._unique_states():
            ids = [self.prompt_ids[member] for member in state.members]
            if self.reference:
                state.prefill([[m[i] for i in expand.tolist()] for m in ids], rows)
            else:
                state.prefill(ids, torch.arange(self.num_prompts))
                state.select(expand, rows)
            for member, member_ids in zip(state.members, ids, strict=True):
                if member.window is not None and member.shares_base_vocabulary:
                    room = torch.tensor([member.window - len(i) for i in member_ids])
                    budgets = torch.minimum(budgets, room)
        self.max_lengths = budgets.repeat_interleave(self.rows_per_prompt)

    def _fitted_prompt(self, participant: Participant, index: int) -> list[int]:
        """Return a prompt's ids, cut from the left to leave room for a token.

        A leading BOS token is kept. Every row of the prompt then ends when it
        reaches the participant's context window (finish reason ``length``).
        """
        ids = participant.encode_prompt(self.prompts[index])
        window = participant.window
        if window is None or len(ids) < window:
            return ids
        keep_bos = ids[0] == participant.tokenizer.bos_token_id and window > 2
        head = ids[:1] if keep_bos else []
        kept = head + ids[len(ids) - (window - 1 - len(head)) :]
        logger.warning(
            "prompt %d has %d tokens for %s, whose context window is %d; "
            "keeping its last %d tokens",
            index,
            len(ids),
            participant.label,
            window,
            len(kept),
        )
        return kept

    def _step(self) -> None:
        base_state = self.states[self.generator.base]
        active = base_state.rows
        logits = self.guided_logits()
        new_tokens = self.sampler.sample(
            logits, active, self.tokens[active, : self.steps].to(logits.device)
        )
        self._track_token_level(new_tokens)
        self.tokens[active, self.steps] = new_tokens.cpu()
        self.lengths[active] += 1
        self.scored[active] = False
        self.steps += 1
        self.decoded_tokens += active.numel()

        reasons = self.stop_checker.check(
            self.tokens[active],
            self.lengths[active],
            new_tokens,
            self.max_lengths[active],
        )
        self.reasons[active] = reasons
        going_on = torch.nonzero(reasons == FinishReason.NONE).squeeze(-1)
        for state in self._token_level_states():
            if going_on.numel() < active.numel():
                state.select(going_on, active[going_on])
            if going_on.numel():
                state.feed(
                    new_tokens[going_on.to(new_tokens.device)][:, None], _ones(going_on)
                )

    def guided_logits(self) -> torch.Tensor:
        """Return the base logits plus the weighted guide adjustments.

        Returns:
            shape (active rows, vocab), before temperature, top-k and top-p.

        Raises:
            GuidanceError: a guide returned NaN, +inf or the wrong shape, or
                the weighted sum overflowed.
        """
        logits = self.token_output(self.generator.base)
        if not any(running.weight != 0.0 for running in self.generator.guides):
            return logits.clone()
        for running in self.generator.guides:
            if running.weight == 0.0:
                continue  # a zero weight turns the guide off, -inf bans included
            adjustment = running.guide.adjust(self)
            _check_adjustment(adjustment, logits.shape, running.name)
            adjusted = adjustment.to(logits.device, logits.dtype)
            logits = logits + running.weight * adjusted
            if _has_nan_or_inf(logits):
                raise GuidanceError(
                    f"adding token guide {running.name!r} with weight "
                    f"{running.weight} made the logits NaN or +inf; lower the weight"
                )
        return logits

    def _track_token_level(self, new_tokens: torch.Tensor) -> None:
        active = self.active_rows
        ones = torch.ones(active.numel(), dtype=torch.long)
        for participant, state in self.states.items():
            if participant.level != "token":
                continue
            output = state.member_output(self.member_index[participant])
            for track in participant.tracks:
                values = token_values(output, new_tokens, track).cpu()
                self.tracked[participant][track].add(
                    active, FedValues(values, values, ones)
                )

    def _token_level_states(self) -> list[ParticipantState]:
        return [s for s in self._unique_states() if s.participant.level == "token"]

    def _chunk_level_states(self) -> list[ParticipantState]:
        return [s for s in self._unique_states() if s.participant.level == "chunk"]

    def unfed_tokens(
        self, rows: torch.Tensor, fed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return each row's response tokens from position ``fed`` on.

        Returns:
            token ids right padded with 0, shape (rows, width), and their
            number per row, shape (rows,).
        """
        lengths = self.lengths[rows] - fed
        width = int(lengths.max()) if lengths.numel() else 0
        offsets = fed[:, None] + torch.arange(width)[None, :]
        valid = torch.arange(width)[None, :] < lengths[:, None]
        gathered = self.tokens[
            rows[:, None], offsets.clamp(max=self.max_new_tokens - 1)
        ]
        return torch.where(valid, gathered, 0), lengths

    def _drop_finished_from_chunk_participants(self) -> None:
        for state in self._chunk_level_states():
            going_on = torch.nonzero(~self.finished[state.rows]).squeeze(-1)
            if going_on.numel() < state.rows.numel():
                state.select(going_on, state.rows[going_on])

    def _select_state(self, state: ParticipantState, index: torch.Tensor) -> None:
        lookup = torch.full((self.num_rows,), -1, dtype=torch.long)
        lookup[state.rows] = torch.arange(state.rows.numel())
        source = lookup[index]
        needed = ~self.finished
        if state.participant.level == "chunk":
            # A finished row whose score is stale still needs its chunk state.
            needed = needed | ~self.scored
        keep = (source >= 0) & needed
        rows = torch.nonzero(keep).squeeze(-1)
        state.select(source[rows], rows)

    def _check_selection(self, index: torch.Tensor) -> None:
        if index.shape != (self.num_rows,):
            raise SearchError(
                f"select() got an index of shape {tuple(index.shape)}; pass one "
                f"source row per row, shape ({self.num_rows},)"
            )
        prompts = self.prompt_of_rows()
        if (index < 0).any() or (index >= self.num_rows).any():
            raise SearchError(f"select() got row indices outside [0, {self.num_rows})")
        if (prompts[index] != prompts).any():
            raise SearchError(
                "select() moved a row to another prompt's block; keep row j's "
                "source within rows of the same prompt"
            )


def _has_nan_or_inf(values: torch.Tensor) -> bool:
    """Return whether ``values`` contain NaN or +inf; -inf is allowed.

    One reduction decides: the maximum is NaN or +inf exactly in those cases.
    """
    maximum = values.max()
    return bool(torch.isnan(maximum) or maximum == float("inf"))


def _check_adjustment(adjustment: torch.Tensor, shape: torch.Size, name: str) -> None:
    if adjustment.shape != shape:
        raise GuidanceError(
            f"token guide {name!r} returned shape {tuple(adjustment.shape)}; it "
            f"must return one adjustment per active row, shape {tuple(shape)}"
        )
    if _has_nan_or_inf(adjustment):
        raise GuidanceError(
            f"token guide {name!r} returned NaN or +inf logits; a guide may "
            "return -inf to ban tokens, but no NaN or +inf"
        )


def _checked_scores(
    values: torch.Tensor, rows: torch.Tensor, name: str
) -> torch.Tensor:
    values = torch.as_tensor(values).detach().to("cpu", torch.float64)
    if values.shape != rows.shape:
        raise GuidanceError(
            f"chunk scorer {name!r} returned shape {tuple(values.shape)}; it must "
            f"return one score per requested row, shape {tuple(rows.shape)}"
        )
    if not torch.isfinite(values).all():
        raise GuidanceError(
            f"chunk scorer {name!r} returned NaN or infinite scores; scores must "
            "be finite to rank rows"
        )
    return values


def _ones(rows: torch.Tensor) -> torch.Tensor:
    return torch.ones(rows.numel(), dtype=torch.long)
