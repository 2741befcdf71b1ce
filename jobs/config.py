"""The settings of every ``jobs/`` command, each defined once.

One dataclass per CLI (``python -m jobs.<x> --help`` is generated from it by
:mod:`notellm.config`); the DAGs read their Param defaults and descriptions
from the same classes with :func:`notellm.config.defaults` / ``help_of``.
Standard library and ``notellm.config`` only: DAG files import this module at
parse time, without pyspark or pyarrow.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from notellm.config import ConfigError, option
from notellm.timestamps import EARLIEST, LATEST_SKEW_DAYS, window_from

REPO = Path(__file__).resolve().parents[1]

# The known event types; notellm.contracts.EVENT_TYPES must be the same tuple
# (checked by tests/jobs/test_cli.py; that module needs pyarrow, this one must not).
EVENT_TYPES = ("impression", "view", "click", "ask", "answer", "comment", "favourite", "rate")
ENGAGEMENT_TYPES = ("ask", "answer", "comment", "favourite", "rate")
SAMPLE_END_DATE = date(2026, 11, 24)
SAMPLE_FORMATS = ("contract", "landing")


def as_date(value: date | str, name: str) -> date:
    """A ``YYYY-MM-DD`` setting as a date (a ConfigError, i.e. bad input, otherwise)."""
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{name}: not a YYYY-MM-DD date: {value!r}") from None


def event_types(value, name: str) -> tuple[str, ...]:
    """A comma- or space-separated list of event types as a tuple (``"view,click"`` or a list)."""
    items = [value] if isinstance(value, str) else list(value)
    return tuple(t.strip() for item in items for t in str(item).split(",") if t.strip())


def _set(cfg, name: str, value) -> None:
    object.__setattr__(cfg, name, value)   # frozen dataclasses normalise in __post_init__


def _uris(cfg, *names: str) -> None:
    """Data-path settings as URI strings (``hdfs://...``, ``s3a://...``, ``file:///...`` or a plain path)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None:
            if str(value).strip() == "":
                raise ConfigError(f"{name}: empty path")
            _set(cfg, name, str(value))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparkOptions:
    """Where and how a Spark job runs (ignored under spark-submit, which chose them)."""

    master: str = option("local[*]", help="Spark master (local mode unless launched by spark-submit)")
    shuffle_partitions: int | None = option(None, help="spark.sql.shuffle.partitions (null = sized from the "
                                                       "input bytes; AQE coalesces small partitions)")
    shuffle_partition_mb: int = option(64, help="advisory shuffle partition size in MiB (AQE's target; with "
                                                "null shuffle_partitions it also sizes the initial count)")
    driver_memory: str = option("4g", help="driver JVM memory; local mode only (the JVM started by this process)")
    conf: list[str] = option(default_factory=list, split_commas=False,
                             help="extra Spark settings KEY=VALUE (repeat the flag), applied after the job's defaults")

    def spark_conf(self) -> dict[str, str]:
        out = {}
        for item in self.conf:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"conf: expected KEY=VALUE, got {item!r}")
            out[key.strip()] = value
        return out


# --------------------------------------------------------------------------- co-occurrence mining


