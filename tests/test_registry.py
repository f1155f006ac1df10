"""Plugin registry tests: entry points, hook validation, kinds and IVG_LOAD_PLUGINS."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pydantic
import pytest
from conftest import model_ref
from pydantic import Field

import ivg_core
from ivg_core import ModelRef, ModelSource, ResolvedModel, hookimpl
from ivg_plugins.chunk_beam_search import (
    BestOfNSpec,
    ChunkBeamSearchSpec,
    SamplingSearchSpec,
)
from ivg_plugins.eft import EFTSpec
from ivg_plugins.huggingface import HuggingFaceSource
from ivg_plugins.implicit_value import ImplicitValueSpec
from ivg_plugins.token_rm import TokenRMGuideSpec, TokenRMScorerSpec

LOAD_ENV = "IVG_LOAD_PLUGINS"


def checkpoint_folder(folder: Path) -> Path:
    """Write a config.json into ``folder`` so that it passes as a checkpoint."""
    (folder / "config.json").write_text("{}")
    return folder


BUILTIN_PLUGINS = [
    "chunk_beam_search",
    "classifier",
    "eft",
    "embedded",
    "huggingface",
    "implicit_value",
    "instruct",
    "length",
    "lm_judge",
    "rouge",
    "sentiment",
    "sequence_rm",
    "summarize",
    "token_rm",
    "vader",
]

EXTRA_MODULE = "ivg_test_extra"
EXTRA_DISTRIBUTION = "ivg-test-extra"
EXTRA_SOURCE = """\
from typing import Literal

import ivg_core


class ExtraGuideSpec(ivg_core.TokenGuideSpec):
    kind: Literal["extra_guide"] = "extra_guide"


@ivg_core.hookimpl
def ivg_register_token_guides(register):
    register(ExtraGuideSpec)
"""
BROKEN_MODULE = "ivg_test_broken"
BROKEN_SOURCE = "import ivg_test_missing_dependency\n"


@pytest.fixture(autouse=True)
def clear_plugin_environment(monkeypatch):
    """Load every installed plugin unless a test sets IVG_LOAD_PLUGINS itself."""
    monkeypatch.delenv(LOAD_ENV, raising=False)


@pytest.fixture
def empty_registry() -> ivg_core.Registry:
    """A registry without any plugin, not even the built-in ones."""
    return ivg_core.create_registry(load_entry_points=False)


def make_plugin(name: str, **functions: Callable) -> types.ModuleType:
    """Return a module named ``name`` with ``functions`` as its attributes."""
    module = types.ModuleType(name)
    for attribute, function in functions.items():
        setattr(module, attribute, function)
    return module


def registered_kinds(registry: ivg_core.Registry) -> dict[str, list[str]]:
    """Return the sorted kinds of every group that has at least one."""
    groups = ["token_guides", "chunk_scorers", "search_strategies", "evaluators"]
    groups += ["model_sources", "tasks"]
    kinds = {name: sorted(registry.group(name)) for name in groups}
    return {name: kinds for name, kinds in kinds.items() if kinds}


# Spec classes and model sources that the test plugins register.


class ScaleGuideSpec(ivg_core.TokenGuideSpec):
    """Third-party token guide with one field of its own."""

    kind: Literal["scale"] = "scale"
    factor: float = Field(1.0, gt=0.0)


class OtherScaleGuideSpec(ivg_core.TokenGuideSpec):
    """A second token guide class that claims the kind 'scale'."""

    kind: Literal["scale"] = "scale"


class DuplicateEFTSpec(ivg_core.TokenGuideSpec):
    """Third-party token guide that claims the built-in kind 'eft'."""

    kind: Literal["eft"] = "eft"


class KindlessGuideSpec(ivg_core.TokenGuideSpec):
    """Token guide that declares no default for ``kind``."""


class GreedySearchSpec(ivg_core.SearchSpec):
    """Third-party search strategy."""

    kind: Literal["greedy_search"] = "greedy_search"


class LengthScorerSpec(ivg_core.ChunkScorerSpec):
    """Third-party chunk scorer."""

    kind: Literal["length"] = "length"


class MemorySource(ModelSource):
    """Model source that accepts only names starting with 'mem:'."""

    def check(self, ref: ModelRef) -> None:
        if not ref.name_or_path.startswith("mem:"):
            raise ValueError(
                f"memory model {ref.name_or_path!r} is invalid; write it as 'mem:NAME'"
            )

    def resolve(self, ref: ModelRef) -> ResolvedModel:
        return ResolvedModel(path=ref.name_or_path.removeprefix("mem:"))


def make_third_party_plugin() -> types.ModuleType:
    """Return a plugin that registers one kind in four groups."""

    @hookimpl
    def ivg_register_token_guides(register):
        register(ScaleGuideSpec)

    @hookimpl
    def ivg_register_chunk_scorers(register):
        register(LengthScorerSpec)

    @hookimpl
    def ivg_register_search_strategies(register):
        register(GreedySearchSpec)

    @hookimpl
    def ivg_register_model_sources(register):
        register("memory", MemorySource())

    return make_plugin(
        "third_party",
        ivg_register_token_guides=ivg_register_token_guides,
        ivg_register_chunk_scorers=ivg_register_chunk_scorers,
        ivg_register_search_strategies=ivg_register_search_strategies,
        ivg_register_model_sources=ivg_register_model_sources,
    )


def write_distribution(
    folder: Path, distribution: str, module: str, entry_name: str, source: str
) -> Path:
    """Write an installed-looking distribution with one ``ivg`` entry point."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(source, encoding="utf-8")
    dist_info = folder / f"{module}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n",
        encoding="utf-8",
    )
    (dist_info / "entry_points.txt").write_text(
        f"[ivg]\n{entry_name} = {module}\n", encoding="utf-8"
    )
    return folder


