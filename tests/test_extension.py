"""Extension tests: the example plugin package, spec files, hooks that plugins
declare, plugin errors on the command line, generated docs, and run specs."""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from conftest import model_ref

import ivg_core
from ivg_core import (
    PluginError,
    SpecError,
    Task,
    TaskPrompt,
    create_registry,
    docgen,
    hookimpl,
    hookspec,
    hookspecs,
    load_spec,
)
from ivg_core.cli import LOGGERS, cli
from ivg_core.runner import RunOptions, run_task

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLE_PLUGIN = DOCS / "examples" / "ivg-example-plugin"
LOAD_ENV = "IVG_LOAD_PLUGINS"
TRACE_ENV = "IVG_TRACE_PLUGINS"
TIMEOUT = 300


def ivg_command(
    *args: str,
    cwd: Path,
    pythonpath: Path | None = None,
    **environment: str,
) -> subprocess.CompletedProcess:
    """Run ``python -m ivg ARGS`` with the plugin variables unset unless given."""
    env = {k: v for k, v in os.environ.items() if k not in (LOAD_ENV, TRACE_ENV)}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(pythonpath), env.get("PYTHONPATH")) if part
        )
    env.update(environment)
    return subprocess.run(
        [sys.executable, "-m", "ivg", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env=env,
    )


def checkpoint_folder(folder: Path) -> Path:
    """Create ``folder`` with a config.json, so that it passes as a checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    return folder


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


# The example plugin package, installed with pip into a folder of its own.

EXAMPLE_PROMPTS = ["The movie", "I loved", "A quiet drama"]
EXAMPLE_KEYWORDS = ["e", "a", "i"]
KEYWORD_COEFFICIENT = 2.0


def example_spec_toml(model: Path) -> str:
    """Return a TOML spec that uses both kinds of the example plugin."""
    return f"""\
[base]
name_or_path = {json.dumps(str(model))}
dtype = "float64"
device = "cpu"

[sampling]
temperature = 0
max_new_tokens = 12
seed = 1

[[token_guides]]
kind = "repetition_penalty"
weight = 1000.0

[[chunk_scorers]]
kind = "keyword"
keywords = {json.dumps(EXAMPLE_KEYWORDS)}
coefficient = {KEYWORD_COEFFICIENT}

[search]
kind = "best_of_n"
n = 2
"""


def keyword_count(text: str) -> int:
    """Count the example keywords in ``text`` as the keyword scorer does."""
    return sum(text.lower().count(keyword) for keyword in EXAMPLE_KEYWORDS)


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """Install the example plugin package into a folder for PYTHONPATH."""
    work = tmp_path_factory.mktemp("example-plugin")
    # pip builds in the source folder and leaves build/ and an egg-info there,
    # so it builds a copy to keep docs/ clean.
    source = work / "source"
    shutil.copytree(
        EXAMPLE_PLUGIN,
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps"]
    command += ["--no-build-isolation", "--no-index", "--disable-pip-version-check"]
    command += ["--quiet", "--target", str(target), str(source)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, f"pip install failed:\n{completed.stderr}"
    return target


@pytest.fixture(scope="module")
def example_work(tmp_path_factory) -> Path:
    """Working folder of the commands that load the example plugin."""
    return tmp_path_factory.mktemp("example-work")


def plugin_listing(completed: subprocess.CompletedProcess) -> dict[str, dict]:
    """Return the entries of ``ivg plugins --json`` output by plugin name."""
    assert completed.returncode == 0, completed.stderr
    return {entry["name"]: entry for entry in json.loads(completed.stdout)}


@pytest.fixture(scope="module")
def example_listing(example_site, example_work) -> dict[str, dict]:
    completed = ivg_command(
        "plugins", "--json", cwd=example_work, pythonpath=example_site
    )
    return plugin_listing(completed)


@pytest.fixture(scope="module")
def example_schema(example_site, example_work) -> dict[str, Any]:
    completed = ivg_command("spec", "schema", cwd=example_work, pythonpath=example_site)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def example_results(example_site, example_work, gpt2_base) -> list[dict]:
    """Results of ``ivg generate`` with the example plugin's TOML spec."""
    spec_file = example_work / "spec.toml"
    spec_file.write_text(example_spec_toml(gpt2_base), encoding="utf-8")
    prompt_options = [arg for p in EXAMPLE_PROMPTS for arg in ("--prompt", p)]
    completed = ivg_command(
        "generate",
        "--spec",
        str(spec_file),
        *prompt_options,
        cwd=example_work,
        pythonpath=example_site,
    )
    assert completed.returncode == 0, completed.stderr
    return [json.loads(line) for line in completed.stdout.splitlines()]


def test_example_plugin_listed_as_third_party(example_listing):
    entry = example_listing["example"]

    assert entry["builtin"] is False
    assert entry["distribution"] == "ivg-example-plugin"
    assert entry["hooks"] == ["ivg_register_token_guides", "ivg_register_chunk_scorers"]
    assert entry["kinds"] == {
        "token_guides": ["repetition_penalty"],
        "chunk_scorers": ["keyword"],
    }


def test_example_plugin_left_out_when_disabled(example_site, example_work):
    completed = ivg_command(
        "plugins",
        "--json",
        cwd=example_work,
        pythonpath=example_site,
        **{LOAD_ENV: ""},
    )

    listing = plugin_listing(completed)
    assert "example" not in listing
    assert "eft" in listing


@pytest.mark.parametrize(
    ("field", "kind"),
    [("token_guides", "repetition_penalty"), ("chunk_scorers", "keyword")],
    ids=["token_guide", "chunk_scorer"],
)
def test_example_plugin_kinds_in_schema(example_schema, field, kind):
    mapping = example_schema["properties"][field]["items"]["discriminator"]["mapping"]

    assert kind in mapping


def test_example_generate_returns_every_prompt(example_results):
    assert [result["prompt"] for result in example_results] == EXAMPLE_PROMPTS


def test_keyword_score_counts_occurrences(example_results):
    scores = [result["scores"]["keyword"] for result in example_results]
    counts = [keyword_count(result["text"]) for result in example_results]

    assert scores == counts
    # Single letters occur in almost any text, so a scorer stuck at 0 fails here.
    assert any(count > 0 for count in counts), counts


def test_keyword_score_weighted_by_coefficient(example_results):
    totals = [result["score"] for result in example_results]
    expected = [
        KEYWORD_COEFFICIENT * result["scores"]["keyword"] for result in example_results
    ]

    assert totals == pytest.approx(expected)


def test_repetition_penalty_prevents_repeated_tokens(example_results):
    repeated = [
        sorted({t for t in result["token_ids"] if result["token_ids"].count(t) > 1})
        for result in example_results
    ]
    lengths = [len(result["token_ids"]) for result in example_results]

    assert repeated == [[]] * len(EXAMPLE_PROMPTS)
    assert min(lengths) > 1, lengths


def test_greedy_base_repeats_without_penalty(gpt2_base):
    # The control of the test above: the same greedy decoding without the guide.
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"temperature": 0, "max_new_tokens": 12, "seed": 1},
    }

    results = ivg_core.generate(
        spec, EXAMPLE_PROMPTS, registry=docgen.builtin_registry()
    )

    repeats = [len(set(r.token_ids)) < len(r.token_ids) for r in results]
    assert any(repeats), [r.token_ids for r in results]


