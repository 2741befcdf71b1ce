"""Co-occurrence mining: Spark job vs DuckDB running the same scoring SQL.

For each size N: generate N events with ``jobs.sources.sample`` (contract
format, cached under --workdir), run ``python -m jobs.cooccurrence`` (Spark,
local master) and, in a separate process, DuckDB on the same Parquet with the
same ``sql/cooccurrence_score.sql`` (the same two views materialised), check
both outputs are identical, and print events/second, the Spark/DuckDB time
ratio, peak RSS of each and Spark's phase timings.

    flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_cooccurrence.py --events 1000000

One JSON result line on stdout (notellm.cli contract): one row per N under
``"rows"``, each also logged to stderr as it finishes. The DuckDB sides and the
Spark scoring-SQL-only side run in child processes of this same script
(``bench_cooccurrence.py child --config FILE``, settings in ``ChildConfig``,
written next to the outputs), which keep the same contract: the parent reads
their result line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs import sql_template  # noqa: E402
from jobs.config import CooccurrenceConfig as Config  # noqa: E402
from jobs.reference import SCORE_SCALE  # noqa: E402
from jobs.spark_input import MATERIALISED_VIEWS, parquet_files, run_sql  # noqa: E402
from notellm import cli, contracts  # noqa: E402
from notellm.config import option, to_dict  # noqa: E402
from notellm.storage import LOCAL  # noqa: E402

log = logging.getLogger(__name__)

END_DATE = dt.date(2026, 11, 24)
SCRIPT = Path(__file__).resolve()
CHILD_ENGINES = ("duckdb", "straightforward", "sql-only-duckdb", "sql-only-spark")


@dataclasses.dataclass
class BenchCooccurrenceConfig:
    """Co-occurrence mining: Spark job vs DuckDB running the same scoring SQL."""

    events: list[int] = option(default_factory=lambda: [1_000_000], help="sample sizes N (events), one row each")
    workdir: Path = option(REPO / "var" / "bench" / "cooccurrence",
                           help="samples (cached per N) and outputs")
    seed: int = option(7, help="sample generator seed")
    master: str = option("local[2]", help="Spark master of both Spark runs")
    driver_memory: str = option("6g", help="Spark driver memory")
    shuffle_partitions: int = option(0, help="spark.sql.shuffle.partitions (0: the job's default)")
    threads: int = option(2, help="DuckDB threads")
    max_events_per_user: int = option(200, help="events kept per user (the job's cap)")
    max_gap_hours: float = option(24.0, help="largest gap between two co-visits that still counts")
    skip_spark: bool = option(False, help="do not run the Spark job")
    skip_duckdb: bool = option(False, help="do not run DuckDB on the job's scoring SQL")
    sql_only: bool = option(True, help="also time the scoring SQL alone on a warm session/connection of each engine")
    conf: list[str] = option(default_factory=list, split_commas=False,
                             help="extra Spark setting KEY=VALUE for both Spark runs (repeatable), passed as the "
                                  "job's --conf")
    straightforward: bool = option(False, help="also run bench/straightforward_cooccurrence.sql (string ids, "
                                               "generic self-join) in DuckDB: the kind of baseline the issue's "
                                               "target was set against (the issue: 566 s, 20 GB at 10M; here "
                                               "10.5-12.5 s, 1.8-1.9 GB)")
    duckdb_memory_limit: str = option("", help="DuckDB memory_limit for the straightforward run")
    reps: int = option(3, help="scoring-SQL-only repetitions (the first one is cold)")
    cluster: bool = option(False, help="run the Spark job on a standalone cluster on 127.0.0.1 (master + --workers, "
                                       "tests/support/spark_cluster.py), spark-submitted from the packaged code as "
                                       "the DAG does; records every JVM's peak RSS and the spill (event log)")
    workers: int = option(2, help="cluster workers (1 core each)")
    worker_memory: str = option("3g", help="memory each cluster worker offers")
    executor_memory: str = option("2g", help="spark.executor.memory on the cluster")
    cluster_driver_memory: str = option("2g", help="driver memory of the cluster run (spark-submit, client mode)")

    def validate(self) -> None:
        if not self.events or min(self.events) < 1:
            raise ValueError("--events needs at least one size >= 1")
        if self.reps < 1 or self.threads < 1:
            raise ValueError("--reps and --threads must be >= 1")
        bad = [c for c in self.conf if "=" not in c]
        if bad:
            raise ValueError(f"--conf expects KEY=VALUE, got {bad}")


@dataclasses.dataclass
class ChildConfig:
    """Internal: one engine's side of the benchmark in its own process (a clean peak-memory figure)."""

    engine: str = option(help="which side to run", choices=CHILD_ENGINES)
    out_dir: Path = option(help="the size's output folder (scoring_events.parquet is written / read here)")
    events_root: Path | None = option(None, help="EVENTS root (duckdb, straightforward)")
    notes: Path | None = option(None, help="NOTES file (duckdb, straightforward)")
    run_date: str = option(END_DATE.isoformat(), help="last day of the window, YYYY-MM-DD")
    threads: int = option(2, help="DuckDB threads")
    max_events_per_user: int = option(200, help="events kept per user")
    max_gap_hours: float = option(24.0, help="largest gap between two co-visits that still counts")
    duckdb_memory_limit: str = option("", help="DuckDB memory_limit (straightforward)")
    reps: int = option(3, help="scoring-SQL-only repetitions")
    master: str = option("local[2]", help="Spark master (sql-only-spark)")
    driver_memory: str = option("6g", help="Spark driver memory (sql-only-spark)")
    shuffle_partitions: int = option(0, help="spark.sql.shuffle.partitions (0: default)")
    conf: list[str] = option(default_factory=list, split_commas=False, help="extra Spark settings KEY=VALUE")

    def validate(self) -> None:
        if self.engine in ("duckdb", "straightforward") and (self.events_root is None or self.notes is None):
            raise ValueError(f"engine {self.engine} needs events_root and notes")


