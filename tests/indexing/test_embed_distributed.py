"""Embedding with several ranks, as real processes: 2 torchrun ranks over gloo write a store byte for
byte equal to 1 rank's; a SIGKILLed run (real process death, found by watching the store's files)
resumes by embedding only the buckets it had not written; local spawned ranks (--num-procs) do the
same as torchrun and pass a rank's bad-input error on."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from indexing.config import EmbedConfig
from indexing.launch import _free_port, embed_store
from indexing.store import open_store
from notellm.contracts import ContractError
from tests.support.kill import run_until_killed
from tests.support.notes import make_notes, write_notes
from tests.support.paths import REPO

pytestmark = pytest.mark.slow
N = 96


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(OMP_NUM_THREADS="1", NOTELLM_LOG_LEVEL="WARNING")   # same threads in every run: same floats
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return write_notes(make_notes(N, seed=5), root / "notes" / "notes.parquet")


def embed_args(model, notes, emb_root, *extra) -> list[str]:
    return ["embed", "--model", str(model), "--notes", str(notes), "--emb-root", str(emb_root),
            "--num-buckets", "16", "--precision", "fp32", "--no-progress", "--max-batch-tokens", "512", *extra]


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)   # the launcher and every rank: never leave ranks behind
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def torchrun(n: int, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
                "--master-port", str(_free_port()), "-m", "indexing.cli", *args])


def result(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout        # one result line per launch, rank 0's
    return json.loads(lines[0])


def vectors(emb_root, model_id) -> tuple[list, np.ndarray]:
    parts = list(open_store(emb_root, model_id).batches())
    return [x for ids, _ in parts for x in ids.to_pylist()], np.concatenate([v for _, v in parts])


def digests(model_dir: Path) -> dict:
    """sha256 of every segment and of _store.json (_stats.json holds timings)."""
    files = sorted(model_dir.rglob("*.parquet")) + [model_dir / "_store.json"]
    return {p.relative_to(model_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory, tiny_encoder_dir, corpus):
    root = tmp_path_factory.mktemp("one")
    out = result(run([sys.executable, "-m", "indexing.cli", *embed_args(tiny_encoder_dir, corpus, root)]))
    assert out["embedded"] == N and out["world_size"] == 1
    return root / out["model_id"]


def test_two_torchrun_ranks_write_the_store_one_rank_writes(tmp_path, tiny_encoder_dir, corpus, one_rank):
    out = result(torchrun(2, *embed_args(tiny_encoder_dir, corpus, tmp_path)))
    assert (out["world_size"], out["embedded"], out["notes"], out["vectors"]) == (2, N, N, N)
    two = tmp_path / out["model_id"]
    assert digests(two) == digests(one_rank) and len(digests(two)) > 10
    stats = json.loads((two / "_stats.json").read_text())
    assert stats["plan_digest"] == json.loads((one_rank / "_stats.json").read_text())["plan_digest"]


def test_sigkilled_run_resumes_with_only_the_missing_buckets(tmp_path, tiny_encoder_dir, corpus, one_rank):
    emb = tmp_path / "emb"
    model_dir = emb / one_rank.name

    def three_buckets_written() -> bool:
        return len(list(model_dir.glob("b*/*-base.parquet"))) >= 3

    cmd = [sys.executable, "-m", "indexing.cli", *embed_args(tiny_encoder_dir, corpus, emb, "--max-batch-notes", "1")]
    code, _ = run_until_killed(cmd, three_buckets_written, tmp_path / "killed", cwd=REPO, env=env())
    assert code == -9
    assert not (model_dir / "_SUCCESS").exists()
    with pytest.raises(ContractError, match="not finalised"):
        open_store(emb, one_rank.name)
    segments = sorted(model_dir.rglob("*.parquet"))
    assert segments and all(not p.name.startswith(".") for p in segments)
    done = sum(pq.read_metadata(p).num_rows for p in segments)     # every final name is a whole segment
    assert 0 < done < N
    out = result(run([sys.executable, "-m", "indexing.cli", *embed_args(tiny_encoder_dir, corpus, emb)]))
    assert (out["embedded"], out["reused"]) == (N - done, done)
    resumed, whole = vectors(emb, one_rank.name), vectors(one_rank.parent, one_rank.name)
    assert resumed[0] == whole[0] and len(resumed[0]) == N
    np.testing.assert_allclose(resumed[1], whole[1], atol=2e-5)   # the killed run cut smaller batches


def test_local_spawned_ranks_match_and_pass_errors_on(tmp_path, tiny_encoder_dir, corpus, one_rank, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)   # one torch thread per rank, as in the 1-rank run
    config = EmbedConfig(num_buckets=16, precision="fp32", progress=False, max_batch_tokens=512)
    stats = embed_store(tiny_encoder_dir, corpus, tmp_path / "emb", config, num_procs=2)
    assert (stats["world_size"], stats["embedded"]) == (2, N)
    assert digests(tmp_path / "emb" / one_rank.name) == digests(one_rank)
    dup = write_notes(make_notes(N, seed=5) + make_notes(3, seed=9), tmp_path / "dup.parquet")
    with pytest.raises(ContractError, match=r"dup.parquet: column 'note_id': \d duplicate note id"):
        embed_store(tiny_encoder_dir, dup, tmp_path / "emb2", config, num_procs=2)
