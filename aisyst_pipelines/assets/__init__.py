"""Dagster assets and asset checks, one module per feature; what they share is in `common.py`."""
