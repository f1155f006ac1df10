"""Declarative guidance specs: models, sampling, value sources and search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from .errors import SpecError

if TYPE_CHECKING:
    from .extension import (
        BuildContext,
        ChunkScorer,
        Evaluator,
        ParticipantRequest,
        SearchStrategy,
        TokenGuide,
    )
    from .registry import Registry

__all__ = [
    "ChunkScorerSpec",
    "EvaluatorSpec",
    "GuidanceSpec",
    "ModelRef",
    "PluginSpec",
    "SamplingSpec",
    "SearchSpec",
    "SpecModel",
    "TokenGuideSpec",
    "format_validation_error",
    "load_spec",
]

PROMPT_FIELD = "{prompt}"
GROUP_LABELS = {
    "token_guides": "token guide",
    "chunk_scorers": "chunk scorer",
    "search_strategies": "search strategy",
    "evaluators": "evaluator",
}
DTYPES = Literal["auto", "float32", "float64", "float16", "bfloat16"]


class SpecModel(BaseModel):
    """Base of every spec: unknown fields and non-finite floats are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelRef(SpecModel):
    """A model in one role: where its weights come from and how prompts look."""

    name_or_path: str = Field(
        min_length=1,
        description=(
            "Hugging Face Hub id (such as 'openai-community/gpt2') or local "
            "checkpoint folder; for other sources, the name that source resolves."
        ),
    )
    source: str = Field(
        "huggingface",
        description=(
            "Model source that resolves name_or_path: 'huggingface' for Hub ids "
            "and local folders, or a kind registered by a plugin."
        ),
    )
    revision: str | None = Field(
        None,
        description="Branch, tag or commit on the Hub; None means the default branch.",
    )
    dtype: DTYPES = Field(
        "auto",
        description=(
            "Parameter dtype; 'auto' means bfloat16 on CUDA and float32 elsewhere."
        ),
    )
    device: str = Field(
        "auto",
        description=(
            "torch device such as 'cpu', 'cuda' or 'cuda:1'; 'auto' means the "
            "first CUDA device when one is available (each process's own in a "
            "run of several processes), else the CPU."
        ),
    )
    device_map: Literal["auto", "balanced", "balanced_low_0", "sequential"] | None = (
        Field(
            None,
            description=(
                "Spread the model's layers over every visible GPU (and the CPU "
                "when they are full) with accelerate, for models larger than "
                "one GPU; replaces device. None keeps the whole model on device."
            ),
        )
    )
    template: str = Field(
        PROMPT_FIELD,
        description=(
            "Prompt template: '{prompt}' is replaced by the prompt text and every "
            "other character, braces included, is kept as written."
        ),
    )
    chat: bool = Field(
        False,
        description=(
            "Wrap the rendered template in the tokenizer's chat template, as one "
            "user message followed by the assistant's generation prompt."
        ),
    )
    system: str | None = Field(
        None, description="System message before the user message; needs chat."
    )

    @model_validator(mode="after")
    def _check_device_map(self) -> ModelRef:
        if self.device_map is not None and self.device != "auto":
            raise ValueError(
                f"device {self.device!r} and device_map {self.device_map!r} are "
                "both set; device_map places the model itself, so leave device "
                "at 'auto'"
            )
        return self

    @model_validator(mode="after")
    def _check_system(self) -> ModelRef:
        if self.system is not None and not self.chat:
            raise ValueError(
                "system is set but chat is false; set chat to true to send a "
                "system message, or remove system"
            )
        return self

    @field_validator("template")
    @classmethod
    def _check_template(cls, template: str) -> str:
        count = template.count(PROMPT_FIELD)
        if count != 1:
            raise ValueError(
                f"template {template!r} contains '{{prompt}}' {count} times; "
                "write it exactly once where the prompt text goes"
            )
        return template

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:
        if device == "auto":
            return device
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError) as error:
            raise ValueError(
                f"device {device!r} is not a torch device ({error}); use 'auto', "
                "'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from None
        _check_device_available(parsed, device)
        return device

    @field_validator("source")
    @classmethod
    def _check_source(cls, source: str, info: ValidationInfo) -> str:
        registry = _registry_for(info)
        if source not in registry.model_sources:
            raise _unknown_kind("model source", source, registry.model_sources)
        return source

    @model_validator(mode="after")
    def _check_with_source(self, info: ValidationInfo) -> ModelRef:
        _registry_for(info).model_sources[self.source].check(self)
        return self

    def render(self, prompt: str) -> str:
        """Return the template with the prompt text in place of '{prompt}'."""
        return self.template.replace(PROMPT_FIELD, prompt)

    def with_template(self, template: str) -> ModelRef:
        """Return a copy of this reference with another prompt template."""
        return self.model_validate({**self.model_dump(), "template": template})


class SamplingSpec(SpecModel):
    """How each next token is drawn from the guided logits."""

    temperature: float = Field(
        1.0,
        ge=0.0,
        description="Softmax temperature; 0 means greedy decoding (argmax).",
    )
    top_k: int | None = Field(
        None,
        strict=True,
        ge=1,
        description="Keep only the k most likely tokens; None keeps all of them.",
    )
    top_p: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: keep the smallest set of tokens whose "
        "probability sums to at least top_p; 1.0 keeps all of them.",
    )
    max_new_tokens: int = Field(
        50,
        ge=1,
        strict=True,
        description="Maximum number of response tokens per prompt.",
    )
    stop_strings: list[str] = Field(
        default_factory=list,
        description=(
            "A response ends when its text contains one of these strings; the "
            "returned text stops before it."
        ),
    )
    ignore_eos: bool = Field(
        False,
        description=(
            "Keep decoding after EOS until max_new_tokens or a stop string, as "
            "benchmarks do to decode a fixed number of tokens."
        ),
    )
    seed: int = Field(
        0,
        ge=0,
        strict=True,
        description="Run seed; each prompt draws from its own generator seeded "
        "from this seed and the prompt's index.",
    )

    @field_validator("stop_strings")
    @classmethod
    def _check_stop_strings(cls, stop_strings: list[str]) -> list[str]:
        if any(text == "" for text in stop_strings):
            raise ValueError(
                "stop_strings contains an empty string, which would end every "
                "response at once; remove it"
            )
        return stop_strings


