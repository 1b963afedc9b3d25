"""Load, validate and fingerprint experiment YAML files."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from crypto_assets.config.schema import ExperimentConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """An experiment file that does not validate; the message lists every problem with its key path."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _construct_timestamp(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> Any:
    """An impossible date such as `2024-02-30` matches YAML's timestamp pattern, and PyYAML's constructor
    then raises a bare ValueError that names neither the key nor the line. Keep the text instead: the
    schema's date fields parse it and the error names the key path and the line."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return node.value


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)

Lines = dict[tuple[int | str, ...], int]


def _lines(node: yaml.Node | None, path: tuple[int | str, ...] = (), found: Lines | None = None) -> Lines:
    """1-based line of every key (mappings) and item (sequences) of a composed document, by key path."""
    found = {(): 1} if found is None else found
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                found[(*path, key_node.value)] = key_node.start_mark.line + 1
                _lines(value_node, (*path, key_node.value), found)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found[(*path, i)] = item.start_mark.line + 1
            _lines(item, (*path, i), found)
    return found


def _line_of(loc: tuple[int | str, ...], lines: Lines) -> int | None:
    """Line of the deepest written key on `loc` (a missing key or a rule on a whole section points at
    its parent; pydantic adds non-key parts such as union tags after the keys)."""
    for depth in range(len(loc), -1, -1):
        if loc[:depth] in lines:
            return lines[loc[:depth]]
    return None


def _model_at(loc: tuple[int | str, ...], raw: Any = None) -> type[BaseModel] | None:
    """The pydantic model class that owns the mapping at `loc` (for listing allowed keys). `raw`: the document,
    to resolve a `models.families` entry to the parameter class its `type` registered."""
    from crypto_assets.config.schema import FamilyParams

    model: Any = ExperimentConfig
    node = raw
    for part in loc:
        node = _child(node, part)
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = _inner_model(model.model_fields[part].annotation)
    if isinstance(model, type) and issubclass(model, FamilyParams) and isinstance(node, dict):
        from crypto_assets.families.registry import get_family

        try:
            model = get_family(str(node.get("type"))).params_class
        except KeyError:
            return FamilyParams
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _child(node: Any, part: int | str) -> Any:
    if isinstance(part, int):
        return node[part] if isinstance(node, list) and 0 <= part < len(node) else None
    return node.get(part) if isinstance(node, dict) else None


def _inner_model(annotation: Any) -> Any:
    """The model inside `list[Member]`, `Optional[Model]`, `Annotated[SerializeAsAny[Model], ...]` (else as is)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation) or ():
        found = _inner_model(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    for item in getattr(annotation, "__metadata__", ()):  # SerializeAsAny[Model] is Annotated[Model, marker]
        found = _inner_model(item)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text", dt.date: "a date YYYY-MM-DD"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _describe(annotation: Any, metadata: list[Any] = ()) -> str:  # type: ignore[assignment]
    """What a field accepts, in words: `an integer >= 0, or null`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return ", or ".join(parts + (["null"] if type(None) in args else []))
    if origin is typing.Annotated:
        return _describe(args[0], [*metadata, *(m for a in args[1:] for m in getattr(a, "metadata", [a]))])
    if origin is list:
        text = f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}" if args else "a list"
    else:
        text = _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    bounds = [f"{sign} {getattr(m, attr)}" for m in metadata for attr, sign in _BOUNDS if hasattr(m, attr)]
    return f"{text} {' and '.join(bounds)}" if bounds else text


def _expected(loc: tuple[int | str, ...], raw: Any = None) -> str | None:
    owner = _model_at(loc[:-1], raw) if loc and isinstance(loc[-1], str) else None
    if owner is None or loc[-1] not in owner.model_fields:
        return None
    field = owner.model_fields[str(loc[-1])]
    return _describe(field.annotation, list(field.metadata))


def _hint(kind: str, value: Any) -> str:
    """Why a value YAML parsed was refused (strict types: nothing is coerced)."""
    if isinstance(value, bool) and kind in ("int_type", "float_type"):
        return "; true / false (and yes / no / on / off) are booleans in YAML, not numbers"
    if isinstance(value, str) and kind in ("int_type", "float_type", "bool_type"):
        return "; a quoted value is text: write it without quotes"
    if isinstance(value, float) and kind == "int_type":
        return "; a whole number is required: write it without a decimal point"
    if kind == "string_type":
        return "; quote it to make it text"
    if isinstance(value, str) and kind == "list_type":
        return f'; write a list, e.g. ["{value}"]'
    return ""


def _format_errors(error: ValidationError, source: str, lines: Lines | None = None, raw: Any = None) -> str:
    lines = lines or {}
    problems = [f"{source}: invalid experiment config ({error.error_count()} problem(s))"]
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "<root>"
        line = _line_of(loc, lines)
        where = f"line {line}, {path}" if line is not None else path
        if item["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1], raw)
            allowed = ", ".join(owner.model_fields) if owner else "?"
            problems.append(f"  {where}: unknown key; allowed keys here: {allowed}")
        elif item["type"] == "missing":
            problems.append(f"  {where}: required key is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            expected = _expected(loc, raw) if item["type"].endswith("_type") else None
            wanted = f"; expected {expected}" if expected else ""
            got = item.get("input")
            problems.append(f"  {where}: {message} (got {got!r}{wanted}{_hint(item['type'], got)})")
    return "\n".join(problems)


def parse_config(raw: Any, source: str = "<config>", lines: Lines | None = None) -> ExperimentConfig:
    """Validate an already-parsed YAML document (`lines`: key path → line, for the messages)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with keys experiment, data, ...")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, lines, raw)) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate one experiment YAML file (DESIGN.md §3.1).

    Raises ConfigError naming the file, every bad key path with its line, the rule broken and what is
    allowed. Types are strict (no `"7"` for 7, no `true` for 1, no `6.0` for 6; an integer is a valid
    number); dates are written YYYY-MM-DD, quoted or not.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    return parse_config(raw, str(path), _lines(node))


def fingerprint(payload: Any) -> str:
    """Short stable hash of any JSON-serialisable payload (code versions, provenance)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(config: ExperimentConfig) -> str:
    """Fingerprint of the whole experiment (defaults included), for provenance. Where results are
    stored (`experiment.storage_dir`) does not change them, so it is left out."""
    return fingerprint(config.model_dump(mode="json", exclude={"experiment": {"storage_dir"}}))


def section_hash(config: ExperimentConfig, *sections: str) -> str:
    """Fingerprint of some sections (e.g. `data`), used as Dagster `code_version`s so that a config
    change marks stale only what reads the changed section."""
    dumped = config.model_dump(mode="json")
    return fingerprint({name: dumped[name] for name in sections})


def resolve_path(path: str | Path) -> Path:
    """Relative config paths resolve against the project root, not the working directory."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path
