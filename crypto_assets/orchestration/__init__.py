"""Dagster wiring around the plain-Python core: assets, IO managers, checks, schedules, instance set-up."""
