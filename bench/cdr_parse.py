"""CDR reader benchmark: parse + validate + rate + hash throughput per format, and peak memory.

    ./run python bench/cdr_parse.py                    # 1,000,000 calls per format
    ./run python bench/cdr_parse.py --calls 200000 --formats canonical_csv

For each format a file of simulated calls is written once (cached under $AISYST_HOME/bench/), then
read with `read_cdr_file` in a child process that reports rows/s and its own peak RSS. No database
is involved: this is the reader's share of `bench/ingest.py`. The goal for canonical CSV is
300,000 rows/s (the reader must leave the loader most of the time budget of issue 2 item 8); the
ratio is taken on rows per CPU-second, which a machine shared with other work disturbs less than
the wall-clock rate.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from aisyst_pipelines.cdr import FORMATS, ReadOptions, read_cdr_file
from aisyst_pipelines.simulation import CdrFileWriter, iter_simulated_calls
from aisyst_pipelines.settings import Settings

GOAL_ROWS_PER_SECOND = 300_000
ACCOUNTS = 200
SUFFIX = {"canonical_csv": ".csv", "canonical_jsonl": ".jsonl", "twilio": ".jsonl", "asterisk": ".csv"}


def sample_file(folder: Path, file_format: str, calls: int) -> Path:
    path = folder / f"cdr-parse-{file_format}-{calls}{SUFFIX[file_format]}"
    if path.exists():
        return path
    days = 30
    per_day = calls / ACCOUNTS / days / 0.84  # weekends are quieter
    written = 0
    with CdrFileWriter(path, file_format) as writer:
        for day in iter_simulated_calls(ACCOUNTS, days, seed=2026, mean_calls_per_day=per_day):
            day = day.iloc[: max(0, calls - written)]
            writer.write(day)
            written += len(day)
    return path


def measure(path: Path, chunk_rows: int) -> dict[str, float]:
    options = ReadOptions(pii_key=b"bench-key", chunk_rows=chunk_rows)
    started = time.perf_counter()
    cpu_started = time.process_time()
    rows = rejected = 0
    for chunk in read_cdr_file(path, options):
        rows += chunk.rows_total
        rejected += len(chunk.rejects)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows": rows,
        "rejected": rejected,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "rows_per_cpu_s": rows / cpu,
        "peak_rss_mib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--chunk-rows", type=int, default=200_000)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child process: measure this file
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.chunk_rows)))
        return
    folder = Settings.from_env().home / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"{'format':<16} {'rows':>10} {'MiB':>7} {'rows/s':>10} {'rows/CPU-s':>11} {'ratio to 300k':>14} {'peak RSS MiB':>13}")
    for file_format in args.formats.split(","):
        path = sample_file(folder, file_format, args.calls)
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(path), "--chunk-rows", str(args.chunk_rows)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout)
        size = path.stat().st_size / 2**20
        print(
            f"{file_format:<16} {result['rows']:>10,.0f} {size:>7.0f} {result['rows_per_s']:>10,.0f} {result['rows_per_cpu_s']:>11,.0f} "
            f"{result['rows_per_cpu_s'] / GOAL_ROWS_PER_SECOND:>14.2f} {result['peak_rss_mib']:>13.0f}"
        )


if __name__ == "__main__":
    main()
