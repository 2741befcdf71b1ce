"""The Spark jobs' distributed building blocks: ordered keys without a
single-partition step, shuffle sizing from input bytes, checkpoint modes, and
the folder commit (stage, check, mark, swap; recovery of a killed swap)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from jobs.spark_input import configure_checkpoints, ordered_keys, size_shuffle
from jobs.spark_output import partition_commit
from notellm import contracts, storage
from notellm.storage import LOCAL
from tests.jobs.test_cooccurrence import _pairs_table


def test_ordered_keys_are_unique_in_id_order_over_many_partitions(spark):
    ids = spark.range(5000).selectExpr("lpad(CAST((id * 7919) % 5000 AS STRING), 6, '0') AS note_id").repartition(7)
    keyed = ordered_keys(ids, "note_id", "note_key")
    plan = keyed._jdf.queryExecution().executedPlan().toString()
    assert "rangepartitioning(note_id" in plan and "SinglePartition" not in plan     # many tasks, by id range
    rows = keyed.localCheckpoint().collect()
    by_id = sorted(rows, key=lambda r: r.note_id)
    keys = [r.note_key for r in by_id]
    assert len(set(keys)) == 5000 and keys == sorted(keys)          # unique, and key order = id order


def test_shuffle_is_sized_from_the_input_bytes(spark):
    keys = ("spark.sql.shuffle.partitions", "spark.notellm.shufflePartitionsFixed",
            "spark.sql.adaptive.advisoryPartitionSizeInBytes",
            "spark.sql.adaptive.coalescePartitions.initialPartitionNum")
    before = {k: spark.conf.get(k, None) for k in keys}
    spark.conf.set("spark.notellm.shufflePartitionsFixed", "false")   # the test session fixes 4
    try:
        floor = max(2, spark.sparkContext.defaultParallelism)
        assert size_shuffle(spark, 0, 64) == floor                        # tiny input: the parallelism
        assert size_shuffle(spark, 2**30, 64) == 64                       # 1 GiB x 4 / 64 MiB
        assert spark.conf.get("spark.sql.shuffle.partitions") == "64"
        assert spark.conf.get("spark.sql.adaptive.advisoryPartitionSizeInBytes") == str(64 * 2**20)
        spark.conf.set("spark.notellm.shufflePartitionsFixed", "true")   # the user fixed a count: kept
        spark.conf.set("spark.sql.shuffle.partitions", "5")
        assert size_shuffle(spark, 2**40, 64) == 5
    finally:
        for k, v in before.items():
            spark.conf.unset(k) if v is None else spark.conf.set(k, v)


def test_checkpoint_mode(spark, tmp_path):
    assert configure_checkpoints(spark, "auto", str(tmp_path)) is None          # local master: local checkpoints
    assert configure_checkpoints(spark, "reliable", str(tmp_path)) == f"{tmp_path}/checkpoints"
    assert configure_checkpoints(spark, "local", str(tmp_path)) is None
    with pytest.raises(ValueError, match="checkpoint mode"):
        configure_checkpoints(spark, "sometimes", str(tmp_path))


def test_commit_replaces_the_folder_as_a_unit(spark, tmp_path):
    root = str(tmp_path / "pairs root")
    day = dt.date(2026, 11, 20)
    first = partition_commit(LOCAL, root, day)
    first.write(spark.createDataFrame(_pairs_table(3).to_pandas()), contracts.PAIRS, 3)
    first.publish({"pairs_written": 3})
    part = storage.join(root, "dt=2026-11-20")
    assert contracts.require_success(part)["pairs_written"] == 3
    # A failed check leaves the old partition untouched and removes the staging folder.
    second = partition_commit(LOCAL, root, day)
    with pytest.raises(RuntimeError, match="expected 9 rows"):
        second.write(spark.createDataFrame(_pairs_table(4).to_pandas()), contracts.PAIRS, 9)
    second.abandon()
    assert contracts.require_success(part)["pairs_written"] == 3
    assert LOCAL.children(storage.join(root, "_staging")) == []


def test_recover_restores_a_partition_left_in_trash_by_a_killed_swap(spark, tmp_path):
    """The state a SIGKILL between the swap's two renames leaves (old folder in
    _trash/, no final folder, a staged new one): the next run puts the old one back."""
    root = str(tmp_path / "pairs")
    day = dt.date(2026, 11, 20)
    old = partition_commit(LOCAL, root, day)
    old.write(spark.createDataFrame(_pairs_table(3).to_pandas()), contracts.PAIRS, 3)
    old.publish({"pairs_written": 3})
    killed = partition_commit(LOCAL, root, day)
    killed.write(spark.createDataFrame(_pairs_table(2).to_pandas()), contracts.PAIRS, 2)
    LOCAL.mkdirs(storage.join(root, "_trash"))
    LOCAL.rename(killed.final, killed.trash)                  # first rename done, then the kill
    assert not LOCAL.exists(killed.final)
    nxt = partition_commit(LOCAL, root, day)
    nxt.recover()
    assert contracts.require_success(storage.join(root, "dt=2026-11-20"))["pairs_written"] == 3
    assert LOCAL.children(storage.join(root, "_trash")) == []
    assert LOCAL.children(storage.join(root, "_staging")) == []   # the killed run's staging is dropped


COMMIT_STEPS = ("marked", "old_moved_aside", "renamed", "trash_deleted")


def _folder_bytes(folder: str) -> dict:
    """Data files and stats of a committed folder (what a rerun must reproduce)."""
    base = Path(folder)
    return {p.name: p.read_bytes() for p in sorted(base.iterdir()) if p.suffix == ".parquet" or p.name == "_stats.json"}


@pytest.mark.parametrize("step", COMMIT_STEPS)
def test_sigkill_at_each_commit_step_leaves_old_or_new_partition(spark, tmp_path, step):
    """20 trials per step: a commit of a Spark-written staging folder is SIGKILLed at ``step``.
    Readers then find the complete old or new partition (between the two renames: none, which
    they refuse as missing, never a partial one); the next run's recover + commit converges on
    the bytes of an uninterrupted commit and leaves no staging or trash behind."""
    import functools
    import shutil

    from jobs.spark_input import committed_day_files
    from tests.support.kill import kill_at_fault_point

    root, day = str(tmp_path / "pairs"), dt.date(2026, 11, 20)
    templates = []
    for rows in (3, 5):   # two genuinely Spark-written staged folders, reused by every trial
        staged = partition_commit(LOCAL, str(tmp_path / f"template{rows}"), day)
        staged.write(spark.createDataFrame(_pairs_table(rows).to_pandas()), contracts.PAIRS, rows)
        templates.append((staged.staging, {"pairs_written": rows}))
    part = storage.join(root, "dt=2026-11-20")

    def commit(which: int):
        c = partition_commit(LOCAL, root, day)
        c.recover()
        shutil.copytree(templates[which][0], c.staging)
        return c, templates[which][1]

    c, stats = commit(0)
    c.publish(stats)
    reference = {}
    for which in (0, 1):
        ref_root = str(tmp_path / f"ref{which}")
        r = partition_commit(LOCAL, ref_root, day)
        shutil.copytree(templates[which][0], r.staging)
        reference[which] = _folder_bytes(r.publish(templates[which][1]))
    old = 0
    for _trial in range(20):
        new = 1 - old
        c, stats = commit(new)
        kill_at_fault_point(functools.partial(c.publish, stats), f"folder_commit:{step}", tmp_path / "ready")
        if LOCAL.exists(part):
            seen = contracts.require_success(part)["pairs_written"]
            expected = new if step in ("renamed", "trash_deleted") else old
            assert seen == templates[expected][1]["pairs_written"]
            assert len(committed_day_files(LOCAL, part)) >= 1
        else:
            assert step == "old_moved_aside", "the partition vanished outside the swap window"
        c2, stats2 = commit(new)        # the rerun: recover, stage, commit
        c2.publish(stats2)
        assert _folder_bytes(part) == reference[new]
        assert LOCAL.children(storage.join(root, "_staging")) == []
        assert LOCAL.children(storage.join(root, "_trash")) == []
        old = new
