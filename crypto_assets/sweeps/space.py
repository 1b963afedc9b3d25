"""A sweep's search space: the config's `sweep.space` checked against the family's parameter class, and turned
into Optuna distributions (int / float, optionally log, or categorical) and into a normalized parameter space
(for the stability report's nearest neighbours)."""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from crypto_assets.config.schema import FamilyParams, SweepChoices, SweepRange


def _number_kinds(annotation: Any) -> set[type]:
    """The numeric base types (`int`, `float`) an annotation admits, through Optional / Annotated / unions."""
    if annotation in (int, float):
        return {annotation}
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _number_kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_number_kinds(arg) for arg in typing.get_args(annotation)))
    return set()


def _is_range(dimension: SweepRange | SweepChoices) -> bool:
    return hasattr(dimension, "low")


def range_kind(family_type: str, name: str) -> type:
    """`int` or `float`: how a numeric range of the family's parameter `name` is sampled."""
    from crypto_assets.families import get_family

    field = get_family(family_type).params_class.model_fields[name]
    kinds = _number_kinds(field.annotation)
    return float if float in kinds else int


def check_space(family_type: str, space: Mapping[str, SweepRange | SweepChoices]) -> None:
    """Raise ValueError naming `space.<param>[.low|.high|.choices[i]]` when a parameter is not one of the family's,
    a range is given for a non-numeric parameter, an integer parameter gets fractional bounds, or a bound / choice
    is a value the family's parameter class refuses."""
    from crypto_assets.families import get_family

    params_class = get_family(family_type).params_class
    fields = {name for name in params_class.model_fields if name != "type"}
    for name, dimension in space.items():
        if name not in fields:
            raise ValueError(f"space.{name}: {family_type} has no parameter {name!r}; parameters: {sorted(fields)}")
        values: list[tuple[str, object]]
        if _is_range(dimension):
            kinds = _number_kinds(params_class.model_fields[name].annotation)
            if not kinds:
                raise ValueError(f"space.{name}: not a numeric parameter, give {{choices: [...]}} instead of low/high")
            bounds = (("low", dimension.low), ("high", dimension.high))  # type: ignore[union-attr]
            if float not in kinds:
                for key, value in bounds:
                    if not isinstance(value, int):
                        raise ValueError(f"space.{name}.{key}: {name} is an integer parameter, got {value!r}")
            values = list(bounds)
        else:
            values = [(f"choices[{i}]", v) for i, v in enumerate(dimension.choices)]  # type: ignore[union-attr]
        for key, value in values:
            try:
                params_class.model_validate({"type": family_type, name: value})
            except ValidationError as exc:
                reason = "; ".join(e["msg"] for e in exc.errors())
                raise ValueError(f"space.{name}.{key}: {value!r} is not a valid {name} ({reason})") from None


def distributions(family_type: str, space: Mapping[str, SweepRange | SweepChoices]) -> dict[str, BaseDistribution]:
    """Optuna distributions of the space, in the config's key order (the order the sampler draws them)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, BaseDistribution] = {}
    for name, dim in space.items():
        if _is_range(dim):
            low, high, log = dim.low, dim.high, dim.log  # type: ignore[union-attr]
            if range_kind(family_type, name) is int:
                out[name] = IntDistribution(int(low), int(high), log=log)
            else:
                out[name] = FloatDistribution(float(low), float(high), log=log)
        else:
            # Optuna's categorical choices are scalars: a list choice (e.g. net_arch) travels as its JSON text
            choices = [json.dumps(c) if isinstance(c, list) else c for c in dim.choices]  # type: ignore[union-attr]
            out[name] = CategoricalDistribution(choices)
    return out


def decode(space: Mapping[str, SweepRange | SweepChoices], drawn: Mapping[str, Any]) -> dict[str, Any]:
    """The sampler's values as parameter values (a list choice's JSON text back to the list)."""
    out = dict(drawn)
    for name, dim in space.items():
        if not _is_range(dim):
            for choice in dim.choices:  # type: ignore[union-attr]
                if isinstance(choice, list) and json.dumps(choice) == out[name]:
                    out[name] = choice
    return out


def to_params(base: FamilyParams, values: Mapping[str, Any]) -> FamilyParams:
    """The family's parameters: `base` (its config entry or defaults) with the swept values, validated by the
    family's class."""
    return type(base).model_validate({**base.model_dump(), **values})


def normalized(space: Mapping[str, SweepRange | SweepChoices], params: Mapping[str, Any]) -> dict[str, float | Any]:
    """Each swept parameter in [0, 1] (ranges, in log space when `log`); categorical values as they are (their
    distance is 0 when equal, 1 otherwise: see `distance`)."""
    out: dict[str, float | Any] = {}
    for name, dim in space.items():
        value = params[name]
        if _is_range(dim):
            low, high, log = dim.low, dim.high, dim.log  # type: ignore[union-attr]
            f = math.log if log else float
            out[name] = (f(value) - f(low)) / (f(high) - f(low))
        else:
            out[name] = json.dumps(value)
    return out


def distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """Euclidean distance of two `normalized` points (a categorical mismatch counts 1)."""
    total = 0.0
    for name, x in a.items():
        y = b[name]
        if isinstance(x, float) and isinstance(y, float):
            total += (x - y) ** 2
        else:
            total += 0.0 if x == y else 1.0
    return math.sqrt(total)