# Spec files in every supported format.


def file_spec_data(model: Path) -> dict[str, Any]:
    """Return the spec that every spec file format below writes."""
    base = {"name_or_path": str(model), "dtype": "float64", "device": "cpu"}
    tuned = {**base, "template": "A glowing review: {prompt}"}
    return {
        "base": base,
        "sampling": {
            "temperature": 0.7,
            "max_new_tokens": 8,
            "stop_strings": ["\n"],
            "seed": 3,
        },
        "token_guides": [
            {"kind": "eft", "weight": 2.0, "tuned": tuned, "untuned": base}
        ],
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "coefficient": 0.5,
                "name": "dpo",
                "tuned": tuned,
                "untuned": base,
            }
        ],
        "search": {"kind": "best_of_n", "n": 3},
    }


TOML_SPEC = """\
[base]
name_or_path = MODEL
dtype = "float64"
device = "cpu"

[sampling]
temperature = 0.7
max_new_tokens = 8
stop_strings = ["\\n"]
seed = 3

[[token_guides]]
kind = "eft"
weight = 2.0
tuned = { name_or_path = MODEL, dtype = "float64", device = "cpu", \
template = "A glowing review: {prompt}" }
untuned = { name_or_path = MODEL, dtype = "float64", device = "cpu" }

[[chunk_scorers]]
kind = "implicit_value"
coefficient = 0.5
name = "dpo"
tuned = { name_or_path = MODEL, dtype = "float64", device = "cpu", \
template = "A glowing review: {prompt}" }
untuned = { name_or_path = MODEL, dtype = "float64", device = "cpu" }

[search]
kind = "best_of_n"
n = 3
"""

