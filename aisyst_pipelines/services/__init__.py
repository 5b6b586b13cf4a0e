"""The work itself, as plain Python over a warehouse and a Stripe gateway (DESIGN.md §1).

One module per feature — ingestion, reconciliation, invoice annotation and branding, usage alerts,
Stripe events, Stripe sync — each taking what it needs as arguments (a `Warehouse`, a Stripe
gateway, a notifier, plain configuration values) and returning a result record. Assets, checks,
sensors and schedules adapt these to Dagster; the CLI, the webhook receiver and the benchmarks call
them directly. Nothing here imports `dagster`, `aisyst_pipelines.assets` or `jobs`.
"""
