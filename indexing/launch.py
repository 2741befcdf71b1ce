"""Running the embedding ranks: in this process, as N local processes, or under torchrun.

Every path runs the same rank program, :func:`run_rank`: load the encoder
(``cuda:LOCAL_RANK`` with bf16 weights on GPU), rank 0 creates or checks the
store's ``_store.json`` while the others wait (a broadcast in a process group),
every rank brings its buckets (b % world_size == rank) in line with the notes,
the ranks' figures are gathered (``all_gather_object``) and rank 0 finalises.

* :func:`embed_store` (what the pipeline calls): ``num_procs == 1`` runs in this
  process; more spawn that many local processes forming a gloo (CPU) / nccl
  (GPU) process group over a free loopback port.
* ``torchrun --nproc-per-node G [--nnodes N --rdzv-endpoint host:port] -m
  indexing.cli embed ...``: each rank reads RANK / WORLD_SIZE / LOCAL_RANK /
  MASTER_ADDR / MASTER_PORT (:func:`embed_from_env`); rank 0 prints the result.
* Externally launched workers without a process group
  (``embed --rank R --world-size W``): rank 0 prepares, the others poll for the
  store, nobody finalises; ``embed --finalize`` (:func:`finalize_from_notes`)
  then checks every bucket against the notes and marks the store complete.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue as queue_mod
import socket
import time
from pathlib import Path

from indexing.config import EmbedConfig
from indexing.store import StoreInfo, finalize, fold, full_run_floor, list_segments, live_segments, read_store_info
from notellm.contracts import ContractError

log = logging.getLogger(__name__)

GROUP_TIMEOUT = dt.timedelta(minutes=60)


# ---------------------------------------------------------------- errors across ranks


def _describe(exc: BaseException) -> tuple:
    if isinstance(exc, ContractError):
        return ("ContractError", exc.source, exc.column, exc.problem)
    return (type(exc).__name__, str(exc))


def _rebuild(desc: tuple, rank: int) -> Exception:
    if desc[0] == "ContractError":
        return ContractError(*desc[1:])
    if desc[0] in ("ValueError", "ConfigError"):
        return ValueError(desc[1])
    return RuntimeError(f"embedding rank {rank} failed: {desc[0]}: {desc[1]}")


class _Group:
    """The process group of a multi-rank run (gloo on CPU, nccl on GPU)."""

    def __init__(self, rank: int, world_size: int, device):
        import torch
        import torch.distributed as dist
        self.dist = dist
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if os.environ.get("MASTER_PORT") == "0":
            # torchrun --master_port 0 hands port 0 to the workers, whose rendezvous then hangs
            raise RuntimeError("MASTER_PORT=0 with several ranks: pass a real --master-port to the launcher")
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                                timeout=GROUP_TIMEOUT)

    def broadcast(self, obj):
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        out = [None] * self.dist.get_world_size()
        self.dist.all_gather_object(out, obj)
        return out

    def close(self):
        self.dist.destroy_process_group()


# ---------------------------------------------------------------- the rank program


def wait_for_store(model_dir: Path, config: EmbedConfig, timeout: float = 600.0, every: float = 0.2) -> StoreInfo:
    """Workers without a process group: wait for rank 0 to create the store (and the full run)."""
    end = time.monotonic() + timeout
    while True:
        try:
            info = read_store_info(model_dir)
            if config.incremental or full_run_floor(info) is not None:
                return info
        except ContractError:
            pass
        if time.monotonic() > end:
            raise TimeoutError(f"{model_dir}: rank 0 did not prepare the embedding store within {timeout:.0f} s")
        time.sleep(every)


def run_rank(model_dir, notes, emb_root, config: EmbedConfig, rank: int = 0, world_size: int = 1,
             local_rank: int = 0, group: bool = True) -> dict | None:
    """One rank of a run. With ``group`` and several ranks they form a process group and rank 0
    returns the finalised store's stats (the others None); without a group a multi-rank worker
    returns its own figures (rank 0) and nobody finalises."""
    from indexing.embed import combine_stats, embed_rank, load_encoder, prepare_store
    encoder, autocast = load_encoder(model_dir, config.precision, local_rank)
    model_id = encoder.config.model_id
    if not model_id:
        raise ValueError(f"{model_dir}: the model has no model_id in its side-car")
    store_dir = Path(emb_root) / model_id
    pg = _Group(rank, world_size, encoder.device) if group and world_size > 1 else None
    try:
        failure = None
        if rank == 0:
            try:
                prepare_store(store_dir, model_id, encoder.config.dim, config, notes)
            except Exception as exc:   # every rank must hear of it, or they wait forever
                if pg is None:
                    raise
                failure = _describe(exc)
        if pg is not None:
            failure = pg.broadcast(failure)
            if failure:
                raise _rebuild(failure, 0)
            info = read_store_info(store_dir)
        else:
            info = read_store_info(store_dir) if rank == 0 else wait_for_store(store_dir, config)
        try:
            result = ("ok", embed_rank(encoder, notes, info, config, rank, world_size, autocast))
        except Exception as exc:
            if pg is None:
                raise
            result = ("error", _describe(exc))
            own = exc
        parts = pg.gather(result) if pg is not None else [result]
        for r, (kind, payload) in enumerate(parts):
            if kind == "error":
                if r == rank:
                    raise own
                raise _rebuild(payload, r)
        if rank != 0:
            return None
        stats = [p[1] for p in parts]
        if pg is None and world_size > 1:
            return stats[0].as_dict()
        return finalize(info, combine_stats(stats, info.num_buckets))
    finally:
        if pg is not None:
            pg.close()


def embed_from_env(model_dir, notes, emb_root, config: EmbedConfig) -> dict | None:
    """A rank started by torchrun (or any launcher setting RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"launcher environment incomplete: {missing} unset")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return run_rank(model_dir, notes, emb_root, config, rank, world, local_rank, group=True)