@pytest.fixture
def install_distribution(tmp_path, monkeypatch):
    """Return a function that puts a distribution on sys.path for one test."""
    modules: list[str] = []

    def install(module: str, entry_name: str, source: str, distribution: str):
        folder = tmp_path / f"site-{len(modules)}"
        write_distribution(folder, distribution, module, entry_name, source)
        monkeypatch.syspath_prepend(str(folder))
        modules.append(module)

    yield install
    for module in modules:
        sys.modules.pop(module, None)


# Built-in plugins.

BUILTIN_KINDS = [
    pytest.param("search_strategies", "sampling", SamplingSearchSpec, id="sampling"),
    pytest.param("search_strategies", "best_of_n", BestOfNSpec, id="best_of_n"),
    pytest.param(
        "search_strategies",
        "chunk_beam_search",
        ChunkBeamSearchSpec,
        id="chunk_beam_search",
    ),
    pytest.param("token_guides", "eft", EFTSpec, id="eft"),
    pytest.param("token_guides", "token_rm", TokenRMGuideSpec, id="token_rm_guide"),
    pytest.param(
        "chunk_scorers", "implicit_value", ImplicitValueSpec, id="implicit_value"
    ),
    pytest.param("chunk_scorers", "token_rm", TokenRMScorerSpec, id="token_rm_scorer"),
]
BUILTIN_OWNERS = [
    pytest.param("search_strategies", "sampling", "chunk_beam_search", id="sampling"),
    pytest.param("search_strategies", "best_of_n", "chunk_beam_search", id="best_of_n"),
    pytest.param("token_guides", "eft", "eft", id="eft"),
    pytest.param("token_guides", "token_rm", "token_rm", id="token_rm_guide"),
    pytest.param(
        "chunk_scorers", "implicit_value", "implicit_value", id="implicit_value"
    ),
    pytest.param("chunk_scorers", "token_rm", "token_rm", id="token_rm_scorer"),
    pytest.param("model_sources", "huggingface", "huggingface", id="huggingface"),
]


@pytest.mark.parametrize(("group", "kind", "spec_class"), BUILTIN_KINDS)
def test_entry_points_register_builtin_spec_kinds(registry, group, kind, spec_class):
    assert registry.group(group)[kind] is spec_class


def test_entry_points_register_huggingface_source(registry):
    assert isinstance(registry.model_sources["huggingface"], HuggingFaceSource)


@pytest.mark.parametrize(("group", "kind", "plugin_name"), BUILTIN_OWNERS)
def test_builtin_kind_owner_is_plugin(registry, group, kind, plugin_name):
    owner = registry.owner(group, kind)
    assert owner is not None
    assert owner.name == plugin_name


@pytest.mark.parametrize("plugin_name", BUILTIN_PLUGINS, ids=BUILTIN_PLUGINS)
def test_builtin_plugin_flagged_builtin(registry, plugin_name):
    info = {info.name: info for info in registry.plugins}[plugin_name]
    assert info.builtin is True
    assert info.distribution == "ivg"


def test_builtin_plugins_loaded_once_each(registry):
    names = sorted(info.name for info in registry.plugins)
    assert names == BUILTIN_PLUGINS


def test_builtin_plugin_info_lists_kinds(registry):
    info = {info.name: info for info in registry.plugins}["token_rm"]
    assert info.kinds == {"token_guides": ["token_rm"], "chunk_scorers": ["token_rm"]}
    assert info.hooks == ["ivg_register_token_guides", "ivg_register_chunk_scorers"]


def test_registry_without_entry_points_empty(empty_registry):
    assert empty_registry.plugins == []
    assert registered_kinds(empty_registry) == {}
    assert empty_registry.plugin_manager.get_plugins() == set()


