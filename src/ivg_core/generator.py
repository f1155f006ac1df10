"""Guided generation: load a spec's models once, then decode batches of prompts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import SpecError
from .extension import BuildContext, ChunkScorer, ParticipantRequest, TokenGuide
from .models import ModelStore
from .participant import Participant
from .registry import Registry, current_registry
from .results import GenerationResult
from .sampling import derive_seed
from .specs import GuidanceSpec, ModelRef, load_spec
from .vocab import check_shared_vocabulary, output_size, same_vocabulary

__all__ = ["GuidedGenerator", "generate"]

logger = logging.getLogger(__name__)


@dataclass
class RunningGuide:
    """A built token guide with its weight and a label for messages."""

    guide: TokenGuide
    weight: float
    name: str


@dataclass
class RunningScorer:
    """A built chunk scorer with its coefficient and its name in results."""

    scorer: ChunkScorer
    coefficient: float
    name: str


class GuidedGenerator:
    """A guidance spec with its models loaded, ready to decode prompts.

    Validation, the vocabulary check of token-level models included, happens
    before any model weights are loaded. ``decoded_tokens`` counts the tokens
    sampled over all rows, beams and candidates included.

    Example:
        >>> generator = GuidedGenerator({"base": {"name_or_path": "gpt2"}})
        >>> [result.text for result in generator.generate(["The movie was"])]
    """

    def __init__(
        self,
        spec: GuidanceSpec | dict[str, Any] | str | Path,
        registry: Registry | None = None,
        store: ModelStore | None = None,
    ) -> None:
        """Validate a spec, check vocabularies, then load its models.

        Args:
            spec: the spec, or its data as a dict, a JSON string or the path of
                a TOML, YAML, JSON or Python spec file.
            registry: the plugin registry; default: the current registry.
            store: a model store to share loaded models with other generators.
        """
        self.registry = registry or current_registry()
        if not isinstance(spec, GuidanceSpec):
            spec = load_spec(spec, self.registry)
        self.spec = spec
        self.store = store or ModelStore(self.registry)
        self.decoded_tokens = 0
        requests = _merge_requests(self._requests())
        self._check_vocabularies(requests)
        self.participants = [self._load_participant(r) for r in requests.values()]
        self.base = self.participants[0]
        self.vocab_size = min(len(self.base.tokenizer), self.base.output_size)
        self._check_output_sizes()
        self.eos_token_ids = (
            set() if spec.sampling.ignore_eos else _eos_token_ids(self.base)
        )
        context = BuildContext(
            {p.key: p for p in self.participants}, self.base, self.store
        )
        self.guides = [
            RunningGuide(spec.build(context), spec.weight, spec.kind)
            for spec in self.spec.token_guides
        ]
        self.scorers = [
            RunningScorer(spec.build(context), spec.coefficient, name)
            for spec, name in zip(
                self.spec.chunk_scorers, self.spec.scorer_names(), strict=True
            )
        ]
        self.strategy = self.spec.search.build()

    def generate(
        self,
        prompts: Sequence[str],
        prompt_ids: Sequence[int | str] | None = None,
        batch_size: int | None = None,
        reference: bool = False,
    ) -> list[GenerationResult]:
        """Decode every prompt and return one result per prompt, in order.

        Args:
            prompts: prompt texts, inserted into each participant's template.
            prompt_ids: one id per prompt for seeding its random generator;
                default: the prompt's position in ``prompts``. The same id and
                run seed give the same draws in any batch.
            batch_size: prompts per batch; default: all prompts in one batch.
            reference: decode on the slow reference path instead: one prompt
                at a time, every row prefilled separately, and chunk scores
                recomputed from the whole response without a cache. It returns
                the same tokens and is kept as the oracle of the fast path.
        """
        prompts, ids = _checked_prompts(prompts, prompt_ids)
        if batch_size is not None and (
            not isinstance(batch_size, int)
            or isinstance(batch_size, bool)
            or batch_size < 1
        ):
            raise ValueError(
                f"batch_size must be a positive integer, got {batch_size!r}"
            )
        size = 1 if reference else batch_size or max(len(prompts), 1)
        results: list[GenerationResult] = []
        for start in range(0, len(prompts), size):
            batch = slice(start, start + size)
            results.extend(self._generate_batch(prompts[batch], ids[batch], reference))
        return results

    def _generate_batch(
        self, prompts: list[str], ids: list, reference: bool
    ) -> list[GenerationResult]:
        from .decoder import Decoder

        seeds = [derive_seed(self.spec.sampling.seed, prompt_id) for prompt_id in ids]
        with torch.inference_mode():
            decoder = Decoder(self, prompts, seeds, reference=reference)
            chosen = self.strategy.run(decoder)
            self.decoded_tokens += decoder.decoded_tokens
            return decoder.results(chosen)

    def _requests(self) -> list[ParticipantRequest]:
        requests = [ParticipantRequest(self.spec.base, level="token")]
        for component in [*self.spec.token_guides, *self.spec.chunk_scorers]:
            requests.extend(component.participants())
        return requests

    def _check_vocabularies(self, requests: dict[tuple, ParticipantRequest]) -> None:
        base = self.spec.base
        base_tokenizer = self.store.tokenizer(base)
        for request in requests.values():
            tokenizer = self.store.tokenizer(request.model)
            if request.model.chat and not tokenizer.chat_template:
                raise SpecError(
                    f"model {request.model.name_or_path!r} has chat set, but its "
                    "tokenizer has no chat template; write the chat format into "
                    "template and set chat to false"
                )
            if request.level == "token":
                check_shared_vocabulary(
                    base.name_or_path,
                    base_tokenizer,
                    request.model.name_or_path,
                    tokenizer,
                )

    def _load_participant(self, request: ParticipantRequest) -> Participant:
        tokenizer = self.store.tokenizer(request.model)
        model = self.store.model(request.model, request.head)
        return Participant(
            ref=request.model,
            head=request.head,
            tag=request.tag,
            level=request.level,
            tracks=frozenset(request.track),
            model=model,
            tokenizer=tokenizer,
            shares_base_vocabulary=same_vocabulary(
                self.store.tokenizer(self.spec.base), tokenizer
            ),
            output_size=output_size(model),
        )

    def _check_output_sizes(self) -> None:
        for participant in self.participants:
            reads_base_ids = participant.level == "token" or (
                participant.shares_base_vocabulary and participant.tracks
            )
            if reads_base_ids and participant.output_size < self.vocab_size:
                raise SpecError(
                    f"model {participant.label!r} outputs {participant.output_size} "
                    f"values per token but the base vocabulary has {self.vocab_size} "
                    "tokens, so base token ids would fall outside its output; use "
                    "a model with an output for every base token"
                )


def generate(
    spec: GuidanceSpec | dict[str, Any] | str | Path,
    prompts: Sequence[str],
    prompt_ids: Sequence[int | str] | None = None,
    batch_size: int | None = None,
    registry: Registry | None = None,
) -> list[GenerationResult]:
    """Load a spec's models and decode prompts; see ``GuidedGenerator.generate``."""
    generator = GuidedGenerator(spec, registry=registry)
    return generator.generate(prompts, prompt_ids=prompt_ids, batch_size=batch_size)


