"""Prometheus text exposition (format 0.0.4) for the service, written here rather
than with ``prometheus-client``: four metric families do not justify a dependency,
and the format is a few lines of text.

* ``notellm_serving_requests_total{endpoint,method,status}`` counter
* ``notellm_serving_request_seconds{endpoint}`` histogram (``_bucket``/``_sum``/``_count``)
* ``notellm_serving_snapshot_info{snapshot}`` gauge, 1 for the snapshot being served
* ``notellm_serving_swaps_total`` / ``notellm_serving_refused_total`` counters (from the watcher)

``endpoint`` is the route template (``/neighbors/{note_id}``), never the raw path,
so one label value per route keeps the series count bounded.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict

# Seconds: sub-millisecond flat searches up to slow text-embedding batches.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "notellm_serving"


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    """Request counters and latency histograms, safe to update from the request threads."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS):
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._hist: dict[str, list[int]] = {}
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(endpoint, method, int(status))] += 1
            counts = self._hist.setdefault(endpoint, [0] * len(self.buckets))
            for i, upper in enumerate(self.buckets):
                if seconds <= upper:
                    counts[i] += 1
            self._sum[endpoint] += seconds
            self._count[endpoint] += 1

    def total_requests(self) -> int:
        with self._lock:
            return sum(self._requests.values())

    def render(self, serving: str | None, swaps: int, refused: int) -> str:
        """The exposition text; the watcher's figures are passed in so this class stays watcher-free."""
        with self._lock:
            requests = sorted(self._requests.items())
            hist = {e: (list(c), self._sum[e], self._count[e]) for e, c in sorted(self._hist.items())}
        lines = [f"# HELP {PREFIX}_requests_total HTTP requests by route, method and status code.",
                 f"# TYPE {PREFIX}_requests_total counter"]
        lines += [f'{PREFIX}_requests_total{{endpoint="{_label(e)}",method="{m}",status="{s}"}} {n}'
                  for (e, m, s), n in requests]
        lines += [f"# HELP {PREFIX}_request_seconds Request latency by route (time to the response start).",
                  f"# TYPE {PREFIX}_request_seconds histogram"]
        for endpoint, (counts, total, count) in hist.items():
            ep = _label(endpoint)
            lines += [f'{PREFIX}_request_seconds_bucket{{endpoint="{ep}",le="{_fmt(b)}"}} {c}'
                      for b, c in zip(self.buckets, counts)]
            lines += [f'{PREFIX}_request_seconds_bucket{{endpoint="{ep}",le="+Inf"}} {count}',
                      f'{PREFIX}_request_seconds_sum{{endpoint="{ep}"}} {_fmt(total)}',
                      f'{PREFIX}_request_seconds_count{{endpoint="{ep}"}} {count}']
        lines += [f"# HELP {PREFIX}_snapshot_info The snapshot being served (value 1; none while unhealthy).",
                  f"# TYPE {PREFIX}_snapshot_info gauge"]
        if serving:
            lines.append(f'{PREFIX}_snapshot_info{{snapshot="{_label(serving)}"}} 1')
        lines += [f"# HELP {PREFIX}_swaps_total Snapshot swaps since start.", f"# TYPE {PREFIX}_swaps_total counter",
                  f"{PREFIX}_swaps_total {int(swaps)}",
                  f"# HELP {PREFIX}_refused_total Snapshots refused (corrupted, half-written, unreadable).",
                  f"# TYPE {PREFIX}_refused_total counter", f"{PREFIX}_refused_total {int(refused)}"]
        return "\n".join(lines) + "\n"