# Invalid hook implementations.


@hookimpl
def register_leftover_task(register):
    """A valid hook that must not leave its task behind when the plugin fails."""
    register("leftover", object())


def wrong_argument_plugin() -> types.ModuleType:
    @hookimpl
    def ivg_register_token_guides(reg):
        reg(ScaleGuideSpec)

    return make_plugin(
        "wrong_argument",
        ivg_register_token_guides=ivg_register_token_guides,
        ivg_register_tasks=register_leftover_task,
    )


def unknown_hook_plugin() -> types.ModuleType:
    @hookimpl
    def ivg_register_widgets(register):
        register("widget", object())

    return make_plugin(
        "unknown_hook",
        ivg_register_widgets=ivg_register_widgets,
        ivg_register_tasks=register_leftover_task,
    )


def unmarked_hook_plugin() -> types.ModuleType:
    def ivg_register_token_guides(register):
        register(ScaleGuideSpec)

    return make_plugin(
        "unmarked_hook",
        ivg_register_token_guides=ivg_register_token_guides,
        ivg_register_tasks=register_leftover_task,
    )


class WrongArgumentClassPlugin:
    """Class-based plugin whose hook misnames its argument."""

    @hookimpl
    def ivg_register_chunk_scorers(self, callback):
        callback(LengthScorerSpec)

    @hookimpl
    def ivg_register_tasks(self, register):
        register("leftover", object())


class UnmarkedClassPlugin:
    """Class-based plugin with a registration method that lacks @hookimpl."""

    def ivg_register_search_strategies(self, register):
        register(GreedySearchSpec)

    @hookimpl
    def ivg_register_tasks(self, register):
        register("leftover", object())


INVALID_HOOK_PLUGINS = [
    pytest.param(
        wrong_argument_plugin,
        r"(?s)plugin 'wrong_argument' was rejected: .*\{'reg'\} are declared in the "
        r"hookimpl but can not be found in the hookspec",
        id="wrong_argument_name",
    ),
    pytest.param(
        unknown_hook_plugin,
        r"plugin 'unknown_hook' was rejected: unknown hook 'ivg_register_widgets'",
        id="unknown_hook_name",
    ),
    pytest.param(
        unmarked_hook_plugin,
        r"plugin 'unmarked_hook' defines ivg_register_token_guides without the "
        r"@hookimpl decorator",
        id="unmarked_module_function",
    ),
    pytest.param(
        WrongArgumentClassPlugin,
        r"(?s)plugin 'WrongArgumentClassPlugin' was rejected: .*\{'callback'\}",
        id="wrong_argument_in_class",
    ),
    pytest.param(
        UnmarkedClassPlugin,
        r"plugin 'UnmarkedClassPlugin' defines ivg_register_search_strategies "
        r"without the @hookimpl decorator",
        id="unmarked_method",
    ),
]


@pytest.mark.parametrize(("make", "message"), INVALID_HOOK_PLUGINS)
def test_invalid_hook_plugin_rejected(empty_registry, make, message):
    plugin = make()
    with pytest.raises(ivg_core.PluginError, match=message):
        empty_registry.register(plugin)
    assert not empty_registry.plugin_manager.is_registered(plugin)
    assert empty_registry.plugins == []
    assert registered_kinds(empty_registry) == {}


@pytest.mark.parametrize(("make", "message"), INVALID_HOOK_PLUGINS)
def test_invalid_hook_plugin_leaves_builtins(registry, make, message):
    before = registered_kinds(registry)
    with pytest.raises(ivg_core.PluginError, match=message):
        registry.register(make())
    assert registered_kinds(registry) == before
    assert sorted(info.name for info in registry.plugins) == BUILTIN_PLUGINS


def test_rejected_plugin_name_reusable(empty_registry):
    with pytest.raises(ivg_core.PluginError, match="'unknown_hook'"):
        empty_registry.register(unknown_hook_plugin())
    fixed = make_plugin("unknown_hook", ivg_register_tasks=register_leftover_task)
    info = empty_registry.register(fixed)
    assert info.kinds == {"tasks": ["leftover"]}
    assert empty_registry.plugin_manager.is_registered(fixed)


def test_register_uses_given_name(empty_registry):
    plugin = make_plugin("module_name", ivg_register_tasks=register_leftover_task)
    info = empty_registry.register(plugin, name="given", distribution="dist-x")
    assert info.name == "given"
    assert info.distribution == "dist-x"
    assert info.builtin is False
    assert empty_registry.owner("tasks", "leftover") is info