PYTHON_OBJECT_SPEC = """\
from ivg_core import GuidanceSpec, ModelRef, SamplingSpec
from ivg_plugins.chunk_beam_search import BestOfNSpec
from ivg_plugins.eft import EFTSpec
from ivg_plugins.implicit_value import ImplicitValueSpec

base = ModelRef(name_or_path=MODEL, dtype="float64", device="cpu")
tuned = base.with_template("A glowing review: {prompt}")
spec = GuidanceSpec(
    base=base,
    sampling=SamplingSpec(
        temperature=0.7, max_new_tokens=8, stop_strings=["\\n"], seed=3
    ),
    token_guides=[EFTSpec(weight=2.0, tuned=tuned, untuned=base)],
    chunk_scorers=[
        ImplicitValueSpec(coefficient=0.5, name="dpo", tuned=tuned, untuned=base)
    ],
    search=BestOfNSpec(n=3),
)
"""


def spec_file_text(suffix: str, model: Path) -> str:
    """Return the text of the shared spec as a file with ``suffix``."""
    data = file_spec_data(model)
    if suffix == ".toml":
        return TOML_SPEC.replace("MODEL", json.dumps(str(model)))
    if suffix in (".yaml", ".yml"):
        return yaml.safe_dump(data)
    if suffix == ".json":
        return json.dumps(data, indent=2)
    if suffix == ".object.py":
        return PYTHON_OBJECT_SPEC.replace("MODEL", repr(str(model)))
    return f"spec = {data!r}\n"


@pytest.fixture
def spec_model(tmp_path) -> Path:
    return checkpoint_folder(tmp_path / "model")


@pytest.mark.parametrize(
    "suffix",
    [".toml", ".yaml", ".yml", ".json", ".object.py", ".dict.py"],
    ids=["toml", "yaml", "yml", "json", "python_object", "python_dict"],
)
def test_spec_file_formats_load_equal(tmp_path, spec_model, suffix):
    path = tmp_path / f"spec{suffix}"
    path.write_text(spec_file_text(suffix, spec_model), encoding="utf-8")

    assert load_spec(path) == load_spec(file_spec_data(spec_model))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("no_spec.py", b"value = 1\n", "defines no variable 'spec'"),
        (
            "raises.py",
            b"raise ValueError('no model here')\n",
            "failed: ValueError: no model here",
        ),
        ("spec.ini", b"[base]\n", "has the suffix '.ini'"),
        ("missing.toml", None, "does not exist"),
        ("bad.toml", b"[base\n", "is not valid toml"),
        ("bad.yaml", b"base: [unclosed\n", "is not valid yaml"),
        ("bad.json", b'{"base": \n', "is not valid json"),
        ("latin1.json", '{"seed": "caf\xe9"}'.encode("latin-1"), "not valid UTF-8"),
        ("latin1.yaml", "seed: caf\xe9\n".encode("latin-1"), "not valid UTF-8"),
    ],
    ids=[
        "python_without_spec",
        "python_raises",
        "unknown_suffix",
        "missing_file",
        "invalid_toml",
        "invalid_yaml",
        "invalid_json",
        "json_not_utf8",
        "yaml_not_utf8",
    ],
)
def test_spec_file_errors_name_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(SpecError) as excinfo:
        load_spec(path)

    assert str(path) in str(excinfo.value)
    assert message in str(excinfo.value)


def test_spec_validate_accepts_good_file(tmp_path, spec_model):
    path = tmp_path / "spec.toml"
    path.write_text(spec_file_text(".toml", spec_model), encoding="utf-8")

    completed = ivg_command("spec", "validate", str(path), cwd=tmp_path)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"{path}: valid"