def generate(workdir: Path, events: int, seed: int) -> Path:
    root = workdir / f"sample-{events}"
    if (root / "notes" / "notes.parquet").exists():
        return root
    notes, users = max(1000, events // 50), max(500, events // 100)
    subprocess.run([sys.executable, "-m", "jobs.sources.sample", "--out", str(root), "--notes", str(notes),
                    "--users", str(users), "--events", str(events), "--days", "7",
                    "--end-date", END_DATE.isoformat(), "--seed", str(seed), "--format", "contract"],
                   cwd=REPO, check=True)
    return root


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            total += int(open(f"/proc/{p}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_child(cmd: list[str]) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall s, peak resident bytes of its whole process
    tree, sampled every 0.2 s (the Spark JVM is a grandchild), stdout).
    Output goes to temporary files, not pipes, so a chatty child cannot block."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err, text=True,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return wall, peak, stdout


def child_command(cfg: ChildConfig) -> list[str]:
    """This script as a child: its settings in a JSON file beside the outputs (kept: the exact settings)."""
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.out_dir / f"child-{cfg.engine}.json"
    path.write_text(json.dumps(to_dict(cfg), indent=1))
    return [sys.executable, str(SCRIPT), "child", "--config", str(path)]


def run_engine(cfg: ChildConfig) -> tuple[float, int, dict]:
    """Run one child; (wall s, peak RSS bytes, its result line)."""
    wall, rss, stdout = run_child(child_command(cfg))
    return wall, rss, cli.result_line(stdout)


def _duckdb_window(args: ChildConfig):
    """The DuckDB children's common start: config, connection (threads, UTC,
    spill folder), the window's event files, used types and [start, end)."""
    import duckdb

    cfg = Config(events=Path(args.events_root), notes=Path(args.notes), out=Path(args.out_dir),
                 quarantine_out=Path(args.out_dir), run_date=dt.date.fromisoformat(args.run_date),
                 max_events_per_user=args.max_events_per_user, max_gap_hours=args.max_gap_hours)
    con = duckdb.connect()
    con.execute(f"SET threads={args.threads}")
    con.execute("SET TimeZone='UTC'")
    con.execute(f"SET temp_directory='{args.out_dir}/duckdb.tmp'")
    files = [e.uri for d in cfg.window_days_list
             for e in parquet_files(LOCAL, str(contracts.partition_dir(Path(cfg.events), d)))]
    used = sorted(set(cfg.view_types) | set(cfg.click_types))
    start = f"{cfg.window_start.isoformat()} 00:00:00+00"
    end = f"{(cfg.run_date + dt.timedelta(days=1)).isoformat()} 00:00:00+00"
    return cfg, con, files, used, start, end


def duckdb_child(args: ChildConfig) -> dict:
    """Runs in its own process: DuckDB with the same scoring SQL."""
    cfg, con, files, used, start, end = _duckdb_window(args)
    t0 = time.perf_counter()
    # DuckDB twin of sql/events_classify.sql's dense keys (contract input: no malformed rows).
    con.execute(f"CREATE TEMP TABLE note_keys AS SELECT note_id, CAST(ROW_NUMBER() OVER (ORDER BY note_id) AS BIGINT)"
                f" AS note_key FROM (SELECT DISTINCT note_id FROM read_parquet('{cfg.notes}'))")
    con.execute(f"""CREATE TEMP VIEW valid_events AS SELECT e.user_id, k.note_key, e.event_time, e.event_type
        FROM read_parquet({files!r}) e JOIN note_keys k ON k.note_id = e.note_id
        WHERE e.user_id IS NOT NULL AND trim(e.user_id) <> '' AND e.event_time >= TIMESTAMPTZ '{start}'
          AND e.event_time < TIMESTAMPTZ '{end}' AND e.event_type IN ({sql_template.literal('t', used)})""")
    con.execute("CREATE TEMP TABLE user_keys AS SELECT user_id, CAST(ROW_NUMBER() OVER (ORDER BY user_id) AS BIGINT)"
                " AS user_key FROM (SELECT DISTINCT user_id FROM valid_events)")
    con.execute("CREATE TEMP VIEW scoring_events AS SELECT u.user_key, e.note_key, epoch_us(e.event_time) AS event_us,"
                " e.event_type FROM valid_events e JOIN user_keys u ON u.user_id = e.user_id")
    t_prep = time.perf_counter() - t0
    run_sql(con, sql_template.load("cooccurrence_score.sql", cfg.score_params()))   # the job's runner
    candidates = con.execute("SELECT COUNT(*) FROM cooc_pair_candidates").fetchone()[0]
    out = Path(args.out_dir) / "duckdb_pairs.parquet"
    con.execute(f"""COPY (SELECT s.note_id AS src_note_id, d.note_id AS dst_note_id,
                          CAST(r.score_units AS DOUBLE) / {SCORE_SCALE} AS score, r.n_users,
                          CAST(r.pair_rank AS INTEGER) AS rank
                   FROM cooc_related r JOIN note_keys s ON s.note_key = r.src_key
                   JOIN note_keys d ON d.note_key = r.dst_key) TO '{out}' (FORMAT parquet)""")
    total = time.perf_counter() - t0
    # Untimed: the scoring input with dense keys, for the scoring-SQL-only comparison.
    con.execute(f"COPY (SELECT * FROM scoring_events) TO '{Path(args.out_dir) / 'scoring_events.parquet'}' "
                f"(FORMAT parquet)")
    return {"total_s": total, "prep_s": t_prep, "candidate_pairs": candidates}


def straightforward_child(args: ChildConfig) -> dict:
    """Runs in its own process: DuckDB with the straightforward SQL
    (bench/straightforward_cooccurrence.sql: string ids, a generic per-user
    self-join), the baseline the issue's target was stated against."""
    cfg, con, files, used, start, end = _duckdb_window(args)
    t0 = time.perf_counter()
    if args.duckdb_memory_limit:
        con.execute(f"SET memory_limit='{args.duckdb_memory_limit}'")
    con.execute(f"""CREATE TEMP VIEW window_events AS
        SELECT e.user_id, e.note_id, epoch_us(e.event_time) AS event_us, e.event_type
        FROM read_parquet({files!r}) e SEMI JOIN read_parquet('{cfg.notes}') n ON n.note_id = e.note_id
        WHERE e.user_id IS NOT NULL AND trim(e.user_id) <> '' AND e.event_time >= TIMESTAMPTZ '{start}'
          AND e.event_time < TIMESTAMPTZ '{end}' AND e.event_type IN ({sql_template.literal('t', used)})""")
    text = (SCRIPT.parent / "straightforward_cooccurrence.sql").read_text()
    for statement in sql_template.render(text, cfg.score_params()):
        con.execute(statement)
    out = Path(args.out_dir) / "straightforward_pairs.parquet"
    con.execute(f"""COPY (SELECT src_note_id, dst_note_id, CAST(score_units AS DOUBLE) / {SCORE_SCALE} AS score,
                          n_users, CAST(pair_rank AS INTEGER) AS rank FROM straightforward_related)
                   TO '{out}' (FORMAT parquet)""")
    return {"total_s": time.perf_counter() - t0}


RELATED_CHECK = "SELECT COUNT(*) AS n, SUM(pair_rank) AS s, SUM(score_units % 1000003) AS h FROM cooc_related"


def sql_only_child(args: ChildConfig) -> dict:
    """Runs in its own process: the scoring SQL alone, on one engine, from the
    same in-memory scoring_events (dense keys), ``--reps`` times in one warm
    session/connection; the same two views are materialised on both engines
    and cooc_related is fully computed (count + checksums). Prints the times."""
    cfg = Config(events=Path("."), notes=Path("."), out=Path("."), quarantine_out=Path("."),
                 run_date=END_DATE, max_events_per_user=args.max_events_per_user, max_gap_hours=args.max_gap_hours)
    statements = sql_template.load("cooccurrence_score.sql", cfg.score_params())
    source = str(Path(args.out_dir) / "scoring_events.parquet")
    times, check = [], None
    if args.engine == "sql-only-duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads={args.threads}")
        con.execute(f"CREATE TEMP TABLE scoring_events AS SELECT * FROM read_parquet('{source}')")
        for _ in range(args.reps):
            t = time.perf_counter()
            run_sql(con, statements)
            check = con.execute(RELATED_CHECK).fetchone()
            times.append(time.perf_counter() - t)
            for view in MATERIALISED_VIEWS:
                con.execute(f"DROP TABLE {view}")
    else:
        from jobs.spark_input import checkpoint_view, release
        from jobs.spark_session import build_spark

        spark = build_spark("bench-sql-only", args.master, args.shuffle_partitions or None, args.driver_memory,
                            dict(c.split("=", 1) for c in args.conf))
        spark.read.parquet(source).createOrReplaceTempView("scoring_events")
        held = [checkpoint_view(spark, "scoring_events")]
        for _ in range(args.reps):
            t = time.perf_counter()
            frames = run_sql(spark, statements)
            row = spark.sql(RELATED_CHECK).collect()[0]
            check = (row["n"], row["s"], row["h"])
            times.append(time.perf_counter() - t)
            for df in frames:
                release(df)
        for df in held:
            release(df)
        spark.stop()
    return {"times_s": [round(x, 3) for x in times], "check": [int(x or 0) for x in check]}


def _jvm_roles(cluster, submit_pid: int) -> dict[int, str]:
    """pid -> role (driver, master, worker, executor) of every JVM of the cluster run."""
    from tests.support.spark_cluster import EXECUTOR_CLASS, _children, _cmdline

    roles, todo = {}, [(submit_pid, "driver")] + [(p.pid, n.split("-")[0]) for n, p in cluster.procs]
    while todo:
        pid, role = todo.pop()
        line = _cmdline(pid)
        if "java" in line.split(" ", 1)[0]:
            roles[pid] = "executor" if EXECUTOR_CLASS in line else role
        todo.extend((c, role) for c in _children(pid))
    return roles


def _rss(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def event_log_metrics(log_dir: Path) -> dict:
    """Spill and shuffle totals from the Spark event log (SparkListenerTaskEnd task metrics)."""
    spilled_mem = spilled_disk = 0
    shuffle_by_stage: dict[int, int] = {}
    for path in sorted(p for p in log_dir.rglob("*") if p.is_file()):
        with open(path, errors="replace") as f:
            for line in f:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                event = json.loads(line)
                metrics = event.get("Task Metrics") or {}
                spilled_mem += metrics.get("Memory Bytes Spilled", 0)
                spilled_disk += metrics.get("Disk Bytes Spilled", 0)
                written = (metrics.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0)
                stage = event["Stage ID"]
                shuffle_by_stage[stage] = shuffle_by_stage.get(stage, 0) + written
    return {"memory_bytes_spilled": spilled_mem, "disk_bytes_spilled": spilled_disk,
            "shuffle_bytes_written": sum(shuffle_by_stage.values()),
            "largest_stage_shuffle_bytes": max(shuffle_by_stage.values(), default=0)}


def cluster_job(args: BenchCooccurrenceConfig, data: Path, out: Path, common: list[str]) -> dict:
    """The job spark-submitted from the packaged code to a fresh standalone cluster."""
    from jobs.package import build
    from tests.support.spark_cluster import StandaloneCluster

    package = build(out / "package")
    events_log = out / "eventlog"
    shutil.rmtree(events_log, ignore_errors=True)
    events_log.mkdir(parents=True)
    cluster = StandaloneCluster(out / "cluster", workers=args.workers, cores=1, memory=args.worker_memory).start()
    try:
        job_args = ["--events", "file://" + str(data / "events"), "--notes",
                    "file://" + str(data / "notes" / "notes.parquet"), "--out", "file://" + str(out / "pairs"),
                    "--quarantine-out", "file://" + str(out / "quarantine"), "--run-date", END_DATE.isoformat(),
                    *common]
        conf = {"spark.executor.memory": args.executor_memory, "spark.driver.memory": args.cluster_driver_memory,
                "spark.eventLog.enabled": "true", "spark.eventLog.dir": "file://" + str(events_log),
                "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false",
                **dict(c.split("=", 1) for c in args.conf)}
        cmd = cluster.submit_command(package, "cooccurrence", job_args, conf)
        peaks: dict[int, int] = {}
        roles: dict[int, str] = {}
        with tempfile.TemporaryFile("w+") as stdout, open(out / "submit.stderr", "w") as stderr:
            t = time.perf_counter()
            proc = subprocess.Popen(cmd, env=cluster.env, cwd=out, stdout=stdout, stderr=stderr, text=True)
            while proc.poll() is None:
                roles.update(_jvm_roles(cluster, proc.pid))
                for pid in roles:
                    peaks[pid] = max(peaks.get(pid, 0), _rss(pid))
                time.sleep(0.5)
            wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"cluster job failed ({proc.returncode}); see {out / 'submit.stderr'}")
    finally:
        cluster.stop()
    by_role: dict[str, float] = {}
    for pid, role in roles.items():
        by_role[role] = max(by_role.get(role, 0.0), round(peaks.get(pid, 0) / 2**30, 2))
    return {"wall_s": wall, "peak_rss_gb_by_role": by_role, "jvms": len(roles),
            **event_log_metrics(events_log)}


def same_pairs(spark_part: Path, duck_file: Path) -> tuple[bool, int, int]:
    import pyarrow.parquet as pq

    cols = ["src_note_id", "dst_note_id", "score", "n_users", "rank"]
    keys = [("src_note_id", "ascending"), ("rank", "ascending")]
    a = contracts.read_table(spark_part, contracts.PAIRS).select(cols).sort_by(keys)
    b = pq.read_table(duck_file).select(cols).sort_by(keys)
    b = b.cast(a.schema)
    return a.equals(b), a.num_rows, b.num_rows


def bench(args: BenchCooccurrenceConfig, n: int) -> dict:
    import pyarrow.parquet as pq

    data = generate(args.workdir, n, args.seed)
    out = args.workdir / f"out-{n}"
    events_in = sum(pq.ParquetFile(e.uri).metadata.num_rows for e in parquet_files(LOCAL, str(data / "events")))
    common = ["--max-events-per-user", str(args.max_events_per_user), "--max-gap-hours", str(args.max_gap_hours)]
    result = {"events": events_in, "master": args.master}
    child = {"out_dir": out, "events_root": data / "events", "notes": data / "notes" / "notes.parquet",
             "run_date": END_DATE.isoformat(), "threads": args.threads,
             "max_events_per_user": args.max_events_per_user, "max_gap_hours": args.max_gap_hours,
             "duckdb_memory_limit": args.duckdb_memory_limit, "reps": args.reps, "master": args.master,
             "driver_memory": args.driver_memory, "shuffle_partitions": args.shuffle_partitions,
             "conf": list(args.conf)}
    if not args.skip_spark and args.cluster:
        shutil.rmtree(out / "pairs", ignore_errors=True)
        run = cluster_job(args, data, out, common)
        stats = json.loads((out / "pairs" / f"dt={END_DATE}" / "_stats.json").read_text())
        result["master"] = f"standalone, {args.workers} workers x 1 core, executors {args.executor_memory}"
        result["spark"] = {"wall_s": round(run["wall_s"], 1), "job_s": stats["timings"]["total_s"],
                           "peak_rss_gb": max(run["peak_rss_gb_by_role"].values()),
                           "peak_rss_gb_by_role": run["peak_rss_gb_by_role"],
                           "events_per_s": round(events_in / run["wall_s"]), "phases": stats["timings"],
                           "shuffle_partitions": stats["spark"]["shuffle_partitions"],
                           "input_bytes": stats["inputs"]["input_bytes"],
                           **{k: run[k] for k in ("memory_bytes_spilled", "disk_bytes_spilled",
                                                  "shuffle_bytes_written", "largest_stage_shuffle_bytes")},
                           "used": stats["used"], "capped": stats["capped"], "users": stats["users"],
                           "candidate_pairs": stats["candidate_pairs"], "pairs_written": stats["pairs_written"]}
    elif not args.skip_spark:
        cmd = [sys.executable, "-m", "jobs.cooccurrence", "--events", str(data / "events"), "--notes",
               str(data / "notes" / "notes.parquet"), "--out", str(out / "pairs"), "--quarantine-out",
               str(out / "quarantine"), "--run-date", END_DATE.isoformat(), "--master", args.master,
               "--driver-memory", args.driver_memory, *common]
        if args.shuffle_partitions:
            cmd += ["--shuffle-partitions", str(args.shuffle_partitions)]
        cmd += ["--conf", *args.conf] if args.conf else []
        wall, rss, _ = run_child(cmd)
        stats = json.loads((out / "pairs" / f"dt={END_DATE}" / "_stats.json").read_text())
        result["spark"] = {"wall_s": round(wall, 1), "job_s": stats["timings"]["total_s"],
                           "peak_rss_gb": round(rss / 2**30, 2),
                           "events_per_s": round(events_in / wall), "phases": stats["timings"],
                           "used": stats["used"], "capped": stats["capped"], "users": stats["users"],
                           "candidate_pairs": stats["candidate_pairs"], "pairs_written": stats["pairs_written"]}
    if not args.skip_duckdb:
        wall, rss, inner = run_engine(ChildConfig(engine="duckdb", **child))
        result["duckdb"] = {"wall_s": round(wall, 1), "sql_s": round(inner["total_s"], 1),
                            "peak_rss_gb": round(rss / 2**30, 2), "events_per_s": round(events_in / wall),
                            "candidate_pairs": inner["candidate_pairs"]}
    if args.straightforward:
        wall, rss, _ = run_engine(ChildConfig(engine="straightforward", **child))
        result["duckdb_straightforward"] = {"wall_s": round(wall, 1), "peak_rss_gb": round(rss / 2**30, 2),
                                            "events_per_s": round(events_in / wall)}
    if args.sql_only and (out / "scoring_events.parquet").exists():
        sql_only = {}
        for engine in ("duckdb", "spark"):
            _, rss, inner = run_engine(ChildConfig(engine=f"sql-only-{engine}", **child))
            sql_only[engine] = {"times_s": inner["times_s"], "warm_s": min(inner["times_s"][1:] or inner["times_s"]),
                                "peak_rss_gb": round(rss / 2**30, 2), "check": inner["check"]}
        sql_only["same_result"] = sql_only["spark"]["check"] == sql_only["duckdb"]["check"]
        sql_only["spark_over_duckdb_warm"] = round(sql_only["spark"]["warm_s"] / sql_only["duckdb"]["warm_s"], 2)
        result["scoring_sql_only"] = sql_only
    if "spark" in result and "duckdb" in result:
        result["spark_over_duckdb"] = round(result["spark"]["wall_s"] / result["duckdb"]["wall_s"], 2)
        same, n_spark, n_duck = same_pairs(out / "pairs" / f"dt={END_DATE}", out / "duckdb_pairs.parquet")
        result["identical_output"] = same
        if not same:
            result["rows"] = [n_spark, n_duck]
    if "spark" in result and "duckdb_straightforward" in result:
        result["spark_over_duckdb_straightforward"] = round(
            result["spark"]["wall_s"] / result["duckdb_straightforward"]["wall_s"], 2)
        same, n_spark, n_ref = same_pairs(out / "pairs" / f"dt={END_DATE}", out / "straightforward_pairs.parquet")
        result["identical_output_straightforward"] = same
        if not same:
            result["rows_straightforward"] = [n_spark, n_ref]
    return result


def run(args: BenchCooccurrenceConfig, timer: cli.Timer) -> dict:
    log.info("co-occurrence bench %s UTC, %s cpus", f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}",
             os.cpu_count())
    rows = []
    for n in args.events:
        with timer.phase(f"events_{n}"):
            row = bench(args, n)
        log.info("%s", json.dumps(row, indent=1))
        rows.append(row)
    return {"rows": rows, "cpus": os.cpu_count()}


CHILDREN = {"duckdb": duckdb_child, "straightforward": straightforward_child,
            "sql-only-duckdb": sql_only_child, "sql-only-spark": sql_only_child}


def run_child_side(args: ChildConfig, timer: cli.Timer) -> dict:
    with timer.phase(args.engine):
        return {"engine": args.engine, **CHILDREN[args.engine](args)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["child"]:   # internal: one engine's side in its own process
        return cli.main(run_child_side, ChildConfig, argv=argv[1:], prog="bench/bench_cooccurrence.py child")
    return cli.main(run, BenchCooccurrenceConfig, argv=argv, prog="bench/bench_cooccurrence.py")


if __name__ == "__main__":
    sys.exit(main())