def test_class_plugin_name_is_class_name(empty_registry):
    class NamedPlugin:
        @hookimpl
        def ivg_register_tasks(self, register):
            register("named", "task object")

    info = empty_registry.register(NamedPlugin())
    assert info.name == "NamedPlugin"
    assert empty_registry.tasks == {"named": "task object"}


def test_same_plugin_twice_rejected(empty_registry):
    plugin = make_plugin("twice", ivg_register_tasks=register_leftover_task)
    empty_registry.register(plugin)
    with pytest.raises(
        ivg_core.PluginError,
        match="plugin 'twice' is already registered; register each plugin object once",
    ):
        empty_registry.register(plugin)
    assert empty_registry.plugin_manager.is_registered(plugin)
    assert [info.name for info in empty_registry.plugins] == ["twice"]
    assert list(empty_registry.tasks) == ["leftover"]


def test_same_plugin_other_name_rejected(empty_registry):
    plugin = make_plugin("twice", ivg_register_tasks=register_leftover_task)
    empty_registry.register(plugin)
    with pytest.raises(ivg_core.PluginError, match="plugin 'alias' is already"):
        empty_registry.register(plugin, name="alias")
    assert empty_registry.plugin_manager.is_registered(plugin)
    assert [info.name for info in empty_registry.plugins] == ["twice"]


def test_other_plugin_same_name_rejected(empty_registry):
    first = make_plugin("shared", ivg_register_tasks=register_leftover_task)
    second = make_plugin("shared", ivg_register_tasks=register_leftover_task)
    empty_registry.register(first)
    with pytest.raises(ivg_core.PluginError, match="plugin 'shared' was rejected"):
        empty_registry.register(second)
    assert empty_registry.plugin_manager.is_registered(first)
    assert not empty_registry.plugin_manager.is_registered(second)
    assert empty_registry.owner("tasks", "leftover").name == "shared"


# Duplicate kinds.


def duplicate_builtin_guide_plugin() -> types.ModuleType:
    @hookimpl
    def ivg_register_token_guides(register):
        register(DuplicateEFTSpec)

    return make_plugin(
        "duplicate_eft",
        ivg_register_token_guides=ivg_register_token_guides,
        ivg_register_tasks=register_leftover_task,
    )


def duplicate_builtin_source_plugin() -> types.ModuleType:
    @hookimpl
    def ivg_register_model_sources(register):
        register("huggingface", MemorySource())

    return make_plugin(
        "duplicate_source", ivg_register_model_sources=ivg_register_model_sources
    )


def duplicate_builtin_search_plugin() -> types.ModuleType:
    class SamplingAgainSpec(ivg_core.SearchSpec):
        kind: Literal["sampling"] = "sampling"

    @hookimpl
    def ivg_register_search_strategies(register):
        register(GreedySearchSpec)
        register(SamplingAgainSpec)

    return make_plugin(
        "duplicate_sampling",
        ivg_register_search_strategies=ivg_register_search_strategies,
    )


def self_duplicate_plugin() -> types.ModuleType:
    @hookimpl
    def ivg_register_token_guides(register):
        register(ScaleGuideSpec)
        register(OtherScaleGuideSpec)

    return make_plugin(
        "self_duplicate", ivg_register_token_guides=ivg_register_token_guides
    )


def self_duplicate_source_plugin() -> types.ModuleType:
    @hookimpl
    def ivg_register_model_sources(register):
        register("memory", MemorySource())
        register("memory", MemorySource())

    return make_plugin(
        "self_duplicate_source",
        ivg_register_model_sources=ivg_register_model_sources,
    )


DUPLICATE_PLUGINS = [
    pytest.param(
        duplicate_builtin_guide_plugin,
        r"plugin 'duplicate_eft' registers token_guides kind 'eft', which is "
        r"already registered by 'eft' \(distribution 'ivg'\)",
        id="builtin_token_guide",
    ),
    pytest.param(
        duplicate_builtin_source_plugin,
        r"plugin 'duplicate_source' registers model_sources kind 'huggingface', "
        r"which is already registered by 'huggingface' \(distribution 'ivg'\)",
        id="builtin_model_source",
    ),
    pytest.param(
        duplicate_builtin_search_plugin,
        r"plugin 'duplicate_sampling' registers search_strategies kind "
        r"'sampling', which is already registered by 'chunk_beam_search'",
        id="builtin_search_strategy",
    ),
    pytest.param(
        self_duplicate_plugin,
        r"plugin 'self_duplicate' registers token_guides kind 'scale', which is "
        r"already registered by the same plugin",
        id="twice_in_one_plugin",
    ),
    pytest.param(
        self_duplicate_source_plugin,
        r"plugin 'self_duplicate_source' registers model_sources kind 'memory', "
        r"which is already registered by the same plugin",
        id="source_twice_in_one_plugin",
    ),
]


