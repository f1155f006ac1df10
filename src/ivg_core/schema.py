"""JSON Schema of guidance specs, with the kinds that plugins registered."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import ConfigDict, Field, create_model

from .registry import Registry
from .specs import GuidanceSpec, ModelRef, SamplingSpec

__all__ = ["spec_json_schema"]


def spec_json_schema(registry: Registry) -> dict[str, Any]:
    """Return the JSON Schema of a guidance spec for the registered kinds.

    Each list of plugin specs accepts exactly the registered classes of its
    group, told apart by ``kind``; ``source`` lists the registered sources.
    """
    fields = GuidanceSpec.model_fields
    model = create_model(
        "GuidanceSpec",
        __config__=ConfigDict(extra="forbid"),
        __doc__=GuidanceSpec.__doc__,
        base=(ModelRef, Field(description=fields["base"].description)),
        sampling=(
            SamplingSpec,
            Field(
                default_factory=SamplingSpec,
                description=fields["sampling"].description,
            ),
        ),
        token_guides=(
            list[_kinds(registry.token_guides)],
            Field(default_factory=list, description=fields["token_guides"].description),
        ),
        chunk_scorers=(
            list[_kinds(registry.chunk_scorers)],
            Field(
                default_factory=list, description=fields["chunk_scorers"].description
            ),
        ),
        search=(
            _kinds(registry.search_strategies),
            Field(
                default={"kind": "sampling"}, description=fields["search"].description
            ),
        ),
    )
    schema = model.model_json_schema()
    source = schema["$defs"]["ModelRef"]["properties"]["source"]
    source["enum"] = sorted(registry.model_sources)
    return schema


def _kinds(classes: dict[str, type]) -> Any:
    """Return a union of spec classes, told apart by ``kind`` when possible."""
    members = tuple(classes.values())
    if not members:
        return dict
    if len(members) == 1:
        return members[0]
    return Annotated[Union[members], Field(discriminator="kind")]  # noqa: UP007
