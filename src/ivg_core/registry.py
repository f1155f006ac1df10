"""Plugin registry: loads plugins through pluggy and indexes what they register."""

from __future__ import annotations

import contextlib
import contextvars
import importlib.metadata
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .extension import ModelSource
from .specs import ChunkScorerSpec, EvaluatorSpec, SearchSpec, TokenGuideSpec

__all__ = [
    "PluginInfo",
    "Registry",
    "create_registry",
    "current_registry",
    "default_registry",
]

logger = logging.getLogger(__name__)

BUILTIN_DISTRIBUTION = "ivg"
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
LOAD_ENV = "IVG_LOAD_PLUGINS"
TRACE_ENV = "IVG_TRACE_PLUGINS"

# group name -> (hook name, spec base class or None for (kind, object) groups)
GROUPS: dict[str, tuple[str, type | None]] = {
    "token_guides": ("ivg_register_token_guides", TokenGuideSpec),
    "chunk_scorers": ("ivg_register_chunk_scorers", ChunkScorerSpec),
    "search_strategies": ("ivg_register_search_strategies", SearchSpec),
    "evaluators": ("ivg_register_evaluators", EvaluatorSpec),
    "model_sources": ("ivg_register_model_sources", None),
    "tasks": ("ivg_register_tasks", None),
}

_ACTIVE: contextvars.ContextVar[Registry | None] = contextvars.ContextVar(
    "ivg_active_registry", default=None
)
_DEFAULT: Registry | None = None


@dataclass
class PluginInfo:
    """A loaded plugin: where it came from and what it registered."""

    name: str
    distribution: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    kinds: dict[str, list[str]] = field(default_factory=dict)

    def label(self) -> str:
        """Return 'name' or 'name (distribution D)' for messages."""
        if self.distribution:
            return f"{self.name!r} (distribution {self.distribution!r})"
        return repr(self.name)