@pytest.mark.parametrize(("make", "message"), DUPLICATE_PLUGINS)
def test_duplicate_kind_plugin_rejected(registry, make, message):
    before = registered_kinds(registry)
    plugin = make()
    with pytest.raises(ivg_core.PluginError, match=message):
        registry.register(plugin)
    assert registered_kinds(registry) == before
    assert not registry.plugin_manager.is_registered(plugin)
    assert sorted(info.name for info in registry.plugins) == BUILTIN_PLUGINS


def test_duplicate_kind_keeps_builtin_class(registry):
    with pytest.raises(ivg_core.PluginError, match="'duplicate_eft'"):
        registry.register(duplicate_builtin_guide_plugin())
    assert registry.token_guides["eft"] is EFTSpec
    assert registry.owner("token_guides", "eft").name == "eft"
    assert "leftover" not in registry.tasks


def test_duplicate_kind_names_third_party_owner(empty_registry):
    first = make_third_party_plugin()
    empty_registry.register(first, distribution="first-dist")

    @hookimpl
    def ivg_register_token_guides(register):
        register(OtherScaleGuideSpec)

    second = make_plugin("second", ivg_register_token_guides=ivg_register_token_guides)
    with pytest.raises(
        ivg_core.PluginError,
        match=r"plugin 'second' registers token_guides kind 'scale', which is "
        r"already registered by 'third_party' \(distribution 'first-dist'\); "
        r"rename the kind or disable one of the plugins with IVG_LOAD_PLUGINS",
    ):
        empty_registry.register(second)
    assert empty_registry.token_guides["scale"] is ScaleGuideSpec


def test_same_kind_in_two_groups_allowed(empty_registry):
    @hookimpl
    def ivg_register_token_guides(register):
        register(ScaleGuideSpec)

    @hookimpl
    def ivg_register_tasks(register):
        register("scale", "task object")

    info = empty_registry.register(
        make_plugin(
            "two_groups",
            ivg_register_token_guides=ivg_register_token_guides,
            ivg_register_tasks=ivg_register_tasks,
        )
    )
    assert info.kinds == {"token_guides": ["scale"], "tasks": ["scale"]}


# Invalid values passed to register().


class NotASpec:
    kind = "not_a_spec"


def register_calls(hook_name: str, *args) -> types.ModuleType:
    """Return a plugin whose hook ``hook_name`` calls ``register(*args)``."""

    @hookimpl
    def hook(register):
        register(*args)

    hooks = {"ivg_register_tasks": register_leftover_task, hook_name: hook}
    return make_plugin("bad_value", **hooks)


INVALID_REGISTER_CALLS = [
    pytest.param(
        "ivg_register_token_guides",
        (NotASpec,),
        r"plugin 'bad_value' called register\(.*NotASpec.*\) for token_guides; "
        r"pass one subclass of TokenGuideSpec",
        id="class_not_a_spec",
    ),
    pytest.param(
        "ivg_register_token_guides",
        (LengthScorerSpec,),
        r"called register\(.*LengthScorerSpec.*\) for token_guides; pass one "
        r"subclass of TokenGuideSpec",
        id="spec_of_other_group",
    ),
    pytest.param(
        "ivg_register_chunk_scorers",
        (LengthScorerSpec(),),
        r"called register\(LengthScorerSpec\(.*\) for chunk_scorers; pass one "
        r"subclass of ChunkScorerSpec",
        id="spec_instance",
    ),
    pytest.param(
        "ivg_register_search_strategies",
        (GreedySearchSpec, "greedy"),
        r"called register\(.*GreedySearchSpec.*'greedy'\) for search_strategies",
        id="spec_with_extra_argument",
    ),
    pytest.param(
        "ivg_register_token_guides",
        (KindlessGuideSpec,),
        r"plugin 'bad_value' registered KindlessGuideSpec for token_guides without "
        r"a default for 'kind'",
        id="spec_without_kind_default",
    ),
    pytest.param(
        "ivg_register_model_sources",
        ("memory", object()),
        r"plugin 'bad_value' registered model source 'memory' as object; register "
        r"an ivg_core.ModelSource instance",
        id="source_not_model_source",
    ),
    pytest.param(
        "ivg_register_model_sources",
        ("memory", MemorySource),
        r"registered model source 'memory' as ABCMeta",
        id="source_class_not_instance",
    ),
    pytest.param(
        "ivg_register_model_sources",
        (MemorySource(),),
        r"plugin 'bad_value' called register\(.*\) for model_sources; call "
        r"register\(kind, value\) with a non-empty kind",
        id="source_without_kind",
    ),
    pytest.param(
        "ivg_register_model_sources",
        ("", MemorySource()),
        r"call register\(kind, value\) with a non-empty kind",
        id="source_empty_kind",
    ),
    pytest.param(
        "ivg_register_tasks",
        (3, "task object"),
        r"called register\(3, 'task object'\) for tasks",
        id="task_kind_not_string",
    ),
]


