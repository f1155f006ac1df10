"""ivg core: specs, plugin registry, the batched guided decoder and its API."""

from .decoder import Decoder, TrackedValues
from .errors import (
    DataError,
    GuidanceError,
    IvgError,
    ModelLoadError,
    PluginError,
    SearchError,
    SpecError,
    VocabularyMismatchError,
)
from .extension import (
    BuildContext,
    ChunkScorer,
    Evaluator,
    ModelSource,
    ParticipantRequest,
    ResolvedModel,
    SearchStrategy,
    Task,
    TaskPrompt,
    TokenGuide,
)
from .generator import GuidedGenerator, generate
from .hookspecs import hookimpl, hookspec
from .participant import Participant
from .registry import Registry, create_registry, current_registry, default_registry
from .results import GenerationResult
from .specs import (
    ChunkScorerSpec,
    EvaluatorSpec,
    GuidanceSpec,
    ModelRef,
    PluginSpec,
    SamplingSpec,
    SearchSpec,
    TokenGuideSpec,
    load_spec,
)

__all__ = [
    "DataError",
    "BuildContext",
    "ChunkScorer",
    "ChunkScorerSpec",
    "Decoder",
    "Evaluator",
    "EvaluatorSpec",
    "GenerationResult",
    "GuidanceError",
    "GuidanceSpec",
    "GuidedGenerator",
    "IvgError",
    "ModelLoadError",
    "ModelRef",
    "ModelSource",
    "Participant",
    "ParticipantRequest",
    "PluginError",
    "PluginSpec",
    "Registry",
    "ResolvedModel",
    "SamplingSpec",
    "SearchError",
    "SearchSpec",
    "SearchStrategy",
    "SpecError",
    "Task",
    "TaskPrompt",
    "TokenGuide",
    "TokenGuideSpec",
    "TrackedValues",
    "VocabularyMismatchError",
    "create_registry",
    "current_registry",
    "default_registry",
    "generate",
    "hookimpl",
    "hookspec",
    "load_spec",
]
