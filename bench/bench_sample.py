"""Benchmark the sample generator: events/second for generation and for the
full write (contract format, Parquet day partitions).

    PYTHONPATH=. flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_sample.py --events 10000000

One JSON result line on stdout (notellm.cli contract); logs go to stderr.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run as a file: the repository's packages are not installed

from jobs.config import SAMPLE_FORMATS  # noqa: E402
from jobs.sources.sample import SampleConfig, generate  # noqa: E402
from notellm import cli  # noqa: E402
from notellm.config import option  # noqa: E402


@dataclasses.dataclass
class BenchSampleConfig:
    """Benchmark the sample generator: events/second for generation and for the full write."""

    events: int = option(10_000_000, help="events to generate")
    notes: int = option(200_000, help="notes of the sample")
    users: int = option(500_000, help="users of the sample")
    days: int = option(14, help="days of events (one Parquet partition each)")
    format: str = option("contract", choices=SAMPLE_FORMATS,
                         help="contract tables, or landing files (all text) for jobs.ingest")

    def sample_config(self) -> SampleConfig:
        return SampleConfig(notes=self.notes, users=self.users, events=self.events, days=self.days,
                            format=self.format)

    def validate(self) -> None:
        self.sample_config().validate()   # sizes the generator refuses are bad input, before any work


def run(a: BenchSampleConfig, timer: cli.Timer) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench_sample_"))
    try:
        cfg = a.sample_config()
        t0 = time.perf_counter()
        with timer.phase("generate_and_write"):
            stats = generate(cfg, out, a.format)
        wall = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
        return {
            "machine": f"{platform.machine()} {platform.python_version()}",
            "format": a.format, "notes": a.notes, "users": a.users, "events": stats["events"],
            "seconds_generate_in_memory": stats["seconds_generate"], "seconds_wall_total": round(wall, 2),
            "events_per_second": round(stats["events"] / wall), "parquet_mib": round(size / 2**20, 1),
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> int:
    return cli.main(run, BenchSampleConfig, argv=argv, prog="bench/bench_sample.py")


if __name__ == "__main__":
    sys.exit(main())