@pytest.mark.parametrize(("hook_name", "args", "message"), INVALID_REGISTER_CALLS)
def test_invalid_register_value_rejected(empty_registry, hook_name, args, message):
    plugin = register_calls(hook_name, *args)
    with pytest.raises(ivg_core.PluginError, match=message):
        empty_registry.register(plugin)
    assert registered_kinds(empty_registry) == {}
    assert empty_registry.plugins == []
    assert not empty_registry.plugin_manager.is_registered(plugin)


# Hooks that raise.


def test_raising_hook_names_plugin_and_hook(empty_registry):
    @hookimpl
    def ivg_register_chunk_scorers(register):
        raise RuntimeError("scorer table is corrupt")

    plugin = make_plugin(
        "raising", ivg_register_chunk_scorers=ivg_register_chunk_scorers
    )
    with pytest.raises(
        ivg_core.PluginError,
        match=r"plugin 'raising' raised in ivg_register_chunk_scorers: "
        r"RuntimeError: scorer table is corrupt",
    ) as excinfo:
        empty_registry.register(plugin)
    assert isinstance(excinfo.value.__cause__, RuntimeError)
    assert not empty_registry.plugin_manager.is_registered(plugin)


def test_raising_hook_discards_earlier_kinds(empty_registry):
    @hookimpl
    def ivg_register_token_guides(register):
        register(ScaleGuideSpec)

    @hookimpl
    def ivg_register_search_strategies(register):
        register(GreedySearchSpec)
        raise KeyError("missing setting")

    plugin = make_plugin(
        "half_done",
        ivg_register_token_guides=ivg_register_token_guides,
        ivg_register_search_strategies=ivg_register_search_strategies,
    )
    with pytest.raises(
        ivg_core.PluginError,
        match=r"plugin 'half_done' raised in ivg_register_search_strategies: "
        r"KeyError: 'missing setting'",
    ):
        empty_registry.register(plugin)
    assert empty_registry.token_guides == {}
    assert empty_registry.search_strategies == {}
    assert empty_registry.plugins == []


def test_raising_hook_names_distribution(empty_registry):
    @hookimpl
    def ivg_register_tasks(register):
        raise ValueError("no data files")

    plugin = make_plugin("tasks_plugin", ivg_register_tasks=ivg_register_tasks)
    with pytest.raises(
        ivg_core.PluginError,
        match=r"plugin 'tasks_plugin' \(distribution 'tasks-dist'\) raised in "
        r"ivg_register_tasks: ValueError: no data files",
    ):
        empty_registry.register(plugin, distribution="tasks-dist")


# IVG_LOAD_PLUGINS and third-party entry points.

LOAD_SETTINGS = [
    pytest.param(None, True, id="unset_loads_all"),
    pytest.param("", False, id="empty_loads_builtins_only"),
    pytest.param("extra", True, id="entry_point_name"),
    pytest.param("ivg-test-extra", True, id="distribution_name"),
    pytest.param("ivg_test_extra", True, id="distribution_name_underscores"),
    pytest.param("IVG-Test-Extra", True, id="distribution_name_case"),
    pytest.param("other, extra", True, id="list_with_spaces"),
    pytest.param("other", False, id="other_name_only"),
    pytest.param("eft", False, id="builtin_name_only"),
]


@pytest.mark.parametrize(("setting", "loaded"), LOAD_SETTINGS)
def test_load_plugins_env_selects_third_party(
    install_distribution, monkeypatch, setting, loaded
):
    install_distribution(EXTRA_MODULE, "extra", EXTRA_SOURCE, EXTRA_DISTRIBUTION)
    if setting is not None:
        monkeypatch.setenv(LOAD_ENV, setting)
    registry = ivg_core.create_registry()
    assert ("extra_guide" in registry.token_guides) is loaded
    assert ("extra" in [info.name for info in registry.plugins]) is loaded


@pytest.mark.parametrize(("setting", "loaded"), LOAD_SETTINGS)
def test_load_plugins_env_keeps_builtins(
    install_distribution, monkeypatch, setting, loaded
):
    install_distribution(EXTRA_MODULE, "extra", EXTRA_SOURCE, EXTRA_DISTRIBUTION)
    if setting is not None:
        monkeypatch.setenv(LOAD_ENV, setting)
    registry = ivg_core.create_registry()
    builtins = sorted(info.name for info in registry.plugins if info.builtin)
    assert builtins == BUILTIN_PLUGINS


