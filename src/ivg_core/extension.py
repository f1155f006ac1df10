"""Extension points: the runtime classes that plugins implement."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from .decoder import Decoder
    from .models import ModelStore
    from .participant import Participant
    from .specs import ModelRef

__all__ = [
    "BuildContext",
    "ChunkScorer",
    "Evaluator",
    "ModelSource",
    "ParticipantRequest",
    "ResolvedModel",
    "SearchStrategy",
    "Task",
    "TaskPrompt",
    "TokenGuide",
]

Level = Literal["token", "chunk"]
Head = Literal["causal_lm", "token_rm", "sequence_classifier", "sequence_score"]
Tracked = Literal["logprob", "output"]


@dataclass(frozen=True)
class ParticipantRequest:
    """A model that a guide or scorer runs inside the decoder.

    Attributes:
        model: the model and its prompt template.
        level: ``"token"`` runs the model at every step on base token ids and
            requires the base vocabulary; ``"chunk"`` runs it at chunk
            boundaries on the response text in its own tokenization (base ids
            are reused when the vocabularies match).
        head: ``"causal_lm"`` for next-token logits, ``"token_rm"`` for a
            token reward model's Q values.
        track: per-token values to record for every response token:
            ``"logprob"`` (log-softmax of the output at the token) and
            ``"output"`` (the raw output at the token, e.g. Q(s, a)).
        tag: requests for the same model, template and head share one
            participant only when their tags are equal. A scorer that reads
            ``Decoder.output_after`` uses a tag of its own, so that its
            participant keeps every row's cache until the row is scored.
    """

    model: ModelRef
    level: Level = "token"
    head: Head = "causal_lm"
    track: tuple[Tracked, ...] = ()
    tag: str = ""

    @property
    def key(self) -> tuple[ModelRef, str, str]:
        """Return what identifies the participant that serves this request."""
        return (self.model, self.head, self.tag)


class BuildContext:
    """What a spec's ``build`` receives: loaded participants and the model store."""

    def __init__(self, participants: dict, base: Participant, store: ModelStore):
        self._participants = participants
        self.base = base
        self.store = store

    def participant(self, request: ParticipantRequest) -> Participant:
        """Return the live participant that serves a request from ``participants()``.

        Raises:
            KeyError: the request was not declared by the spec's ``participants()``.
        """
        key = request.key
        if key not in self._participants:
            raise KeyError(
                f"participant {request.model.name_or_path!r} ({request.head}) was "
                "not declared; return it from the spec's participants() method"
            )
        return self._participants[key]


class TokenGuide(ABC):
    """Adds an adjustment to the base logits at every decoding step."""

    @abstractmethod
    def adjust(self, decoder: Decoder) -> torch.Tensor:
        """Return the unweighted logit adjustment, shape (active rows, vocab).

        ``decoder.token_output(participant)`` gives a token-level participant's
        output for the next token, sliced to the base vocabulary, with rows in
        the order of ``decoder.active_rows``. The decoder multiplies the result
        by the guide's ``weight``. Return ``-inf`` to ban a token; NaN and
        ``+inf`` are rejected.
        """


class ChunkScorer(ABC):
    """Scores partial responses at chunk boundaries and finished responses."""

    @abstractmethod
    def score(self, decoder: Decoder, rows: torch.Tensor) -> torch.Tensor:
        """Return the unweighted score of each requested row.

        Called at each chunk boundary and at the end, after the decoder has
        brought the scorer's chunk-level participants up to date;
        ``decoder.tracked_values(participant, track)`` gives their per-row
        running values. The decoder multiplies the result by the scorer's
        ``coefficient``.

        Args:
            decoder: the decoder, for tracked values and response text.
            rows: global row indices to score, shape (n,).

        Returns:
            scores of shape (n,).
        """

    def select(self, index: torch.Tensor) -> None:  # noqa: B027
        """Reorder per-row state kept by the scorer: row j becomes row index[j]."""


class SearchStrategy(ABC):
    """Drives a decoder from the prompt to finished responses."""

    @abstractmethod
    def run(self, decoder: Decoder) -> torch.Tensor:
        """Decode until every row has finished; return the chosen row per prompt.

        Returns:
            Row indices of shape (prompts,), one row of each prompt's block.
        """


class Evaluator(ABC):
    """Scores finished responses with a golden reward after decoding."""

    @abstractmethod
    def evaluate(
        self,
        prompts: list[str],
        responses: list[str],
        references: list[str | None] | None = None,
    ) -> list[float]:
        """Return one score per (prompt, response) pair.

        Args:
            prompts: prompt texts, before any template.
            responses: response texts.
            references: a reference response per prompt (such as a human
                summary), for evaluators that compare against one; None, or
                None entries, where the task has none.
        """


@dataclass(frozen=True)
class TaskPrompt:
    """One prompt of a task, with the id that seeds its random generator.

    Attributes:
        id: a stable id, such as the row index in the data source; the same id
            gives the same draws whatever other prompts run with it.
        text: the prompt text, inserted into each model's template.
        reference: a reference response, such as a human summary, for
            evaluators that compare against one.
    """

    id: int | str
    text: str
    reference: str | None = None


class Task(ABC):
    """A task: prompts, a guidance spec per preset and method, a golden evaluator."""

    #: Preset used when the user names none.
    default_preset: str = ""
    #: One line shown by ``ivg run --help`` and ``ivg plugins``.
    description: str = ""

    @abstractmethod
    def presets(self) -> list[str]:
        """Return the names of the presets."""

    @abstractmethod
    def methods(self, preset: str) -> list[str]:
        """Return the names of a preset's methods, the unguided baseline first."""

    @abstractmethod
    def spec(self, preset: str, method: str) -> dict:
        """Return the guidance spec data of one method in one preset."""

    @abstractmethod
    def evaluator(self, preset: str) -> dict:
        """Return the golden evaluator spec data of a preset."""

    @abstractmethod
    def load_prompts(self, preset: str, source: str | None) -> list[TaskPrompt]:
        """Return the prompts of a source, or of the preset's default source."""

    def default_batch_size(self, preset: str) -> int:
        """Return how many prompts to decode together unless the user says."""
        return 16

    def write_outputs(
        self,
        out_dir: Path,
        preset: str,
        method: str,
        prompts: list[TaskPrompt],
        responses: list[str],
    ) -> list[Path]:
        """Write task-specific files of one method's responses; return their paths.

        The default writes nothing; a task overrides it for formats that other
        tools read, such as AlpacaEval's model outputs.
        """
        return []


@dataclass(frozen=True)
class ResolvedModel:
    """Arguments for ``from_pretrained`` that a model source produced.

    Attributes:
        path: Hub id or local folder.
        revision: Hub revision, or None.
        gguf_file: name of a GGUF file inside ``path``, when loading from GGUF.
    """

    path: str
    revision: str | None = None
    gguf_file: str | None = None
    extra: dict = field(default_factory=dict)


class ModelSource(ABC):
    """Turns a ``ModelRef`` into something ``from_pretrained`` can load."""

    def check(self, ref: ModelRef) -> None:  # noqa: B027
        """Raise ValueError, naming the value and the fix, if ``ref`` is invalid.

        Called while a spec is validated, so it must not load anything heavy.
        """

    @abstractmethod
    def resolve(self, ref: ModelRef) -> ResolvedModel:
        """Return the location of the model's files, converting them if needed."""

    def describe(self) -> str:
        """Return a one-line description for ``ivg plugins``."""
        return type(self).__doc__.splitlines()[0] if type(self).__doc__ else ""
