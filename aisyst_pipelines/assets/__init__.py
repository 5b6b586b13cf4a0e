"""Dagster assets and asset checks, one module per domain; each module exports its own `defs`."""