def test_third_party_entry_point_info(install_distribution):
    install_distribution(EXTRA_MODULE, "extra", EXTRA_SOURCE, EXTRA_DISTRIBUTION)
    registry = ivg_core.create_registry()
    info = registry.owner("token_guides", "extra_guide")
    assert info is not None
    assert info.name == "extra"
    assert info.distribution == EXTRA_DISTRIBUTION
    assert info.builtin is False
    assert registry.token_guides["extra_guide"].__module__ == EXTRA_MODULE


@pytest.mark.parametrize(
    "setting",
    ["extra_plugin", "extra-plugin", "Extra_Plugin"],
    ids=["as_written", "dashes", "mixed_case"],
)
def test_load_plugins_env_entry_name_underscore(
    install_distribution, monkeypatch, setting
):
    install_distribution(EXTRA_MODULE, "extra_plugin", EXTRA_SOURCE, EXTRA_DISTRIBUTION)
    monkeypatch.setenv(LOAD_ENV, setting)
    registry = ivg_core.create_registry()
    assert "extra_guide" in registry.token_guides


def test_broken_plugin_import_names_distribution(install_distribution):
    install_distribution(BROKEN_MODULE, "broken", BROKEN_SOURCE, "ivg-test-broken")
    with pytest.raises(
        ivg_core.PluginError,
        match=r"plugin 'broken' \(distribution 'ivg-test-broken'\) failed to "
        r"import 'ivg_test_broken': ModuleNotFoundError: .*"
        r"ivg_test_missing_dependency.*Reinstall it, or leave it out with "
        r"IVG_LOAD_PLUGINS",
    ) as excinfo:
        ivg_core.create_registry()
    assert isinstance(excinfo.value.__cause__, ModuleNotFoundError)


def test_broken_plugin_skipped_when_not_selected(install_distribution, monkeypatch):
    install_distribution(BROKEN_MODULE, "broken", BROKEN_SOURCE, "ivg-test-broken")
    install_distribution(EXTRA_MODULE, "extra", EXTRA_SOURCE, EXTRA_DISTRIBUTION)
    monkeypatch.setenv(LOAD_ENV, "extra")
    registry = ivg_core.create_registry()
    assert "extra_guide" in registry.token_guides
    assert "broken" not in [info.name for info in registry.plugins]


def test_create_registry_registers_plugin_objects():
    plugin = make_third_party_plugin()
    registry = ivg_core.create_registry(load_entry_points=False, plugins=[plugin])
    assert registered_kinds(registry) == {
        "token_guides": ["scale"],
        "chunk_scorers": ["length"],
        "search_strategies": ["greedy_search"],
        "model_sources": ["memory"],
    }
    assert [info.name for info in registry.plugins] == ["third_party"]


def test_trace_env_logs_hook_calls(monkeypatch, caplog):
    monkeypatch.setenv("IVG_TRACE_PLUGINS", "1")
    registry = ivg_core.Registry()
    with caplog.at_level(logging.INFO, logger="ivg_core.registry"):
        registry.register(make_third_party_plugin())
    assert (
        "hook ivg_register_token_guides called on plugins ['third_party']"
        in caplog.messages
    )


# Third-party kinds in specs.


@pytest.fixture
def third_party_registry(registry) -> ivg_core.Registry:
    """The built-in plugins plus one third-party plugin."""
    registry.register(make_third_party_plugin())
    return registry


def test_third_party_kinds_validate_in_spec(third_party_registry, tmp_path):
    spec = ivg_core.load_spec(
        {
            "base": model_ref(checkpoint_folder(tmp_path)),
            "token_guides": [{"kind": "scale", "factor": 2.5, "weight": 0.5}],
            "chunk_scorers": [{"kind": "length"}],
            "search": {"kind": "greedy_search"},
        },
        registry=third_party_registry,
    )
    guide = spec.token_guides[0]
    assert isinstance(guide, ScaleGuideSpec)
    assert guide.factor == 2.5
    assert guide.weight == 0.5
    assert isinstance(spec.chunk_scorers[0], LengthScorerSpec)
    assert isinstance(spec.search, GreedySearchSpec)


def test_third_party_kind_mixes_with_builtins(third_party_registry, tmp_path):
    spec = ivg_core.load_spec(
        {
            "base": model_ref(checkpoint_folder(tmp_path)),
            "token_guides": [
                {"kind": "scale"},
                {
                    "kind": "eft",
                    "tuned": model_ref(checkpoint_folder(tmp_path)),
                    "untuned": model_ref(checkpoint_folder(tmp_path)),
                },
            ],
        },
        registry=third_party_registry,
    )
    assert [type(guide) for guide in spec.token_guides] == [ScaleGuideSpec, EFTSpec]


