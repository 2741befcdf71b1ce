"""Benchmark the sample generator: events/second for generation and for the
full write (contract format, Parquet day partitions).

    PYTHONPATH=. flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_sample.py --events 10000000
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

from jobs.sources.sample import SampleConfig, generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--notes", type=int, default=200_000)
    p.add_argument("--users", type=int, default=500_000)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--format", choices=("contract", "landing"), default="contract")
    a = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench_sample_"))
    try:
        cfg = SampleConfig(notes=a.notes, users=a.users, events=a.events, days=a.days)
        t0 = time.perf_counter()
        stats = generate(cfg, out, a.format)
        wall = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
        print(json.dumps({
            "machine": f"{platform.machine()} {platform.python_version()}",
            "format": a.format, "notes": a.notes, "users": a.users, "events": stats["events"],
            "seconds_generate_in_memory": stats["seconds_generate"], "seconds_wall_total": round(wall, 2),
            "events_per_second": round(stats["events"] / wall), "parquet_mib": round(size / 2**20, 1),
        }, indent=2))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