SEVERAL_ERRORS_YAML = """\
base:
  name_or_path: MODEL
  dtype: float8
sampling:
  temperature: -1
  top_p: 2
  colour: red
token_guides:
  - kind: nope
search:
  kind: best_of_n
  n: 0
"""
SEVERAL_ERRORS_PATHS = [
    "base.dtype",
    "sampling.temperature",
    "sampling.top_p",
    "sampling.colour",
    "token_guides.0.kind",
    "search.n",
]


@pytest.fixture(scope="module")
def validate_several_errors(tmp_path_factory) -> subprocess.CompletedProcess:
    """``ivg spec validate`` on a YAML file with six invalid fields."""
    folder = tmp_path_factory.mktemp("validate")
    model = checkpoint_folder(folder / "model")
    path = folder / "bad.yaml"
    path.write_text(SEVERAL_ERRORS_YAML.replace("MODEL", str(model)), encoding="utf-8")
    return ivg_command("spec", "validate", str(path), cwd=folder)


def test_spec_validate_fails_without_traceback(validate_several_errors):
    stderr = validate_several_errors.stderr

    assert validate_several_errors.returncode == 1
    assert "Traceback" not in stderr
    assert stderr.startswith("error: invalid spec (6 errors):"), stderr


@pytest.mark.parametrize("field", SEVERAL_ERRORS_PATHS, ids=SEVERAL_ERRORS_PATHS)
def test_spec_validate_lists_field_error(validate_several_errors, field):
    lines = validate_several_errors.stderr.splitlines()

    assert any(line.startswith(f"  {field}: ") for line in lines), lines


# The JSON Schema of specs, and a validator for the keywords pydantic emits.

SCHEMA_KEYWORDS = {
    "$ref",
    "additionalProperties",
    "anyOf",
    "const",
    "enum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "items",
    "maxItems",
    "maxLength",
    "maximum",
    "minItems",
    "minLength",
    "minimum",
    "oneOf",
    "properties",
    "required",
    "type",
}
SCHEMA_ANNOTATIONS = {"$defs", "default", "description", "discriminator", "title"}
JSON_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def schema_keywords(schema: Any) -> set[str]:
    """Return every keyword used in a schema and its subschemas."""
    if isinstance(schema, list):
        return set().union(*(schema_keywords(item) for item in schema))
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for keyword in ("properties", "$defs"):
        for subschema in schema.get(keyword, {}).values():
            found |= schema_keywords(subschema)
    for keyword in ("items", "anyOf", "oneOf", "additionalProperties"):
        found |= schema_keywords(schema.get(keyword))
    return found


def is_json_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name != "boolean":
        return False
    return isinstance(value, JSON_TYPES[name])