@dataclasses.dataclass(frozen=True, kw_only=True)
class CooccurrenceConfig(SparkOptions):
    """Co-occurrence mining: click logs -> related-note pairs (NoteLLM, section 4.1)."""

    events: str = option(help="events root (URI or path) with dt=YYYY-MM-DD/*.parquet (contract or landing files)")
    notes: str = option(help="notes Parquet file or directory (NOTES contract)")
    out: str = option(help="pairs root; writes <out>/dt=<run date>/")
    quarantine_out: str = option(help="quarantine root; writes <root>/dt=<run date>/")
    run_date: date | str = option(help="last day of the window (UTC), YYYY-MM-DD")
    window_days: int = option(7, help="days of click log ending at the run date")
    upper: float = option(30.0, help="drop candidates scoring above u")
    lower: float = option(0.01, help="drop candidates scoring below l")
    top: int = option(10, help="related notes kept per source note (t)")
    view_types: tuple[str, ...] = option(("view", "click"), help="event types that count as viewing A "
                                                                 "(comma-separated)")
    click_types: tuple[str, ...] = option(("click",), help="event types that count as clicking B (comma-separated)")
    engagement: bool = option(False, help=f"public engagement data: view = click = {','.join(ENGAGEMENT_TYPES)} "
                                          "(overrides the two type lists)")
    max_events_per_user: int = option(200, help="cap on the events per user and window guarding the "
                                                "self-join (0 = none)")
    max_gap_hours: float = option(24.0, help="max hours from view A to click B (0 = the window)")
    allow_missing_days: bool = option(False, help="accept days of the window without files")
    output_rows_per_file: int = option(1_000_000, help="pairs and quarantine rows per output file (files are "
                                                       "ranges of source note ids, so readers prune by footer)")
    checkpoint: str = option("auto", choices=("auto", "local", "reliable"),
                             help="where materialised steps are kept: local = executor storage (a lost executor "
                                  "fails the job), reliable = Parquet under work_dir, auto = local on a local "
                                  "master, reliable on a cluster")
    work_dir: str | None = option(None, help="scratch folder every executor reaches (null = <out>/_work); "
                                             "removed after a successful run")

    # The settings recorded as "params" in _stats.json (what changes the pairs).
    PARAMS = ("window_days", "upper", "lower", "top", "view_types", "click_types", "max_events_per_user",
              "max_gap_hours", "allow_missing_days")

    def __post_init__(self) -> None:
        _uris(self, "events", "notes", "out", "quarantine_out", "work_dir")
        _set(self, "run_date", as_date(self.run_date, "run_date"))
        view, click = event_types(self.view_types, "view_types"), event_types(self.click_types, "click_types")
        if self.engagement:
            view = click = ENGAGEMENT_TYPES
        _set(self, "view_types", view)
        _set(self, "click_types", click)

    @property
    def window_start(self) -> date:
        return self.run_date - timedelta(days=self.window_days - 1)

    @property
    def window_days_list(self) -> list[date]:
        return [self.window_start + timedelta(days=i) for i in range(self.window_days)]

    @property
    def max_gap_us(self) -> int:
        if self.max_gap_hours <= 0:
            # The window bounds every gap; one extra day keeps all pairs in two buckets.
            return (self.window_days + 1) * 86_400_000_000
        return int(round(self.max_gap_hours * 3_600_000_000))

    def params(self) -> dict:
        return {k: getattr(self, k) for k in self.PARAMS}

    def score_params(self) -> dict:
        """The parameters of ``sql/cooccurrence_score.sql``."""
        from jobs.reference import SCORE_SCALE, bound_units  # standard library only

        return {
            "view_types": list(self.view_types),
            "click_types": list(self.click_types),
            "max_events_per_user": self.max_events_per_user or 2 ** 62,
            "max_gap_us": self.max_gap_us,
            "score_scale": SCORE_SCALE,
            "lower_units": bound_units(self.lower),
            "upper_units": bound_units(self.upper),
            "top": self.top,
        }

    def validate(self) -> None:
        if self.window_days < 1:
            raise ValueError(f"--window-days must be >= 1, got {self.window_days}")
        if self.top < 1:
            raise ValueError(f"--top must be >= 1, got {self.top}")
        if not 0 <= self.lower <= self.upper:
            raise ValueError(f"need 0 <= --lower <= --upper, got lower={self.lower} upper={self.upper}")
        if self.output_rows_per_file < 1:
            raise ValueError(f"--output-rows-per-file must be >= 1, got {self.output_rows_per_file}")
        if self.shuffle_partition_mb < 1:
            raise ValueError(f"--shuffle-partition-mb must be >= 1, got {self.shuffle_partition_mb}")
        if self.max_events_per_user < 0 or self.max_gap_hours < 0:
            raise ValueError("--max-events-per-user and --max-gap-hours must be >= 0 (0 = off)")
        if self.max_gap_hours and self.max_gap_us < 1_000_000:
            raise ValueError(f"--max-gap-hours must be at least one second, got {self.max_gap_hours}")
        for flag, types in (("--view-types", self.view_types), ("--click-types", self.click_types)):
            unknown = sorted(set(types) - set(EVENT_TYPES))
            if not types or unknown:
                raise ValueError(f"{flag}: unknown or empty event types {unknown or list(types)}; "
                                 f"known: {', '.join(EVENT_TYPES)}")
        self.spark_conf()


# --------------------------------------------------------------------------- split


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitConfig(SparkOptions):
    """Training and test sets from mined pairs, as in the NoteLLM evaluation."""

    pairs: str = option(help="mined pairs root (dt=YYYY-MM-DD partitions)")
    train_date: date | str = option(help="run date of the mined train partition, YYYY-MM-DD")
    test_date: date | str = option(help="run date of the mined test partition, YYYY-MM-DD")
    notes: str = option(help="notes Parquet file or directory (NOTES contract)")
    events: str = option(help="events root, for the test pool")
    out: str = option(help="split root; replaced as a whole")
    max_pairs_per_category_pair: int = option(0, help="balancing cap per (category of A, category of B) "
                                                      "(0 = none)")
    allow_missing_days: bool = option(False, help="accept days of the test window without event files")
    output_rows_per_file: int = option(1_000_000, help="rows per output file of each table")

    def __post_init__(self) -> None:
        _uris(self, "pairs", "notes", "events", "out")
        _set(self, "train_date", as_date(self.train_date, "train_date"))
        _set(self, "test_date", as_date(self.test_date, "test_date"))

    def validate(self) -> None:
        if self.max_pairs_per_category_pair < 0:
            raise ValueError("--max-pairs-per-category-pair must be >= 0 (0 = no balancing)")
        if self.output_rows_per_file < 1:
            raise ValueError(f"--output-rows-per-file must be >= 1, got {self.output_rows_per_file}")
        self.spark_conf()


# --------------------------------------------------------------------------- landing validation