def embed_store(model_dir: str | os.PathLike, notes_path: str | os.PathLike, emb_root: str | os.PathLike,
                config: EmbedConfig, num_procs: int = 1) -> dict:
    """Embed ``notes_path`` into the store under ``emb_root`` with ``num_procs`` local ranks and
    finalise it; returns the run's stats (notes, vectors, embedded, reused, deleted, notes_per_s,
    buckets_written, segments_written, bytes_written, compactions, seconds, plan_digest, ...)."""
    if num_procs < 1:
        raise ValueError("num_procs must be >= 1")
    if num_procs == 1:
        return run_rank(model_dir, notes_path, emb_root, config, group=False)
    return _spawn(str(model_dir), str(notes_path), str(emb_root), config, num_procs)



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(rank: int, world: int, port: int, threads: int, args: tuple, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import torch
    torch.set_num_threads(threads)
    try:
        out = run_rank(*args, rank=rank, world_size=world, local_rank=rank, group=True)
        results.put(("done", rank, out))
    except BaseException as exc:
        results.put(("error", rank, _describe(exc)))
        raise SystemExit(1) from None


def _spawn(model_dir: str, notes: str, emb_root: str, config: EmbedConfig, n: int) -> dict:
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // n)
    port = _free_port()
    procs = [ctx.Process(target=_spawned, args=(r, n, port, threads, (model_dir, notes, emb_root, config), results),
                         daemon=True) for r in range(n)]
    for p in procs:
        p.start()
    heard: dict[int, tuple] = {}
    try:
        while len(heard) < n:
            try:
                kind, rank, payload = results.get(timeout=0.5)
                heard[rank] = (kind, payload)
                continue
            except queue_mod.Empty:
                pass
            dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in heard]
            if dead and not _drain(results, heard):
                raise RuntimeError(f"embedding rank(s) {dead} died (exit {[procs[r].exitcode for r in dead]}) "
                                   "without a result; rerun to resume")
    finally:
        for p in procs:
            p.join(timeout=30 if len(heard) == n else 0)
            if p.is_alive():
                p.kill()
                p.join()
    for rank, (kind, payload) in sorted(heard.items()):
        if kind == "error":
            raise _rebuild(payload, rank)
    return heard[0][1]


def _drain(results, heard: dict) -> bool:
    """Pick up messages still in flight after a child exited; True when something arrived."""
    got = False
    try:
        while True:
            kind, rank, payload = results.get(timeout=1.0)
            heard[rank] = (kind, payload)
            got = True
    except queue_mod.Empty:
        return got


# ---------------------------------------------------------------- `embed --finalize`


def finalize_from_notes(model_dir, notes, emb_root) -> dict:
    """After externally launched workers: check every bucket against the notes, then finalise."""
    from indexing.buckets import keys_digest, read_rank_notes
    from indexing.embed import EmbedStats, combine_stats
    from notellm.encoder import SIDECAR, EncoderConfig
    enc = EncoderConfig.from_json(Path(model_dir) / SIDECAR)
    info = read_store_info(Path(emb_root) / enc.model_id)
    if info.model_id != enc.model_id or info.dim != enc.dim:
        raise ContractError(str(info.model_dir), "model_id", f"store of {info.model_id} (d={info.dim}), the model "
                                                             f"is {enc.model_id} (d={enc.dim})")
    mine = read_rank_notes(notes, info.num_buckets, 0, 1, enc.prompt_config)
    stats = EmbedStats(notes=mine.rows_in)
    stale = []
    for b in range(info.num_buckets):
        planned = mine.bucket(b)
        ids, fps = planned.column("note_id").to_pylist(), planned.column("text_sha256").to_pylist()
        state = fold(info, live_segments(list_segments(info, b)))
        if state.column("note_id").to_pylist() != ids or state.column("text_sha256").to_pylist() != fps:
            stale.append(b)
            continue
        stats.vectors += len(ids)
        stats.buckets_verified += 1
        stats.bucket_digests[b] = keys_digest(ids, fps)
    if stale:
        raise ContractError(str(info.model_dir), None, f"{len(stale)} bucket(s) missing or stale, e.g. {stale[:10]}; "
                                                       "rerun the embed workers")
    payload = combine_stats([stats], info.num_buckets)
    payload["finalized_by"] = "embed --finalize"
    return finalize(info, payload)
