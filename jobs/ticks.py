"""Ticks of one-off sensor passes, recorded in the Dagster instance so that `dagster dev` lists them.

A pass such as `aisyst demo`'s evaluates a sensor in this process (`build_sensor_context`) and runs
what it requests; the daemon is not involved, so no tick would be stored. `record_sensor_tick` stores
one like the daemon's, under the sensor's selector id — (code location, repository, sensor name) —
which is what the UI looks ticks up by. The daemon's origin id also hashes the Python executable and
working directory of the code server, which this process cannot know; the selector id stands in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import dagster as dg
from dagster._core.definitions.selector import InstigatorSelector
from dagster._core.scheduler.instigation import InstigatorType, TickData, TickStatus

LOCATION_NAME = "aisyst_pipelines"  # workspace.yaml's location_name
REPOSITORY_NAME = "__repository__"  # the name `@dg.definitions` is served under


def sensor_selector_id(sensor_name: str) -> str:
    return InstigatorSelector(location_name=LOCATION_NAME, repository_name=REPOSITORY_NAME, name=sensor_name).get_id()


def record_sensor_tick(
    instance: dg.DagsterInstance,
    sensor_name: str,
    *,
    run_ids: Sequence[str] = (),
    run_keys: Sequence[str] = (),
    cursor: str | None = None,
    skip_reason: str | None = None,
) -> None:
    """One finished tick of `sensor_name`: SUCCESS with the runs it requested, or SKIPPED with why."""
    selector_id = sensor_selector_id(sensor_name)
    now = time.time()
    instance.create_tick(TickData(
        instigator_origin_id=selector_id,
        instigator_name=sensor_name,
        instigator_type=InstigatorType.SENSOR,
        status=TickStatus.SUCCESS if run_ids or not skip_reason else TickStatus.SKIPPED,
        timestamp=now,
        end_timestamp=now,
        run_ids=list(run_ids),
        run_keys=list(run_keys),
        cursor=cursor,
        skip_reason=None if run_ids else skip_reason,
        selector_id=selector_id,
    ))