def test_third_party_kind_field_checked(third_party_registry, tmp_path):
    spec = {
        "base": model_ref(checkpoint_folder(tmp_path)),
        "token_guides": [{"kind": "scale", "factor": 0.0}],
    }
    with pytest.raises(
        ivg_core.SpecError,
        match=r"token_guides\.0\.factor: Input should be greater than 0 \(got 0\.0\)",
    ):
        ivg_core.load_spec(spec, registry=third_party_registry)


def test_third_party_model_source_validates(third_party_registry):
    spec = ivg_core.load_spec(
        {"base": {"name_or_path": "mem:tiny", "source": "memory"}},
        registry=third_party_registry,
    )
    assert spec.base.source == "memory"
    assert spec.base.name_or_path == "mem:tiny"


def test_third_party_model_source_check_runs(third_party_registry):
    with pytest.raises(
        ivg_core.SpecError,
        match=r"base: Value error, memory model 'tiny' is invalid; write it as "
        r"'mem:NAME'",
    ):
        ivg_core.load_spec(
            {"base": {"name_or_path": "tiny", "source": "memory"}},
            registry=third_party_registry,
        )


def test_third_party_kind_unknown_without_plugin(registry, tmp_path):
    spec = {
        "base": model_ref(checkpoint_folder(tmp_path)),
        "token_guides": [{"kind": "scale"}],
    }
    with pytest.raises(
        ivg_core.SpecError,
        match=r"token_guides\.0\.kind: unknown token guide kind .*registered "
        r"kinds: eft, token_rm\. Install and enable the plugin",
    ):
        ivg_core.load_spec(spec, registry=registry)


UNKNOWN_KIND_SPECS = [
    pytest.param(
        "token_guides",
        [{"kind": "nope"}],
        r"token_guides\.0\.kind: unknown token guide kind .*registered kinds: eft, "
        r"scale, token_rm\.",
        id="token_guide",
    ),
    pytest.param(
        "chunk_scorers",
        [{"kind": "nope"}],
        r"chunk_scorers\.0\.kind: unknown chunk scorer kind .*registered kinds: "
        r"classifier, implicit_value, length, lm_judge, sequence_rm, token_rm\.",
        id="chunk_scorer",
    ),
    pytest.param(
        "search",
        {"kind": "nope"},
        r"search\.kind: unknown .*registered kinds: best_of_n, chunk_beam_search, "
        r"greedy_search, sampling\.",
        id="search_strategy",
    ),
]


@pytest.mark.parametrize(("field", "value", "message"), UNKNOWN_KIND_SPECS)
def test_unknown_kind_lists_registered_kinds(
    third_party_registry, tmp_path, field, value, message
):
    spec = {"base": model_ref(checkpoint_folder(tmp_path)), field: value}
    with pytest.raises(ivg_core.SpecError, match=message):
        ivg_core.load_spec(spec, registry=third_party_registry)


def test_unknown_model_source_lists_sources(third_party_registry, tmp_path):
    spec = {"base": {"name_or_path": "tiny", "source": "s3"}}
    with pytest.raises(
        ivg_core.SpecError,
        match=r"base\.source: unknown model source kind .*registered kinds: "
        r"embedded, huggingface, memory\. .*\(got 's3'\)",
    ):
        ivg_core.load_spec(spec, registry=third_party_registry)


def test_activated_registry_validates_objects(third_party_registry, tmp_path):
    with third_party_registry.activate():
        spec = ivg_core.GuidanceSpec(
            base=ModelRef(name_or_path="mem:tiny", source="memory"),
            token_guides=[ScaleGuideSpec(factor=3.0)],
        )
        assert ivg_core.current_registry() is third_party_registry
    assert spec.token_guides == [ScaleGuideSpec(factor=3.0)]
    assert spec.base.source == "memory"
    assert ivg_core.current_registry() is not third_party_registry


def test_unregistered_spec_object_rejected(registry, tmp_path):
    with registry.activate(), pytest.raises(pydantic.ValidationError) as excinfo:
        ivg_core.GuidanceSpec(
            base=ModelRef(**model_ref(checkpoint_folder(tmp_path))),
            token_guides=[ScaleGuideSpec()],
        )
    errors = excinfo.value.errors(include_url=False)
    assert [error["loc"] for error in errors] == [("token_guides", 0, "kind")]
    assert errors[0]["type"] == "unknown_kind"


def test_spec_object_of_other_class_rejected(third_party_registry, tmp_path):
    # OtherScaleGuideSpec shares the kind 'scale' but is not the registered class.
    with third_party_registry.activate(), pytest.raises(pydantic.ValidationError):
        ivg_core.GuidanceSpec(
            base=ModelRef(**model_ref(checkpoint_folder(tmp_path))),
            token_guides=[OtherScaleGuideSpec()],
        )