class Registry:
    """Kinds registered by plugins, grouped by extension point."""

    def __init__(self, trace: bool | None = None) -> None:
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self._groups: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
        self._owners: dict[tuple[str, str], PluginInfo] = {}
        self._added_hookspecs: list[object] = []
        if trace if trace is not None else bool(os.environ.get(TRACE_ENV)):
            self._enable_tracing()

    @property
    def token_guides(self) -> dict[str, type[TokenGuideSpec]]:
        return self._groups["token_guides"]

    @property
    def chunk_scorers(self) -> dict[str, type[ChunkScorerSpec]]:
        return self._groups["chunk_scorers"]

    @property
    def search_strategies(self) -> dict[str, type[SearchSpec]]:
        return self._groups["search_strategies"]

    @property
    def evaluators(self) -> dict[str, type[EvaluatorSpec]]:
        return self._groups["evaluators"]

    @property
    def model_sources(self) -> dict[str, ModelSource]:
        return self._groups["model_sources"]

    @property
    def tasks(self) -> dict[str, Any]:
        return self._groups["tasks"]

    def group(self, name: str) -> dict[str, Any]:
        """Return the kinds of one group, such as ``"token_guides"``."""
        return self._groups[name]

    def register(
        self,
        plugin: object,
        name: str | None = None,
        distribution: str | None = None,
        builtin: bool = False,
    ) -> PluginInfo:
        """Register a plugin object or module and everything its hooks provide.

        Raises:
            PluginError: the plugin has an invalid hook implementation, a hook
                raised, or it registered an invalid class or a duplicate kind.
                Nothing of a rejected plugin stays registered.
        """
        name = name or _plugin_name(plugin)
        info = PluginInfo(name=name, distribution=distribution, builtin=builtin)
        if self.plugin_manager.is_registered(plugin):
            raise PluginError(
                f"plugin {info.label()} is already registered; register each "
                "plugin object once"
            )
        _check_unmarked_hooks(plugin, info)
        self.add_hookspecs(plugin, info)
        try:
            self.plugin_manager.register(plugin, name=name)
            self._check_unknown_hooks(plugin)
        except (pluggy.PluginValidationError, ValueError) as error:
            if self.plugin_manager.is_registered(plugin):
                self.plugin_manager.unregister(plugin)
            raise PluginError(
                f"plugin {info.label()} was rejected: {error}. Fix its hook "
                "implementation to match ivg_core.hookspecs."
            ) from None
        try:
            staged = self._collect(plugin, info)
        except PluginError:
            self.plugin_manager.unregister(plugin)
            raise
        self._commit(staged, info)
        return info

    def _check_unknown_hooks(self, plugin: object) -> None:
        """Reject implementations of ``ivg_register_*`` hooks that do not exist.

        Implementations of other hooks without a specification stay pending,
        because a plugin registered later may declare them in ``ivg_hookspecs``.
        """
        for hook_name, caller in vars(self.plugin_manager.hook).items():
            if not hook_name.startswith("ivg_register_") or caller.spec is not None:
                continue
            if any(impl.plugin is plugin for impl in caller.get_hookimpls()):
                raise ValueError(f"unknown hook {hook_name!r}")

    def _collect(self, plugin: object, info: PluginInfo) -> list[tuple[str, str, Any]]:
        """Call each registration hook of one plugin and validate what it returns."""
        others = [p for p in self.plugin_manager.get_plugins() if p is not plugin]
        staged: list[tuple[str, str, Any]] = []
        for group, (hook_name, base) in GROUPS.items():
            impls = getattr(self.plugin_manager.hook, hook_name).get_hookimpls()
            if not any(impl.plugin is plugin for impl in impls):
                continue
            info.hooks.append(hook_name)
            caller = self.plugin_manager.subset_hook_caller(hook_name, others)

            def register(*args: Any, _group=group, _base=base) -> None:
                kind, value = _registered_item(_group, _base, args, info)
                staged.append((_group, kind, value))

            try:
                caller(register=register)
            except PluginError:
                raise
            except Exception as error:
                raise PluginError(
                    f"plugin {info.label()} raised in {hook_name}: "
                    f"{type(error).__name__}: {error}"
                ) from error
        self._check_duplicates(staged, info)
        return staged

    def _check_duplicates(self, staged: list, info: PluginInfo) -> None:
        seen: set[tuple[str, str]] = set()
        for group, kind, _ in staged:
            owner = self._owners.get((group, kind))
            if owner is not None or (group, kind) in seen:
                by = owner.label() if owner else "the same plugin"
                raise PluginError(
                    f"plugin {info.label()} registers {group} kind {kind!r}, which "
                    f"is already registered by {by}; rename the kind or disable "
                    f"one of the plugins with {LOAD_ENV}"
                )
            seen.add((group, kind))

    def _commit(self, staged: list, info: PluginInfo) -> None:
        for group, kind, value in staged:
            self._groups[group][kind] = value
            self._owners[(group, kind)] = info
            info.kinds.setdefault(group, []).append(kind)
        self.plugins.append(info)
        logger.debug("registered plugin %s: %s", info.label(), info.kinds)

    def add_hookspecs(self, plugin: object, info: PluginInfo | None = None) -> None:
        """Add the hook specifications that a plugin declares in ``ivg_hookspecs``.

        A plugin extends the plugin system by setting ``ivg_hookspecs`` to a
        module or class of functions decorated with ``ivg_core.hookspec``;
        other plugins then implement those hooks, and the plugin calls them
        through ``registry.plugin_manager.hook``. Adding the same
        specifications twice has no effect.

        Raises:
            PluginError: ``ivg_hookspecs`` holds no hook specifications, or one
                whose name an existing hook already has.
        """
        specs = getattr(plugin, "ivg_hookspecs", None)
        if specs is None or specs in self._added_hookspecs:
            return
        info = info or PluginInfo(
            name=_plugin_name(plugin), distribution=None, builtin=False
        )
        try:
            self.plugin_manager.add_hookspecs(specs)
        except ValueError as error:
            raise PluginError(
                f"plugin {info.label()} declares invalid ivg_hookspecs: {error}. "
                "Decorate each hook function there with ivg_core.hookspec."
            ) from None
        self._added_hookspecs.append(specs)

    def owner(self, group: str, kind: str) -> PluginInfo | None:
        """Return the plugin that registered a kind."""
        return self._owners.get((group, kind))

    @contextlib.contextmanager
    def activate(self) -> Iterator[Registry]:
        """Make this registry the one that spec validation resolves kinds with."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def load_entry_points(self, allowed: set[str] | None = None) -> None:
        """Register the plugins of the ``ivg`` entry-point group.

        Args:
            allowed: names of third-party plugins (entry-point or distribution
                names) to load; None loads all. Built-in plugins always load.
        """
        seen: set[tuple[str, str]] = set()
        matched: set[str] = set()
        loaded: list[tuple[object, str, str | None, bool]] = []
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if (entry_point.name, entry_point.value) in seen:
                continue
            seen.add((entry_point.name, entry_point.value))
            distribution = entry_point.dist.name if entry_point.dist else None
            builtin = _normalize(distribution or "") == BUILTIN_DISTRIBUTION
            wanted = {_normalize(entry_point.name), _normalize(distribution or "")}
            if not builtin and allowed is not None and not wanted & allowed:
                logger.debug(
                    "skipping plugin %r (not in %s)", entry_point.name, LOAD_ENV
                )
                continue
            matched |= wanted
            plugin = _load_entry_point(entry_point, distribution)
            loaded.append((plugin, entry_point.name, distribution, builtin))
        # Hook specifications that plugins add come first, so that a plugin
        # may implement a hook of a plugin that loads after it.
        for plugin, name, distribution, builtin in loaded:
            self.add_hookspecs(plugin, PluginInfo(name, distribution, builtin))
        for plugin, name, distribution, builtin in loaded:
            self.register(plugin, name=name, distribution=distribution, builtin=builtin)
        for name in sorted((allowed or set()) - matched):
            logger.warning(
                "%s names %r, but no installed plugin has that name", LOAD_ENV, name
            )

    def _enable_tracing(self) -> None:
        def before(hook_name: str, impls: list, kwargs: dict) -> None:
            names = [impl.plugin_name for impl in impls]
            logger.info("hook %s called on plugins %s", hook_name, names)

        def after(outcome: Any, hook_name: str, impls: list, kwargs: dict) -> None:
            if outcome.exception is not None:
                logger.info("hook %s raised %r", hook_name, outcome.exception)

        self.plugin_manager.add_hookcall_monitoring(before, after)


def _plugin_name(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-")


def _load_entry_point(entry_point, distribution: str | None) -> object:
    try:
        return entry_point.load()
    except Exception as error:
        raise PluginError(
            f"plugin {entry_point.name!r} (distribution {distribution!r}) failed to "
            f"import {entry_point.value!r}: {type(error).__name__}: {error}. "
            f"Reinstall it, or leave it out with {LOAD_ENV}."
        ) from error


def _check_unmarked_hooks(plugin: object, info: PluginInfo) -> None:
    """Reject ``ivg_*`` functions that lack ``@hookimpl``: pluggy would skip them."""
    for attribute in dir(plugin):
        if not attribute.startswith("ivg_register_"):
            continue
        function = getattr(plugin, attribute)
        if callable(function) and not hasattr(function, "ivg_impl"):
            raise PluginError(
                f"plugin {info.label()} defines {attribute} without the @hookimpl "
                "decorator, so it would never be called; decorate it with "
                "ivg_core.hookimpl"
            )


def _registered_item(group: str, base: type | None, args: tuple, info: PluginInfo):
    """Validate one ``register(...)`` call and return (kind, registered value)."""
    if base is not None:
        if (
            len(args) != 1
            or not isinstance(args[0], type)
            or not issubclass(args[0], base)
        ):
            raise PluginError(
                f"plugin {info.label()} called register{args!r} for {group}; pass "
                f"one subclass of {base.__name__}"
            )
        spec_class = args[0]
        kind = spec_class.model_fields["kind"].default
        if not isinstance(kind, str) or not kind:
            raise PluginError(
                f"plugin {info.label()} registered {spec_class.__name__} for "
                f"{group} without a default for 'kind'; declare kind: "
                'Literal["my_kind"] = "my_kind"'
            )
        return kind, spec_class
    if len(args) != 2 or not isinstance(args[0], str) or not args[0]:
        raise PluginError(
            f"plugin {info.label()} called register{args!r} for {group}; call "
            "register(kind, value) with a non-empty kind"
        )
    kind, value = args
    if group == "model_sources" and not isinstance(value, ModelSource):
        raise PluginError(
            f"plugin {info.label()} registered model source {kind!r} as "
            f"{type(value).__name__}; register an ivg_core.ModelSource instance"
        )
    return kind, value


def _allowed_from_environment() -> set[str] | None:
    value = os.environ.get(LOAD_ENV)
    if value is None:
        return None
    return {_normalize(part.strip()) for part in value.split(",") if part.strip()}


def create_registry(
    load_entry_points: bool = True, plugins: tuple | list = ()
) -> Registry:
    """Create a registry with the installed plugins and any extra plugin objects.

    ``IVG_LOAD_PLUGINS`` (comma-separated names) limits which third-party
    plugins load; set to an empty string, only the built-in plugins load.
    """
    registry = Registry()
    if load_entry_points:
        registry.load_entry_points(_allowed_from_environment())
    for plugin in plugins:
        registry.register(plugin)
    return registry


def default_registry() -> Registry:
    """Return the process-wide registry, creating it on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = create_registry()
    return _DEFAULT


def current_registry() -> Registry:
    """Return the registry activated with ``Registry.activate``, else the default."""
    return _ACTIVE.get() or default_registry()