class PluginSpec(SpecModel):
    """Base of the spec classes that plugins register under a ``kind``."""

    group: ClassVar[str] = ""
    kind: str = Field(description="Registered kind that selects the plugin class.")

    def participants(self) -> list[ParticipantRequest]:
        """List the models this component runs inside the decoder."""
        return []


class TokenGuideSpec(PluginSpec):
    """A token-level guide: adds a logit adjustment at every decoding step."""

    group: ClassVar[str] = "token_guides"
    weight: float = Field(1.0, description="Multiplier of the guide's adjustment.")

    def build(self, context: BuildContext) -> TokenGuide:
        """Create the runtime guide from loaded participants."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")


class ChunkScorerSpec(PluginSpec):
    """A chunk-level scorer: scores partial responses at chunk boundaries."""

    group: ClassVar[str] = "chunk_scorers"
    coefficient: float = Field(
        1.0, description="Weight of this score in the total that search ranks by."
    )
    name: str | None = Field(
        None, description="Label of the score in results; default: the kind."
    )

    def build(self, context: BuildContext) -> ChunkScorer:
        """Create the runtime scorer from loaded participants."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")


class SearchSpec(PluginSpec):
    """A search strategy: drives the decoder and picks one response per prompt."""

    group: ClassVar[str] = "search_strategies"

    def rows_per_prompt(self) -> int:
        """Return how many decoder rows each prompt needs."""
        return 1

    def needs_scores(self) -> bool:
        """Return whether the strategy ranks rows, so it needs a chunk scorer."""
        return self.rows_per_prompt() > 1

    def build(self) -> SearchStrategy:
        """Create the runtime strategy."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")


class EvaluatorSpec(PluginSpec):
    """A golden evaluator: scores finished responses after decoding."""

    group: ClassVar[str] = "evaluators"

    def build(self, context: BuildContext) -> Evaluator:
        """Create the runtime evaluator."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")


class GuidanceSpec(SpecModel):
    """A whole guided decoding setup: base model, value sources and search."""

    base: ModelRef = Field(description="The frozen model whose logits are guided.")
    sampling: SamplingSpec = Field(
        default_factory=SamplingSpec, description="Sampling and stopping settings."
    )
    token_guides: list[SerializeAsAny[TokenGuideSpec]] = Field(
        default_factory=list,
        description="Token-level guides whose adjustments add to the base logits.",
    )
    chunk_scorers: list[SerializeAsAny[ChunkScorerSpec]] = Field(
        default_factory=list,
        description="Chunk-level scorers; search ranks rows by their weighted sum.",
    )
    search: SerializeAsAny[SearchSpec] = Field(
        default={"kind": "sampling"},
        validate_default=True,
        description="Search strategy; the default 'sampling' draws one response.",
    )

    @field_validator("token_guides", "chunk_scorers", mode="before")
    @classmethod
    def _resolve_list(cls, items: Any, info: ValidationInfo) -> Any:
        if not isinstance(items, list | tuple):
            return items
        base = TokenGuideSpec if info.field_name == "token_guides" else ChunkScorerSpec
        return _resolve_items(list(items), base, info)

    @field_validator("search", mode="before")
    @classmethod
    def _resolve_search(cls, item: Any, info: ValidationInfo) -> Any:
        return _resolve_items([item], SearchSpec, info, indexed=False)[0]

    @model_validator(mode="after")
    def _check_search_has_scores(self) -> GuidanceSpec:
        if self.search.needs_scores() and not self.chunk_scorers:
            raise ValueError(
                f"search {self.search.kind!r} keeps "
                f"{self.search.rows_per_prompt()} rows per prompt and ranks them, "
                "but chunk_scorers is empty; add a chunk scorer or use "
                "search={'kind': 'sampling'}"
            )
        return self

    def scorer_names(self) -> list[str]:
        """Return a unique label for each chunk scorer, in order."""
        names: list[str] = []
        for scorer in self.chunk_scorers:
            label = scorer.name or scorer.kind
            suffix = 2
            while label in names:
                label = f"{scorer.name or scorer.kind}_{suffix}"
                suffix += 1
            names.append(label)
        return names