def hand_schema_errors(value: Any, schema: dict, root: dict, path: str) -> list[str]:
    """Return the violations of ``schema`` by ``value``, for SCHEMA_KEYWORDS only."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return hand_schema_errors(value, root["$defs"][name], root, path)

    errors = hand_combinator_errors(value, schema, root, path)
    if "type" in schema and not is_json_type(value, schema["type"]):
        return errors + [f"{path}: {value!r} is not of type {schema['type']}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")

    if isinstance(value, dict):
        errors += hand_object_errors(value, schema, root, path)
    if isinstance(value, list):
        errors += hand_array_errors(value, schema, root, path)
    if isinstance(value, str):
        errors += hand_string_errors(value, schema, path)
    if is_json_type(value, "number"):
        errors += hand_number_errors(value, schema, path)
    return errors


def hand_combinator_errors(
    value: Any, schema: dict, root: dict, path: str
) -> list[str]:
    errors = []
    options = schema.get("anyOf", [])
    if options and all(hand_schema_errors(value, o, root, path) for o in options):
        errors.append(f"{path}: matches no anyOf option")
    options = schema.get("oneOf", [])
    matches = [o for o in options if not hand_schema_errors(value, o, root, path)]
    if options and len(matches) != 1:
        errors.append(f"{path}: matches {len(matches)} oneOf options, not 1")
    return errors


def hand_object_errors(value: dict, schema: dict, root: dict, path: str) -> list[str]:
    errors = [
        f"{path}: missing required {name!r}"
        for name in schema.get("required", [])
        if name not in value
    ]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            errors += hand_schema_errors(item, properties[name], root, f"{path}.{name}")
        elif extra is False:
            errors.append(f"{path}: additional property {name!r}")
        elif isinstance(extra, dict):
            errors += hand_schema_errors(item, extra, root, f"{path}.{name}")
    return errors


def hand_array_errors(value: list, schema: dict, root: dict, path: str) -> list[str]:
    errors = []
    if len(value) < schema.get("minItems", 0):
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if len(value) > schema.get("maxItems", len(value)):
        errors.append(f"{path}: more than {schema['maxItems']} items")
    items = schema.get("items", {})
    for index, item in enumerate(value):
        errors += hand_schema_errors(item, items, root, f"{path}.{index}")
    return errors


def hand_string_errors(value: str, schema: dict, path: str) -> list[str]:
    errors = []
    if len(value) < schema.get("minLength", 0):
        errors.append(f"{path}: shorter than {schema['minLength']} characters")
    if len(value) > schema.get("maxLength", len(value)):
        errors.append(f"{path}: longer than {schema['maxLength']} characters")
    return errors


def hand_number_errors(value: float, schema: dict, path: str) -> list[str]:
    bounds = [
        ("minimum", lambda bound: value >= bound),
        ("maximum", lambda bound: value <= bound),
        ("exclusiveMinimum", lambda bound: value > bound),
        ("exclusiveMaximum", lambda bound: value < bound),
    ]
    return [
        f"{path}: {value!r} violates {keyword} {schema[keyword]!r}"
        for keyword, satisfied in bounds
        if keyword in schema and not satisfied(schema[keyword])
    ]


def schema_errors(value: Any, schema: dict) -> list[str]:
    """Validate with jsonschema when it is installed, else by hand."""
    try:
        import jsonschema
    except ImportError:
        return hand_schema_errors(value, schema, schema, "spec")
    validator = jsonschema.Draft202012Validator(schema)
    return [error.message for error in validator.iter_errors(value)]


@pytest.fixture(scope="module")
def builtin_schema(tmp_path_factory) -> dict[str, Any]:
    """Output of ``ivg spec schema`` with the built-in plugins only."""
    folder = tmp_path_factory.mktemp("schema")
    completed = ivg_command("spec", "schema", cwd=folder, **{LOAD_ENV: ""})
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def builtin_registry() -> ivg_core.Registry:
    return docgen.builtin_registry()


def kind_union(schema: dict, field: str) -> dict:
    """Return the subschema that selects a field's spec class by kind."""
    prop = schema["properties"][field]
    return prop if field == "search" else prop["items"]


@pytest.mark.parametrize(
    ("field", "group"),
    [
        ("token_guides", "token_guides"),
        ("chunk_scorers", "chunk_scorers"),
        ("search", "search_strategies"),
    ],
    ids=["token_guides", "chunk_scorers", "search"],
)
def test_spec_schema_kinds_by_discriminator(
    builtin_schema, builtin_registry, field, group
):
    union = kind_union(builtin_schema, field)

    assert union["discriminator"]["propertyName"] == "kind"
    assert sorted(union["discriminator"]["mapping"]) == sorted(
        builtin_registry.group(group)
    )
    assert len(union["oneOf"]) == len(builtin_registry.group(group))


def test_spec_schema_lists_model_sources(builtin_schema):
    source = builtin_schema["$defs"]["ModelRef"]["properties"]["source"]

    assert "embedded" in source["enum"]
    assert "huggingface" in source["enum"]


def test_spec_schema_uses_known_keywords(builtin_schema):
    # The hand validator checks only SCHEMA_KEYWORDS, so any other keyword would
    # pass unchecked.
    unknown = schema_keywords(builtin_schema) - SCHEMA_KEYWORDS - SCHEMA_ANNOTATIONS

    assert unknown == set()


@pytest.mark.parametrize(
    "form",
    [
        pytest.param("tuned_list", id="tuned_list"),
        pytest.param("resolved", id="resolved"),
        pytest.param("tuned_single_model", id="tuned_single_model"),
    ],
)
def test_spec_schema_accepts_real_spec(builtin_schema, spec_model, form):
    data = file_spec_data(spec_model)
    guide = data["token_guides"][0]
    if form == "tuned_list":
        data["token_guides"] = [{**guide, "tuned": [guide["tuned"]]}]
    if form == "resolved":
        data = load_spec(data).model_dump(mode="json")

    assert schema_errors(data, builtin_schema) == []


