"""Dagster wiring around the plain-Python core: assets, IO managers, checks, schedules, instance set-up."""

import warnings

import dagster as dg

# Single-run backfills are the design (DESIGN.md §1); Dagster still labels the parameter beta and warns
# once per asset definition, which buries the CLI's progress lines.
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=dg.BetaWarning)
