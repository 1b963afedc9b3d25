"""Load, validate and fingerprint experiment YAML files."""

from __future__ import annotations

import hashlib
import json
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


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the mapping at `loc` (for listing allowed keys)."""
    model: Any = ExperimentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = model.model_fields[part].annotation
        for arg in typing.get_args(model) or ():  # list[Member] / Optional[Model]
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid experiment config ({error.error_count()} problem(s))"]
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "<root>"
        if item["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            allowed = ", ".join(owner.model_fields) if owner else "?"
            lines.append(f"  {path}: unknown key; allowed keys here: {allowed}")
        elif item["type"] == "missing":
            lines.append(f"  {path}: required key is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {path}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_config(raw: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate an already-parsed YAML document."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with keys experiment, data, ...")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate one experiment YAML file (DESIGN.md §3.1).

    Raises ConfigError naming the file, every bad key path, the rule broken and what is allowed.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, str(path))


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
