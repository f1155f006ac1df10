"""Exception classes of ivg; every message names the value at fault and the fix."""

from __future__ import annotations

__all__ = [
    "DataError",
    "GuidanceError",
    "IvgError",
    "ModelLoadError",
    "PluginError",
    "SearchError",
    "SpecError",
    "VocabularyMismatchError",
]


class IvgError(Exception):
    """Base class of every error that ivg raises on purpose."""


class SpecError(IvgError, ValueError):
    """A guidance spec, or a value derived from it, is invalid."""


class PluginError(IvgError):
    """A plugin failed to load, registered something invalid or failed in a hook."""


class VocabularyMismatchError(SpecError):
    """Two token-level participants map token strings to different ids."""


class ModelLoadError(IvgError):
    """A model or tokenizer could not be found or loaded."""


class GuidanceError(IvgError):
    """A guide or scorer produced values that cannot be sampled or ranked."""


class SearchError(IvgError):
    """A search strategy drove the decoder in a way that breaks its invariants."""


class DataError(IvgError, ValueError):
    """A data file or dataset is missing, unreadable or lacks a needed column."""
