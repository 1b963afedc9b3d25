"""Validation rules for raw bars → the validated, regular-grid `bars` table."""

from crypto_assets.validation.report import BarValidationError, RuleResult, ValidationReport
from crypto_assets.validation.schema import BARS_COLUMNS, BARS_SCHEMA, FLAG_SCHEMA, RAW_PANDERA_SCHEMA
from crypto_assets.validation.validate import RULE_NAMES, find_gaps, validate_bars

__all__ = [
    "BARS_COLUMNS",
    "BARS_SCHEMA",
    "FLAG_SCHEMA",
    "RAW_PANDERA_SCHEMA",
    "RULE_NAMES",
    "BarValidationError",
    "RuleResult",
    "ValidationReport",
    "find_gaps",
    "validate_bars",
]