def load_spec(data: dict[str, Any] | str | Path, registry: Registry | None = None):
    """Validate a spec from a dict, a JSON string or a spec file.

    A string that is blank or starts with ``{`` or ``[`` is JSON text; any
    other string is the path of a TOML, YAML, JSON or Python spec file.

    Raises:
        SpecError: lists every invalid field with its path and value, or says
            why the file could not be read.
    """
    from .spec_files import read_spec_file

    if isinstance(data, str) and data.strip() and data.lstrip()[0] not in "{[":
        data = Path(data)
    if isinstance(data, Path):
        data = read_spec_file(data)
    if isinstance(data, GuidanceSpec):
        data = data.model_dump()
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as error:
            raise SpecError(f"spec is not valid JSON: {error}") from None
    context = {"registry": registry} if registry is not None else None
    try:
        return GuidanceSpec.model_validate(data, context=context)
    except ValidationError as error:
        raise SpecError(format_validation_error(error)) from None


def _check_device_available(parsed: torch.device, device: str) -> None:
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {device!r} needs CUDA, which this torch build or machine "
                "does not have; use 'cpu' or 'auto'"
            )
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"device {device!r} does not exist: this machine has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device {device!r} is not available here; use 'cpu' or 'auto'"
        )
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"device {device!r} is not supported; use 'cpu', 'cuda' or 'mps'"
        )


def format_validation_error(error: ValidationError) -> str:
    """Render a pydantic error as one line per field: path, problem and value."""
    count = error.error_count()
    lines = [f"invalid spec ({count} {'error' if count == 1 else 'errors'}):"]
    for detail in error.errors(include_url=False):
        path = ".".join(str(part) for part in detail["loc"]) or "<spec>"
        value = detail.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        lines.append(f"  {path}: {detail['msg']} (got {shown})")
    return "\n".join(lines)


def _registry_for(info: ValidationInfo | None) -> Registry:
    from .registry import current_registry

    if info is not None and info.context and info.context.get("registry"):
        return info.context["registry"]
    return current_registry()


def _unknown_kind(what: str, kind: object, known: dict[str, Any]):
    allowed = ", ".join(sorted(known)) or "none"
    message = (
        f"unknown {what} kind {kind!r}; registered kinds: {allowed}. Install and "
        "enable the plugin that provides it (see IVG_LOAD_PLUGINS)."
    )
    return PydanticCustomError("unknown_kind", "{message}", {"message": message})


def _resolve_items(
    items: list[Any], base: type[PluginSpec], info: ValidationInfo, indexed=True
) -> list[Any]:
    """Validate each item as the spec class that its ``kind`` selects."""
    registry = _registry_for(info)
    known = registry.group(base.group)
    resolved: list[Any] = []
    errors: list[InitErrorDetails] = []
    for index, item in enumerate(items):
        prefix = (index,) if indexed else ()
        try:
            resolved.append(_resolve_item(item, base, known, info))
        except PydanticCustomError as error:
            errors.append(
                InitErrorDetails(type=error, loc=(*prefix, "kind"), input=item)
            )
        except ValidationError as error:
            errors.extend(_nest_errors(error, prefix))
    if errors:
        raise ValidationError.from_exception_data(base.__name__, errors)
    return resolved


def _resolve_item(item, base, known, info):
    what = GROUP_LABELS[base.group]
    if isinstance(item, base):
        if known.get(item.kind) is not type(item):
            raise _unknown_kind(what, item.kind, known)
        return item
    if not isinstance(item, dict):
        raise PydanticCustomError(
            "invalid_plugin_spec",
            "expected a {what} spec or a dict with a 'kind' field",
            {"what": what},
        )
    kind = item.get("kind")
    if kind not in known:
        raise _unknown_kind(what, kind, known)
    return known[kind].model_validate(item, context=info.context)


def _nest_errors(error: ValidationError, prefix: tuple) -> list[InitErrorDetails]:
    """Re-raise a nested item's errors under the item's position in the list."""
    return [
        InitErrorDetails(
            type=PydanticCustomError(
                detail["type"], "{message}", {"message": detail["msg"]}
            ),
            loc=(*prefix, *detail["loc"]),
            input=detail["input"],
        )
        for detail in error.errors(include_url=False)
    ]