def _checked_prompts(
    prompts: Sequence[str], prompt_ids: Sequence[int | str] | None
) -> tuple[list[str], list[int | str]]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string; wrap it")
    prompts = list(prompts)
    wrong = [p for p in prompts if not isinstance(p, str)]
    if wrong:
        raise TypeError(f"every prompt must be a string, got {wrong[0]!r}")
    ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    if len(ids) != len(prompts):
        raise ValueError(
            f"got {len(prompts)} prompts and {len(ids)} prompt_ids; pass one id "
            "per prompt"
        )
    bad = [i for i in ids if not isinstance(i, int | str) or isinstance(i, bool)]
    if bad:
        raise TypeError(f"prompt ids must be integers or strings, got {bad[0]!r}")
    return prompts, ids


def _merge_requests(
    requests: list[ParticipantRequest],
) -> dict[tuple[ModelRef, str, str], ParticipantRequest]:
    """Merge requests for the same model, template and head into one participant.

    A participant needed at the token level anywhere runs at the token level,
    and it records the union of the tracked values that its users need.
    """
    merged: dict[tuple[ModelRef, str, str], ParticipantRequest] = {}
    for request in requests:
        key = request.key
        if key not in merged:
            merged[key] = request
            continue
        previous = merged[key]
        level = "token" if "token" in (previous.level, request.level) else "chunk"
        track = tuple(sorted(set(previous.track) | set(request.track)))
        merged[key] = ParticipantRequest(
            request.model, level, request.head, track, request.tag
        )
    return merged


def _eos_token_ids(base: Participant) -> set[int]:
    ids: set[int] = set()
    config = getattr(base.model, "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured is not None:
        ids.update(int(i) for i in configured)
    if base.tokenizer.eos_token_id is not None:
        ids.add(base.tokenizer.eos_token_id)
    return ids