@pytest.mark.parametrize(
    "change",
    [
        {"token_guides": [{"kind": "nope"}]},
        {"sampling": {"colour": "red"}},
        {"sampling": {"temperature": -1}},
        {"search": {"kind": "best_of_n", "n": "four"}},
    ],
    ids=["unknown_kind", "unknown_field", "out_of_range", "wrong_type"],
)
def test_spec_schema_rejects_invalid_spec(builtin_schema, spec_model, change):
    data = {**file_spec_data(spec_model), **change}

    assert schema_errors(data, builtin_schema) != []


# Hooks that plugins declare with ivg_hookspecs.


class GreetingHookspecs:
    """Hook specifications that DeclaringPlugin adds."""

    @staticmethod
    @hookspec
    def ivg_extra_greeting(name):
        """Return a greeting for ``name``."""


class DeclaringPlugin:
    """Plugin that declares the hook ivg_extra_greeting."""

    ivg_hookspecs = GreetingHookspecs


class GreetingPlugin:
    """Plugin that implements ivg_extra_greeting."""

    @hookimpl
    def ivg_extra_greeting(self, name):
        return f"hello {name}"


class UndecoratedHookspecs:
    @staticmethod
    def ivg_extra_greeting(name):
        """A hook specification without the hookspec decorator."""


class UndecoratedDeclaringPlugin:
    ivg_hookspecs = UndecoratedHookspecs


@pytest.mark.parametrize(
    "order",
    [
        pytest.param((DeclaringPlugin, GreetingPlugin), id="declaring_first"),
        pytest.param((GreetingPlugin, DeclaringPlugin), id="implementing_first"),
    ],
)
def test_added_hookspec_called_either_order(order):
    registry = ivg_core.Registry(trace=False)
    for plugin_class in order:
        registry.register(plugin_class())

    greetings = registry.plugin_manager.hook.ivg_extra_greeting(name="x")

    assert greetings == ["hello x"]


def test_add_hookspecs_before_implementation(empty_registry):
    declaring = DeclaringPlugin()
    empty_registry.add_hookspecs(declaring)
    empty_registry.register(GreetingPlugin())
    empty_registry.register(declaring)

    greetings = empty_registry.plugin_manager.hook.ivg_extra_greeting(name="x")

    assert greetings == ["hello x"]


def test_hookspecs_without_hooks_rejected(empty_registry):
    with pytest.raises(
        PluginError,
        match=r"plugin 'UndecoratedDeclaringPlugin' declares invalid ivg_hookspecs",
    ):
        empty_registry.register(UndecoratedDeclaringPlugin())

    assert empty_registry.plugins == []


@pytest.fixture
def empty_registry() -> ivg_core.Registry:
    """A registry without any plugin, not even the built-in ones."""
    return ivg_core.Registry(trace=False)


DECLARING_MODULE = "ivg_test_greeting_hooks"
DECLARING_SOURCE = '''\
import ivg_core


class GreetingHookspecs:
    @staticmethod
    @ivg_core.hookspec
    def ivg_extra_greeting(name):
        """Return a greeting for name."""


ivg_hookspecs = GreetingHookspecs
'''
IMPLEMENTING_MODULE = "ivg_test_greeter"
IMPLEMENTING_SOURCE = """\
import ivg_core


@ivg_core.hookimpl
def ivg_extra_greeting(name):
    return f"hello {name}"
"""


@pytest.fixture
def greeting_distributions(tmp_path, monkeypatch):
    """Install the declaring and the implementing plugin; the latter comes first."""
    declaring = write_distribution(
        tmp_path / "declaring",
        "ivg-test-greeting-hooks",
        DECLARING_MODULE,
        "greeting_hooks",
        DECLARING_SOURCE,
    )
    implementing = write_distribution(
        tmp_path / "implementing",
        "ivg-test-greeter",
        IMPLEMENTING_MODULE,
        "greeter",
        IMPLEMENTING_SOURCE,
    )
    # Entry points come in sys.path order, so the implementing plugin loads first.
    monkeypatch.syspath_prepend(str(declaring))
    monkeypatch.syspath_prepend(str(implementing))
    yield
    for module in (DECLARING_MODULE, IMPLEMENTING_MODULE):
        sys.modules.pop(module, None)


def test_entry_point_implements_later_hookspec(greeting_distributions):
    registry = ivg_core.Registry(trace=False)
    registry.load_entry_points(allowed={"greeter", "greeting-hooks"})

    third_party = [info.name for info in registry.plugins if not info.builtin]
    greetings = registry.plugin_manager.hook.ivg_extra_greeting(name="x")

    assert third_party == ["greeter", "greeting_hooks"]
    assert greetings == ["hello x"]