@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestNotesConfig:
    """Validate landing notes into the NOTES contract table plus quarantine."""

    landing: Path = option(help="landing root holding notes/*.parquet")
    out: Path = option(help="output root (writes notes/ and quarantine/notes/)")
    earliest: str = option(EARLIEST.isoformat(), help="earliest plausible created_at (ISO); earlier is bad_timestamp")
    latest: str | None = option(None, help=f"latest plausible created_at (ISO; null = today + {LATEST_SKEW_DAYS} "
                                           "days, UTC)")

    def validate(self) -> None:
        window_from(self.earliest, self.latest)


@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestEventsConfig:
    """Validate landing events into EVENTS day partitions plus quarantine."""

    landing: Path = option(help="landing root holding events/dt=*/*.parquet")
    out: Path = option(help="output root (writes events/dt=*/ and quarantine/events/dt=*/)")
    notes: Path | None = option(None, help="NOTES contract file with the known note ids "
                                           "(null = <out>/notes/notes.parquet)")
    dt: list[str] = option(default_factory=list, help="landing partitions (YYYY-MM-DD) to ingest; empty = all")
    earliest: str = option(EARLIEST.isoformat(), help="earliest plausible event_time (ISO); earlier is bad_timestamp")
    latest: str | None = option(None, help=f"latest plausible event_time (ISO; null = today + {LATEST_SKEW_DAYS} "
                                           "days, UTC)")

    def validate(self) -> None:
        window_from(self.earliest, self.latest)


# --------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleConfig:
    """Deterministic sample generator: notes and a click log with real structure."""

    out: Path | None = option(None, help="output root (the command line needs it)")
    notes: int = option(2000, help="notes to generate (at least one per topic)")
    users: int = option(3000, help="users, bots included")
    events: int = option(200_000, help="total events (approximate target)")
    days: int = option(14, help="days of click log ending at --end-date")
    end_date: date | str = option(SAMPLE_END_DATE, help="last day of the event window (UTC), YYYY-MM-DD")
    seed: int = option(42, help="random seed: the same seed and settings give byte-identical files")
    format: str = option("contract", help="contract tables, or landing files (all text) for jobs.ingest",
                         choices=SAMPLE_FORMATS)
    malformed_rate: float = option(0.0, help="landing only: malformed rows as a fraction of clean rows, split "
                                             "over all defect kinds")

    # The settings that shape the generated world (recorded in _generator_stats.json as "config").
    WORLD = ("notes", "users", "events", "days", "end_date", "seed")

    def __post_init__(self) -> None:
        _set(self, "end_date", as_date(self.end_date, "end_date"))

    @property
    def window_start(self) -> datetime:
        """First instant of the event window (UTC)."""
        return datetime.combine(self.end_date - timedelta(days=self.days - 1), time(), tzinfo=timezone.utc)

    @property
    def window_end(self) -> datetime:
        """Exclusive end of the event window: midnight after ``end_date``."""
        return datetime.combine(self.end_date + timedelta(days=1), time(), tzinfo=timezone.utc)

    def world(self) -> dict:
        return {k: (getattr(self, k).isoformat() if k == "end_date" else getattr(self, k)) for k in self.WORLD}

    def validate(self) -> None:
        from jobs.sources.sample_world import TOPICS  # numpy: only when a sample is really made

        if self.notes < len(TOPICS):
            raise ValueError(f"--notes must be at least the number of topics ({len(TOPICS)}), got {self.notes}")
        if self.users < 1 or self.events < 0 or self.days < 1:
            raise ValueError("--users >= 1, --events >= 0 and --days >= 1 are required")
        if self.format not in SAMPLE_FORMATS:
            raise ValueError(f"--format must be 'contract' or 'landing', got {self.format!r}")
        if self.format == "contract" and self.malformed_rate > 0:
            raise ValueError("--malformed-rate only applies to --format landing (contract data is valid by "
                             "definition)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MovieLensConfig:
    """MovieLens (ml-latest-small) -> NOTES, EVENTS (+ quarantine)."""

    data: Path = option(help="ml-latest-small folder (movies.csv, ratings.csv, tags.csv)")
    out: Path = option(help="output root (notes/, events/, quarantine/)")
    min_rating: float = option(3.5, help="ratings >= this become 'rate' events (0 keeps all)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StackExchangeConfig:
    """Stack Exchange dumps -> NOTES, EVENTS, RELATED_LINKS (+ quarantine)."""

    data: Path = option(help="folder with one sub-folder per site dump")
    out: Path = option(help="output root (notes/, events/, related_links/, quarantine/)")
    sites: list[str] = option(default_factory=lambda: ["all"], help="site folders or site names "
                                                                    "(space- or comma-separated), or 'all'")

    def site_list(self) -> list[str]:
        return [s for arg in self.sites for s in arg.split(",") if s]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparkCdsConfig:
    """Build a class-data-sharing (CDS) archive for the Spark driver JVM."""

    out: Path = option(REPO / "var" / "spark-cds" / "driver.jsa", help="archive path to (re)publish")
    master: str = option("local[2]", help="Spark master of the recording run")
    events: int = option(20_000, help="events of the generated sample the recording run mines")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PackageConfig:
    """Package the Spark jobs for spark-submit: one zip for --py-files and an entry script per job."""

    out: str = option(help="local folder for the zip and the entry scripts (created; files named by digest)")
