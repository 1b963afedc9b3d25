"""Validation rules for raw bars → the validated, regular-grid `bars` table."""
