"""The GPU run's dry mode inputs (issue 18): a tiny prepared dataset and tiny models, so
``scripts/gpu_run.sh dry`` runs the GPU run's whole logic on a CPU in seconds (``make test``).

    python -m evaluation.gpu_dry --out DIR

writes ``DIR/work`` (what the data stages leave for the quality report: NOTES, events,
PostLinks, the two mined partitions' markers and the time split, written through the
contracts, no Spark), ``DIR/tiny-llama`` (a randomly initialised 2-layer Llama with the real
SmolLM2 tokenizer, ``tests/support/models.py``) and ``DIR/tiny-minilm`` (a randomly
initialised 1-layer BERT with all-MiniLM-L6-v2's tokenizer, pooling and normalisation, as a
sentence-transformers folder). Only the sizes are small: the bundle, its parts, the receiving,
the training through ``training.train`` and the evaluation are the real ones.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from evaluation import protocol
from notellm import cli
from notellm.config import option

TOPICS = {"beer": ["hops", "lager", "stout", "yeast"], "coffee": ["espresso", "roast", "grinder", "milk"],
          "bicycles": ["chain", "tyre", "brake", "gears"]}
PER_TOPIC = 20        # questions 0..9 in the training window, 10..19 in the test window


def fixture_notes() -> list[dict]:
    """3 sites x 20 questions; a question's number mod 4 is its sub-topic (the relation to find)."""
    notes = []
    for cat, words in TOPICS.items():
        for i in range(PER_TOPIC):
            w = words[i % 4]
            created = (datetime(2014, 1, 1, tzinfo=timezone.utc) if i < 10
                       else datetime(2017, 1, 1, tzinfo=timezone.utc)) + timedelta(days=i)
            notes.append({"note_id": f"{cat}:{i}", "title": f"How do I choose {w} number {i}?",
                          "content": f"A question about {w} and {cat}, asked on day {i}. " * 2,
                          "hashtags": [w, cat], "category": cat, "created_at": created})
    return notes


def write_fixture(work: Path, seed: int = 0) -> Path:
    """The data stages' outputs the quality report reads, as the adapter, the Spark job and
    the split job leave them (each folder marked); returns ``work``."""
    import pyarrow as pa

    from notellm.contracts import EVENTS, NOTES, PAIRS, POOL, RELATED_LINKS, mark_success, write_table

    rng = random.Random(seed)
    notes = fixture_notes()
    se = work / "se"
    write_table(pa.Table.from_pylist(notes, schema=NOTES.arrow_schema), se / "notes" / "notes.parquet", NOTES)
    events: dict = {}
    for n in notes:
        for k in range(rng.randint(1, 6)):
            t = n["created_at"] + timedelta(hours=k)
            events.setdefault(t.date(), []).append({"user_id": f"u{rng.randint(0, 9)}", "note_id": n["note_id"],
                                                    "event_type": "answer", "event_time": t})
    for day, rows in events.items():
        write_table(pa.Table.from_pylist(rows, schema=EVENTS.arrow_schema),
                    se / "events" / f"dt={day.isoformat()}" / "part-0.parquet", EVENTS)
    links = [{"src_note_id": f"{c}:{i}", "dst_note_id": f"{c}:{i + 4}", "link_type": "linked", "created_at": None}
             for c in TOPICS for i in (10, 11, 12)]
    write_table(pa.Table.from_pylist(links, schema=RELATED_LINKS.arrow_schema),
                se / "related_links" / "related_links.parquet", RELATED_LINKS)
    mark_success(se, {"notes": len(notes), "events": sum(map(len, events.values())), "source": "gpu_dry fixture"})

    def pairs_table(ids) -> pa.Table:
        rows = [{"src_note_id": f"{c}:{i}", "dst_note_id": f"{c}:{j}", "score": 1.0, "n_users": 1, "rank": 1,
                 "window_start": date(2009, 10, 1), "window_end": date(2015, 12, 31)}
                for c in TOPICS for i in ids for j in ids if i != j and (i - j) % 4 == 0]
        return pa.Table.from_pylist(rows, schema=PAIRS.arrow_schema)

    train, test = pairs_table(range(10)), pairs_table(range(10, PER_TOPIC))
    for day, tbl in ((protocol.TRAIN_RUN_DATE, train), (protocol.TEST_RUN_DATE, test)):
        write_table(tbl, work / "pairs" / f"dt={day}" / "pairs.parquet", PAIRS)
        mark_success(work / "pairs" / f"dt={day}", {"pairs_written": tbl.num_rows})
    split = work / "split"
    for name, tbl in (("train_pairs", train), ("test_pairs", test)):
        write_table(tbl, split / name / "pairs.parquet", PAIRS)
        mark_success(split / name, {"rows": tbl.num_rows})
    pool = [n["note_id"] for n in notes if n["created_at"].year >= 2016]
    write_table(pa.Table.from_pylist([{"note_id": p} for p in pool], schema=POOL.arrow_schema),
                split / "pool" / "pool.parquet", POOL)
    mark_success(split / "pool", {"notes": len(pool)})
    mark_success(split, {"counts": {"train_pairs": train.num_rows, "train_notes": 10 * len(TOPICS),
                                    "pool_notes": len(pool)}})
    return work


def tiny_minilm(out_dir: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A randomly initialised 1-layer BERT in all-MiniLM-L6-v2's sentence-transformers layout
    (its tokenizer, module list, mean pooling and normalisation; only the pooling width differs)."""
    import json
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    from notellm.backbone import minilm_dir

    torch.manual_seed(seed)
    src = minilm_dir()
    skip = shutil.ignore_patterns("*.safetensors", "*.bin", "README*", ".*", "__pycache__")
    shutil.copytree(src, out_dir, ignore=lambda d, names: skip(d, names) | ({"config.json"} if Path(d) == src
                                                                            else set()))
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    BertModel(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=2 * hidden, max_position_embeddings=512)).save_pretrained(out_dir)
    pooling = out_dir / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "word_embedding_dimension": hidden}, indent=2))
    return out_dir


@dataclasses.dataclass
class DryConfig:
    """Tiny dataset and models for the GPU run's dry mode (scripts/gpu_run.sh dry)."""

    out: Path = option(help="folder to write work/, tiny-llama/ and tiny-minilm/ into")
    seed: int = option(0, help="seed of the fixture's events and of the random models")


def run(cfg: DryConfig, timer: cli.Timer) -> dict:
    from notellm.backbone import ensure_default_backbone

    out = cfg.out.resolve()
    with timer.phase("data"):
        write_fixture(out / "work", cfg.seed)
    with timer.phase("models"):
        # tests/support/models.py: the suite's tiny Llama (real SmolLM2 tokenizer, random weights)
        from tests.support.models import tiny_llama
        llama = tiny_llama(out / "tiny-llama", ensure_default_backbone(), seed=cfg.seed)
        minilm = tiny_minilm(out / "tiny-minilm", seed=cfg.seed)
    return {"work": str(out / "work"), "backbone": str(llama), "minilm": str(minilm)}


def main(argv=None) -> int:
    return cli.main(run, DryConfig, argv, prog="python -m evaluation.gpu_dry")


if __name__ == "__main__":
    sys.exit(main())
