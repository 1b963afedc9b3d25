"""Results of bar validation: one `RuleResult` per rule, gathered in a `ValidationReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

Severity = Literal["error", "warn"]
SAMPLE_ROWS = 20
"""Most example rows a rule keeps: enough to diagnose, small enough for a log line or an asset check."""


class BarValidationError(ValueError):
    """Raw bars broke a hard rule; nothing may be written. `report` holds every rule's result."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class RuleResult:
    """Outcome of one rule.

    `passed` says whether the input satisfied the rule; `severity` says what a failure means:
    `error` blocks the write (the report carries no bars), `warn` is reported and the bars are written
    (flagged or repaired). `failures` counts the offending units the rule's message names (rows,
    missing bars, flagged bars, ...); `samples` holds at most `SAMPLE_ROWS` of them.
    """

    name: str
    passed: bool
    severity: Severity
    message: str
    failures: int = 0
    samples: pl.DataFrame = field(default_factory=pl.DataFrame)

    @property
    def is_error(self) -> bool:
        return not self.passed and self.severity == "error"

    def describe(self, max_rows: int = SAMPLE_ROWS) -> str:
        """Multi-line text: the message, then one line per sample row."""
        status = "passed" if self.passed else f"FAILED, {self.severity}"
        lines = [f"{self.name} [{status}]: {self.message}"]
        lines += [f"    {_format_row(row)}" for row in self.samples.head(max_rows).iter_rows(named=True)]
        return "\n".join(lines)


@dataclass(frozen=True)
class ValidationReport:
    """Every rule's result and, when no hard rule failed, the validated `bars` (BARS_SCHEMA)."""

    results: list[RuleResult]
    bars: pl.DataFrame | None

    @property
    def errors(self) -> list[RuleResult]:
        """Failed rules of severity `error` (non-empty ⇔ `bars is None`)."""
        return [r for r in self.results if r.is_error]

    @property
    def warnings(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed and r.severity == "warn"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def result(self, name: str) -> RuleResult:
        """The result of the rule called `name`; KeyError naming the rules that ran otherwise."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no rule {name!r} in this report; rules run: {', '.join(r.name for r in self.results)}")

    def raise_for_errors(self, where: str) -> None:
        """Raise BarValidationError naming `where` (a partition, a file) and each failed hard rule with its samples."""
        errors = self.errors
        if not errors:
            return
        body = "\n".join(r.describe() for r in errors)
        raise BarValidationError(f"{where}: bars failed {len(errors)} hard rule(s); nothing written.\n{body}", self)


def _format_row(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_format_value(v)}" for k, v in row.items())


def _format_value(value: Any) -> str:
    if hasattr(value, "isoformat"):
        # UTC datetimes read better without the "+00:00" noise of isoformat
        return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "hour") else value.isoformat()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