# Plugin errors and tracing on the command line.

RAISING_HOOK_SOURCE = """\
import ivg_core


@ivg_core.hookimpl
def ivg_register_tasks(register):
    raise ValueError("no data files")
"""


@pytest.mark.parametrize(
    ("module", "source", "message"),
    [
        (
            "ivg_test_broken",
            "raise RuntimeError('broken at import')\n",
            "error: plugin 'broken' (distribution 'ivg-test-broken') failed to "
            "import 'ivg_test_broken': RuntimeError: broken at import.",
        ),
        (
            "ivg_test_raising",
            RAISING_HOOK_SOURCE,
            "error: plugin 'broken' (distribution 'ivg-test-broken') raised in "
            "ivg_register_tasks: ValueError: no data files",
        ),
    ],
    ids=["import_error", "hook_error"],
)
def test_cli_plugins_reports_broken_plugin(tmp_path, module, source, message):
    site = write_distribution(
        tmp_path / "site", "ivg-test-broken", module, "broken", source
    )

    completed = ivg_command("plugins", cwd=tmp_path, pythonpath=site)

    lines = completed.stderr.splitlines()
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith(message), lines


def test_cli_trace_logs_each_hook_call(tmp_path, builtin_registry):
    completed = ivg_command("plugins", cwd=tmp_path, **{LOAD_ENV: "", TRACE_ENV: "1"})

    calls = [line for line in completed.stderr.splitlines() if " called on " in line]
    expected = [
        f"INFO ivg_core.registry: hook {hook} called on plugins [{info.name!r}]"
        for info in builtin_registry.plugins
        for hook in info.hooks
    ]
    assert completed.returncode == 0, completed.stderr
    assert calls == expected


# Docs that are generated from, or must match, the code.

REGENERATE = "run `python -m ivg_core.docgen` to regenerate it"


def test_spec_reference_page_matches_code():
    page = (DOCS / docgen.SPEC_PAGE).read_text(encoding="utf-8")

    generated = docgen.spec_reference(docgen.builtin_registry())

    assert generated == page, f"docs/{docgen.SPEC_PAGE} is out of date; {REGENERATE}"


def test_cli_reference_page_matches_code():
    page = (DOCS / docgen.CLI_PAGE).read_text(encoding="utf-8")

    generated = docgen.cli_reference()

    assert generated == page, f"docs/{docgen.CLI_PAGE} is out of date; {REGENERATE}"


HOOK_NAMES = [
    name
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("ivg_")
]


@pytest.mark.parametrize("hook_name", HOOK_NAMES, ids=HOOK_NAMES)
def test_plugins_doc_describes_hook(hook_name):
    page = (DOCS / "plugins.md").read_text(encoding="utf-8")

    assert f"### `{hook_name}(register)`" in page.splitlines()


def command_paths(command: click.Command, path: list[str]) -> list[list[str]]:
    """Return the argument path of a command and of all its subcommands."""
    paths = [path]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            paths += command_paths(command.commands[name], [*path, name])
    return paths


COMMAND_PATHS = command_paths(cli, [])


