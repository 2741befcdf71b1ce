"""The nightly job end to end (tiny model): CLI smoke test in subprocesses, and
the Recall@K gate refusing a worse model while CURRENT stays on the old snapshot."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from indexing.embed import EmbedConfig
from indexing.gate import GateConfig, GateFailed
from indexing.pipeline import NightlyConfig, run_nightly
from indexing.snapshot import Snapshot, current_name
from notellm.contracts import PAIRS, POOL, write_table
from notellm.files import sha256_file
from notellm.registry import register
from tests.support.models import tiny_model
from tests.support.notes import make_notes, write_notes
from tests.support.paths import REPO


def cli_inprocess(capsys, *args):
    """The same entry point without a new interpreter (torch import + model load cost seconds)."""
    from indexing.cli import main
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    # In-process, loggers created at import time (DeepSpeed's) still hold pytest's stdout;
    # a real run sends them to stderr (see notellm.cli.main). Keep the result line: exactly one.
    lines = [line for line in out.out.splitlines() if line.startswith("{")]
    assert len(lines) == 1, out.out
    return subprocess.CompletedProcess(args, code, lines[0], out.err)


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "indexing.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"cli {args[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow
def test_cli_publish_info_neighbors_search_rollback(tmp_path, capsys, tiny_encoder_dir):
    model_dir = tiny_encoder_dir
    notes = make_notes(24, seed=4)
    notes_path = write_notes(notes, tmp_path / "notes" / "notes.parquet")
    models_root = tmp_path / "models"
    from notellm.encoder import EncoderConfig
    register(models_root, model_dir, EncoderConfig.from_json(model_dir / "notellm.json").model_id,
             metrics={}, approved=True)
    common = ["--notes", notes_path, "--emb-root", tmp_path / "emb", "--snapshot-root", tmp_path / "idx",
              "--num-buckets", 8, "--no-progress"]
    first = json.loads(cli("publish", "--models-root", models_root, "--date", "2026-11-24", *common).stdout)
    assert first["published"] and first["num_vectors"] == 24 and first["embedded"] == 24
    assert first["manifest_sha256"] == sha256_file(Path(first["path"]) / "manifest.json")

    second = json.loads(cli_inprocess(capsys, "publish", "--model", model_dir, "--date", "2026-11-25", *common).stdout)
    assert second["embedded"] == 0 and second["reused"] == 24          # nothing changed: incremental no-op
    assert current_name(tmp_path / "idx") == second["snapshot"]

    info = json.loads(cli_inprocess(capsys, "info", "--snapshot-root", tmp_path / "idx").stdout)
    assert info["current"] == second["snapshot"] and len(info["snapshots"]) == 2

    out = json.loads(cli_inprocess(capsys, "neighbors", "--snapshot-root", tmp_path / "idx", "--note-id", "n00003",
                                   "-k", 5, "--notes", notes_path).stdout)
    hits = out["results"]
    titles = {n["note_id"]: n["title"] for n in notes}
    assert out["status"] == "ok" and out["snapshot"] == second["snapshot"]
    assert len(hits) == 5 and "n00003" not in [h["note_id"] for h in hits]
    assert all(h["title"] == titles[h["note_id"]] for h in hits)

    # Searching with a note's own title and content finds that note first.
    n = notes[9]
    found = json.loads(cli_inprocess(capsys, "search", "--snapshot-root", tmp_path / "idx", "--text", n["title"],
                                     "--content", n["content"], "--hashtags", ",".join(n["hashtags"]),
                                     "-k", 3).stdout)["results"]
    assert len(found) == 3
    assert found[0]["note_id"] == n["note_id"] and found[0]["score"] == pytest.approx(1.0, abs=1e-4)

    back = json.loads(cli_inprocess(capsys, "rollback", "--snapshot-root", tmp_path / "idx", "--to",
                                    first["snapshot"]).stdout)
    assert back["status"] == "ok" and back["command"] == "rollback"
    assert {k: back[k] for k in ("current", "previous")} == {"current": first["snapshot"],
                                                             "previous": second["snapshot"]}

    bad = cli_inprocess(capsys, "rollback", "--snapshot-root", tmp_path / "idx", "--to", "2020-01-01-nothere")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["status"] == "bad_input" and "does not exist" in json.loads(bad.stdout)["error"]
    gate = cli_inprocess(capsys, "publish", "--model", model_dir, "--date", "2026-11-26", "--min-ann-recall", "1.01",
                         "--set", "ann_queries=24", *common)
    refused = json.loads(gate.stdout)
    assert gate.returncode == 3 and refused["status"] == "gate_refused"
    assert "ANN recall@" in refused["error"] and refused["metrics"]["ann"]["queries"] == 24
    assert current_name(tmp_path / "idx") == first["snapshot"]


@pytest.mark.slow
def test_recall_gate_refuses_a_worse_model_and_keeps_current(tmp_path, tiny_encoder_dir):
    good = tiny_encoder_dir
    worse = tiny_model(tmp_path / "worse", seed=1)
    notes = make_notes(40, seed=8)
    notes_path = write_notes(notes, tmp_path / "notes.parquet")
    root, emb = tmp_path / "idx", tmp_path / "emb"
    cfg = NightlyConfig(embed=EmbedConfig(num_buckets=16, precision="fp32", progress=False),
                        gate=GateConfig(recall_ks=(1, 3)))
    cfg.gate.recall_k = 1
    # Test pairs = each note's nearest neighbour under the good model: its Recall@1 is 1.0.
    from notellm.encoder import NoteEncoder
    enc = NoteEncoder.load(good)
    v = enc.embed_notes(sorted(notes, key=lambda n: n["note_id"]))
    ids = sorted(n["note_id"] for n in notes)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    pairs = [(ids[i], ids[int(sim[i].argmax())]) for i in range(len(ids))]
    write_table(pa.table({"src_note_id": [a for a, _ in pairs], "dst_note_id": [b for _, b in pairs],
                          "score": [1.0] * len(pairs), "n_users": [1] * len(pairs),
                          "rank": pa.array([1] * len(pairs), pa.int32()),
                          "window_start": pa.array([dt.date(2026, 11, 1)] * len(pairs), pa.date32()),
                          "window_end": pa.array([dt.date(2026, 11, 20)] * len(pairs), pa.date32())}),
                tmp_path / "pairs.parquet", PAIRS)
    write_table(pa.table({"note_id": ids}), tmp_path / "pool.parquet", POOL)
    kw = dict(notes_path=notes_path, emb_root=emb, snapshot_root=root, config=cfg,
              pairs_path=tmp_path / "pairs.parquet", pool_path=tmp_path / "pool.parquet")

    first = run_nightly(model_dir=good, date="2026-11-24", **kw)
    live = Snapshot.open(root)
    assert live.info()["metrics"]["related_recall"]["recall"]["1"] == 1.0
    assert live.info()["metrics"]["gate"]["baseline"] is None

    with pytest.raises(GateFailed, match=r"Recall@1 fell from 1.0000 \(recorded in .*\) to"):
        run_nightly(model_dir=worse, date="2026-11-25", **kw)
    assert current_name(root) == first["snapshot"]
    listed = sorted(p.name for p in (root / "snapshots").iterdir() if not p.name.startswith("."))
    assert listed == [first["snapshot"], "CURRENT"]

    # The same model again passes (no drop) and is published with the recorded baseline.
    again = run_nightly(model_dir=good, date="2026-11-25", **kw)
    assert Snapshot.open(root).info()["metrics"]["gate"]["baseline"] == 1.0 and again["published"]


@pytest.mark.slow
def test_nan_model_is_refused_by_the_nightly_run_and_current_stays(tmp_path, tiny_encoder_dir):
    """A diverged model (projection set to NaN) is refused: its embeddings never reach the
    store or a snapshot, and a live snapshot whose recorded recall is NaN is no baseline."""
    from notellm.finite import NonFiniteError
    from tests.support.models import diverged_model

    nan_dir = diverged_model(tiny_encoder_dir, tmp_path / "nan-model")
    notes_path = write_notes(make_notes(30, seed=9), tmp_path / "notes.parquet")
    root, emb = tmp_path / "idx", tmp_path / "emb"
    cfg = NightlyConfig(embed=EmbedConfig(num_buckets=4, precision="fp32", progress=False))
    kw = dict(notes_path=notes_path, emb_root=emb, snapshot_root=root, config=cfg)
    first = run_nightly(model_dir=tiny_encoder_dir, date="2026-11-24", **kw)
    with pytest.raises(NonFiniteError, match="non-finite values"):
        run_nightly(model_dir=nan_dir, date="2026-11-25", **kw)
    assert current_name(root) == first["snapshot"]
    listed = sorted(p.name for p in (root / "snapshots").iterdir() if not p.name.startswith("."))
    assert listed == [first["snapshot"], "CURRENT"]
    nan_id = json.loads((nan_dir / "notellm.json").read_text())["model_id"]
    written = [p.name for p in emb.glob(f"{nan_id}*/**/*") if p.is_file() and p.name != ".lock"]
    assert written == ["_store.json"], f"a diverged model's vectors reached the store: {written}"
