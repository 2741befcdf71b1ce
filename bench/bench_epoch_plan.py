"""The epoch planner and the prep step at 10^6 and 10^7 synthetic pairs.

    .venv/bin/python bench/bench_epoch_plan.py --n 1000000 10000000

Pairs: co-occurrence shaped: n / 5 notes, each the source of 5 pairs, destinations drawn with
probability ~ popularity rank^-s (``--popularity``; 0 = uniform), a self-pair moved to the next note.
Per n: ``training.epoch_plan.plan_epoch_indices`` (int note indices, a byte flag per note) against the
reference ``notellm.batching.plan_epoch`` on the same pairs as strings, with their batches compared
(they must be equal), and, with ``--prepare``, the whole prep step (``training.prepare.prepare``) on
the pairs written as a PAIRS partition and the notes as a NOTES file (read by batches, cleaned,
notes file, pairs, the plan of epoch 0, manifest). One JSON result line (notellm.cli contract).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from notellm import cli  # noqa: E402
from notellm.config import option  # noqa: E402


@dataclasses.dataclass
class BenchEpochPlanConfig:
    """Epoch planner (int indices vs notellm.batching.plan_epoch) and the prep step at n pairs."""

    n: list[int] = option(default_factory=lambda: [1_000_000, 10_000_000], help="pair counts")
    batch_pairs: int = option(256, help="B pairs per global batch")
    pairs_per_note: int = option(5, help="pairs per source note (notes = n / this)")
    popularity: float = option(0.6, help="destination popularity exponent s (p ~ rank^-s); 0 = uniform")
    seed: int = option(0, help="seed of the data and of the plan")
    reference: bool = option(True, help="also time notellm.batching.plan_epoch on the pairs as strings")
    prepare: bool = option(True, help="also time the whole prep step on the pairs written as Parquet")


def synthetic(n: int, per: int, s: float, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    m = max(2, n // per)
    src = np.repeat(np.arange(m), per)[:n]
    if s > 0:
        weights = np.cumsum(np.arange(1, m + 1, dtype=np.float64) ** -s)
        dst = np.searchsorted(weights / weights[-1], rng.random(n))
        dst = rng.permutation(m)[dst]           # popular notes are not the low ids
    else:
        dst = rng.integers(0, m, n)
    dst = np.where(dst == src, (dst + 1) % m, dst)
    return src, dst, m


def write_inputs(root: Path, src: np.ndarray, dst: np.ndarray, m: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from notellm.contracts import NOTES, PAIRS, mark_success

    ids = pa.array(np.char.add("note-", np.arange(m).astype(str)))
    created = pa.array(np.full(m, np.datetime64("2026-11-01T00:00:00", "us")), pa.timestamp("us", tz="UTC"))
    notes = pa.table({"note_id": ids, "title": pa.array(np.char.add("title ", np.arange(m).astype(str))),
                      "content": pa.array(np.char.add("some content about ", (np.arange(m) % 97).astype(str))),
                      "hashtags": pa.array([["tag"]] * m, pa.list_(pa.string())),
                      "category": pa.array(np.char.add("c", (np.arange(m) % 17).astype(str))),
                      "created_at": created}, schema=NOTES.arrow_schema)
    (root / "notes").mkdir(parents=True)
    pq.write_table(notes, root / "notes" / "notes.parquet")
    part = root / "pairs" / "dt=2026-11-25"
    part.mkdir(parents=True)
    n = len(src)
    day0, day1 = dt.date(2026, 11, 1), dt.date(2026, 11, 25)
    for k, start in enumerate(range(0, n, 1_000_000)):
        sl = slice(start, min(n, start + 1_000_000))
        rows = sl.stop - sl.start
        table = pa.table({"src_note_id": ids.take(pa.array(src[sl])), "dst_note_id": ids.take(pa.array(dst[sl])),
                          "score": pa.array(np.ones(rows)), "n_users": pa.array(np.full(rows, 2), pa.int64()),
                          "rank": pa.array(np.ones(rows, np.int32)), "window_start": pa.array([day0] * rows),
                          "window_end": pa.array([day1] * rows)}, schema=PAIRS.arrow_schema)
        pq.write_table(table, part / f"part-{k:05d}.parquet")
    mark_success(part, {"pairs_written": n})
    return part, root


def one(cfg: BenchEpochPlanConfig, n: int) -> dict:
    from notellm.batching import plan_epoch
    from training.epoch_plan import plan_epoch_indices

    src, dst, m = synthetic(n, cfg.pairs_per_note, cfg.popularity, cfg.seed)
    row = {"n": n, "notes": m, "batch_pairs": cfg.batch_pairs,
           "top_note_degree": int(np.bincount(np.concatenate([src, dst])).max())}
    t = time.perf_counter()
    batches, left = plan_epoch_indices(src, dst, m, cfg.batch_pairs, cfg.seed, 0)
    row["fast_s"] = round(time.perf_counter() - t, 2)
    row["fast_pairs_per_s"] = round(n / row["fast_s"])
    row["batches"], row["left_over"] = len(batches), left
    if cfg.reference:
        name = lambda ids: np.char.add("note-", ids.astype(str)).tolist()
        pairs = list(zip(name(src), name(dst)))
        t = time.perf_counter()
        ref = plan_epoch(pairs, cfg.batch_pairs, cfg.seed, 0)
        row["reference_s"] = round(time.perf_counter() - t, 2)
        row["reference_pairs_per_s"] = round(n / row["reference_s"])
        row["speedup"] = round(row["reference_s"] / row["fast_s"], 2)
        row["equal"] = batches.tolist() == ref.batches and left == ref.left_over
        del pairs, ref
    if cfg.prepare:
        from training.config import PrepareConfig
        from training.prepare import prepare

        with tempfile.TemporaryDirectory() as tmp:
            part, root = write_inputs(Path(tmp), src, dst, m)
            t = time.perf_counter()
            result = prepare(PrepareConfig(pairs=str(part), notes=str(root), out=str(Path(tmp) / "prepared"),
                                           batch_pairs=cfg.batch_pairs, seed=cfg.seed))
            row["prepare_s"] = round(time.perf_counter() - t, 2)
            row["prepare_pairs_per_s"] = round(n / row["prepare_s"])
            row["prepare_pairs_used"] = result["manifest"]["pairs_used"]
    return row


def run(cfg: BenchEpochPlanConfig, timer: cli.Timer) -> dict:
    rows = []
    for n in cfg.n:
        with timer.phase(f"n={n}"):
            rows.append(one(cfg, n))
    return {"rows": rows, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


if __name__ == "__main__":
    sys.exit(cli.main(run, BenchEpochPlanConfig, prog="python bench/bench_epoch_plan.py"))