@pytest.fixture
def restore_cli_loggers():
    """Undo the handlers that the ``ivg`` group installs on ivg's loggers."""
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.parametrize(
    "path", COMMAND_PATHS, ids=[" ".join(["ivg", *p]) for p in COMMAND_PATHS]
)
def test_cli_command_help_exits_zero(restore_cli_loggers, path):
    result = CliRunner().invoke(cli, [*path, "--help"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: "), result.output


def nav_pages(nav: Any) -> list[str]:
    """Return the page paths in an mkdocs ``nav`` entry, nested sections included."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


MKDOCS_CONFIG = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
NAV_PAGES = nav_pages(MKDOCS_CONFIG["nav"])


@pytest.mark.parametrize("page", NAV_PAGES)
def test_mkdocs_nav_page_exists(page):
    assert (DOCS / page).is_file(), f"mkdocs.yml names docs/{page}, which is missing"


def test_mkdocs_build_strict_succeeds(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict"]
    command += ["--config-file", str(ROOT / "mkdocs.yml")]
    command += ["--site-dir", str(tmp_path / "site")]

    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )

    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "site" / "index.html").is_file()


# Resolved specs that task runs write.


class TinyTask(Task):
    """A task on tiny local models: plain sampling against EFT."""

    default_preset = "tiny"

    def __init__(self, base, tuned, untuned):
        self.folders = (base, tuned, untuned)

    def presets(self):
        return ["tiny"]

    def methods(self, preset):
        return ["base", "eft"]

    def spec(self, preset, method):
        base, tuned, untuned = self.folders
        guides = [
            {
                "kind": "eft",
                "tuned": model_ref(tuned),
                "untuned": model_ref(untuned),
                "weight": 2.0,
            }
        ]
        return {
            "base": model_ref(base),
            "sampling": {"max_new_tokens": 5, "seed": 1},
            "token_guides": guides if method == "eft" else [],
        }

    def evaluator(self, preset):
        return {"kind": "vader"}

    def load_prompts(self, preset, source):
        words = ["good", "bad", "fine", "great", "awful"]
        return [TaskPrompt(i, f"The film was {w}.") for i, w in enumerate(words)]


CUSTOM_SPEC_TOML = """\
[base]
name_or_path = MODEL
dtype = "float64"
device = "cpu"

[sampling]
temperature = 0
max_new_tokens = 4
"""


@pytest.fixture(scope="module")
def tiny_task(gpt2_base, gpt2_tuned, gpt2_untuned) -> TinyTask:
    return TinyTask(gpt2_base, gpt2_tuned, gpt2_untuned)


@pytest.fixture(scope="module")
def tiny_registry(tiny_task) -> ivg_core.Registry:
    @hookimpl
    def ivg_register_tasks(register):
        register("tiny", tiny_task)

    plugin = types.ModuleType("tiny_task")
    plugin.ivg_register_tasks = ivg_register_tasks
    return create_registry(plugins=[plugin])


@pytest.fixture(scope="module")
def task_run(tmp_path_factory, tiny_registry) -> Path:
    """Output folder of a run of every method of the tiny task."""
    out_dir = tmp_path_factory.mktemp("task-run")
    run_task(RunOptions(task="tiny", out_dir=out_dir, progress=False), tiny_registry)
    return out_dir


@pytest.fixture(scope="module")
def custom_spec_file(tmp_path_factory, gpt2_base) -> Path:
    path = tmp_path_factory.mktemp("custom-spec") / "custom.toml"
    path.write_text(CUSTOM_SPEC_TOML.replace("MODEL", json.dumps(str(gpt2_base))))
    return path


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory, tiny_registry, custom_spec_file) -> Path:
    """Output folder of a run of the tiny task with a spec file."""
    out_dir = tmp_path_factory.mktemp("custom-run")
    options = RunOptions(
        task="tiny", out_dir=out_dir, spec=custom_spec_file, progress=False
    )
    run_task(options, tiny_registry)
    return out_dir


def generation_rows(out_dir: Path) -> list[dict]:
    lines = (out_dir / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("method", ["base", "eft"], ids=str)
def test_run_task_writes_method_spec(task_run, tiny_registry, tiny_task, method):
    written = load_spec(task_run / "specs" / f"{method}.json", tiny_registry)

    assert written == load_spec(tiny_task.spec("tiny", method), tiny_registry)


def test_run_spec_option_adds_custom_method(custom_run):
    pairs = [(row["method"], row["prompt_id"]) for row in generation_rows(custom_run)]

    assert pairs == [(m, i) for m in ("base", "custom") for i in range(5)]


def test_run_spec_option_decodes_spec_file(
    custom_run, tiny_registry, tiny_task, custom_spec_file
):
    rows = [row for row in generation_rows(custom_run) if row["method"] == "custom"]
    prompts = tiny_task.load_prompts("tiny", None)

    expected = ivg_core.generate(
        custom_spec_file,
        [p.text for p in prompts],
        prompt_ids=[p.id for p in prompts],
        registry=tiny_registry,
    )

    assert [row["response"] for row in rows] == [r.text for r in expected]


def test_run_spec_option_writes_custom_spec(
    custom_run, tiny_registry, custom_spec_file
):
    written = load_spec(custom_run / "specs" / "custom.json", tiny_registry)

    assert written == load_spec(custom_spec_file, tiny_registry)
