"""Evaluate a sensor once in this process, with a cursor of its own kept in the Dagster instance.

For the command line (`aisyst ingest`, `aisyst annotate`, …) and the demo: the tick is evaluated as the
daemon would (the code location's resources, the instance), but its cursor is stored under a key of its
own, because the daemon's cursor belongs to the running code location.

The cursor stands for work done, so — as the daemon stores a tick's cursor only once the tick's runs
were created — the caller stores it (`store_sensor_cursor`) after creating the runs the tick requested,
never before: a pass that dies while starting them leaves the cursor where the next pass sees those
requests again.
"""

import dagster as dg
from dagster._core.definitions.sensor_definition import SensorExecutionData


def evaluate_sensor_once(
    instance: dg.DagsterInstance, definitions: dg.Definitions, sensor_name: str, cursor_key: str
) -> SensorExecutionData:
    """One tick of `sensor_name` from the cursor stored under `cursor_key`; the new cursor is not stored."""
    sensor = definitions.resolve_sensor_def(sensor_name)
    cursor = instance.run_storage.get_cursor_values({cursor_key}).get(cursor_key)
    resources = {key: (definitions.resources or {})[key] for key in sensor.required_resource_keys}
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=definitions, sensor_name=sensor_name, resources=resources
    ) as context:
        return sensor.evaluate_tick(context)


def store_sensor_cursor(instance: dg.DagsterInstance, cursor_key: str, tick: SensorExecutionData) -> None:
    """Store the tick's cursor: call once the runs (and events) the tick stands for exist."""
    if tick.cursor is not None:
        instance.run_storage.set_cursor_values({cursor_key: tick.cursor})
