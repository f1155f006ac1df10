"""Hook specifications of the ivg plugin system.

Every hook receives a ``register`` callback and returns nothing. A plugin calls
``register`` once per thing it provides; the registry rejects a duplicate kind
and names the plugin that tried to register it. None of the hooks is
``firstresult``: every implementation is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "ivg"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def ivg_register_token_guides(register: Callable[[type[Any]], None]) -> None:
    """Register token guide spec classes.

    Args:
        register: called with a subclass of ``ivg_core.TokenGuideSpec``; its
            ``kind`` field default is the kind that specs use to select it.
    """


@hookspec
def ivg_register_chunk_scorers(register: Callable[[type[Any]], None]) -> None:
    """Register chunk scorer spec classes.

    Args:
        register: called with a subclass of ``ivg_core.ChunkScorerSpec``.
    """


@hookspec
def ivg_register_search_strategies(register: Callable[[type[Any]], None]) -> None:
    """Register search strategy spec classes.

    Args:
        register: called with a subclass of ``ivg_core.SearchSpec``.
    """


@hookspec
def ivg_register_model_sources(register: Callable[[str, Any], None]) -> None:
    """Register model sources, which turn a model reference into loadable files.

    Args:
        register: called as ``register(kind, source)`` with the value of
            ``ModelRef.source`` that selects it and an ``ivg_core.ModelSource``.
    """


@hookspec
def ivg_register_tasks(register: Callable[[str, Any], None]) -> None:
    """Register tasks: prompt data, templates, presets and golden evaluation.

    Args:
        register: called as ``register(name, task)`` with the name used on the
            command line (``ivg run NAME``) and the task object.
    """


@hookspec
def ivg_register_evaluators(register: Callable[[type[Any]], None]) -> None:
    """Register golden evaluator spec classes, which score finished responses.

    Args:
        register: called with a subclass of ``ivg_core.EvaluatorSpec``.
    """
