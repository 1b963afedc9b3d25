"""The registry of model families: config `type` → the family that trains, saves and replays it.

A family module calls `register(MyFamily())` at import. The built-in families (every module of this package) are
imported on the first look-up, so `crypto_assets.config` can validate `models.families` without importing any of
them up front, and adding a family is adding its module; a family registered later (a plug-in, a test module) is
accepted by the same validation.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from crypto_assets.config.schema import FamilyParams

if TYPE_CHECKING:
    from crypto_assets.families.base import Family

# Registered first, in this order (the order of KPI rows and `registered_types()`); every other module of the
# package follows in name order. Modules that hold no family (the protocol, this registry) register nothing.
FIRST_MODULES = ("lstm_attn", "cnn_lstm", "ppo_agent")
_REGISTRY: dict[str, Family] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True  # before importing: the modules call register(), which lands here again
        package = importlib.import_module("crypto_assets.families")
        found = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
        for name in [*FIRST_MODULES, *(m for m in found if m not in FIRST_MODULES)]:
            importlib.import_module(f"crypto_assets.families.{name}")


def register(family: Family) -> Family:
    """Register `family` under its `type` (idempotent for the same class: a module may be re-imported)."""
    _load_builtins()
    previous = _REGISTRY.get(family.type)
    if previous is not None and type(previous).__qualname__ != type(family).__qualname__:
        raise ValueError(f"model family {family.type!r} is already registered by {type(previous).__qualname__}")
    if not issubclass(family.params_class, FamilyParams):
        raise TypeError(f"{family.type}: params_class must subclass crypto_assets.config.schema.FamilyParams")
    _REGISTRY[family.type] = family
    return family


def registered_types() -> tuple[str, ...]:
    """Every registered config type, built-ins first, then in registration order."""
    _load_builtins()
    return tuple(_REGISTRY)


def get_family(family_type: str) -> Family:
    """The family registered as `family_type`; KeyError naming the registered types otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[family_type]
    except KeyError:
        raise KeyError(f"unknown model family {family_type!r}; registered: {', '.join(_REGISTRY)}") from None


def default_params(family_type: str) -> FamilyParams:
    """The family's parameters with every default (what an ensemble member not listed in `families` trains with)."""
    return get_family(family_type).params_class.model_validate({"type": family_type})


def validate_params(value: Any) -> FamilyParams:
    """One `models.families` entry → the registered family's parameter class. Errors carry the key inside the
    entry (`type`, `hidden`, ...) so the config loader reports `models.families[1].hidden` with its line."""
    if isinstance(value, FamilyParams):  # already validated (defaults, copies)
        get_family(value.type)
        return value
    if not isinstance(value, dict):
        # ValueError, not TypeError: pydantic reports only ValueErrors as validation errors with their key path
        raise ValueError("a family entry is a mapping with a `type` key, e.g. {type: LSTM_Attn, hidden: 32}")
    types = registered_types()
    family_type = value.get("type")
    if family_type not in _REGISTRY:
        error: InitErrorDetails = (
            {"type": "missing", "loc": ("type",), "input": value}
            if family_type is None
            else {
                "type": PydanticCustomError(
                    "unknown_family", f"unknown model family {family_type!r}; registered: {', '.join(types)}"
                ),
                "loc": ("type",),
                "input": family_type,
            }
        )
        # pydantic turns a ValidationError raised in a validator into its line errors, under this entry's location
        raise ValidationError.from_exception_data("FamilyParams", [error])
    return _REGISTRY[family_type].params_class.model_validate(value)
