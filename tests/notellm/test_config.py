"""notellm.config: one dataclass gives the flags, the help, the file/--set
overrides and the type checks; precedence default < file < --set < flag."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from notellm import config
from notellm.config import ConfigError, option


@dataclasses.dataclass
class Example:
    """An example stage."""

    notes: Path = option(help="notes file")
    k: int = option(10, help="neighbours per query")
    rate: float = option(0.5, help="a rate in [0, 1]")
    mode: str = option("auto", help="how to run", choices=("auto", "fast", "exact"))
    bf16: bool | str = option("auto", help="true, false or auto")
    max_steps: int | None = option(None, help="stop after N steps")
    full: bool = option(False, help="ignore the previous run")
    sites: list[str] = option(default_factory=lambda: ["all"], help="sites to convert")
    conf: list[str] = option(default_factory=list, split_commas=False, help="KEY=VALUE settings")

    def validate(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate={self.rate} must be in [0, 1]")


def test_flags_defaults_and_types():
    cfg = config.parse(Example, ["--notes", "n.parquet", "--k", "5", "--full", "--sites", "beer", "coffee"])
    assert cfg == Example(notes=Path("n.parquet"), k=5, full=True, sites=["beer", "coffee"])
    assert config.parse(Example, ["--notes", "x", "--max-steps", "7", "--bf16", "true"]).max_steps == 7
    assert config.parse(Example, ["--notes", "x", "--bf16", "true"]).bf16 is True
    assert config.parse(Example, ["--notes", "x", "--bf16", "auto"]).bf16 == "auto"
    assert config.defaults(Example) == {"k": 10, "rate": 0.5, "mode": "auto", "bf16": "auto", "max_steps": None,
                                        "full": False, "sites": ["all"], "conf": []}


def test_list_settings_repeat_split_on_commas_unless_told_not_to(tmp_path):
    cfg = config.parse(Example, ["--notes", "x", "--sites", "a,b", "c", "--sites", "d"])
    assert cfg.sites == ["a", "b", "c", "d"]
    assert config.parse(Example, ["--notes", "x", "--set", "sites=e,f"]).sites == ["e", "f"]
    cfg = config.parse(Example, ["--notes", "x", "--conf", "spark.jars=a.jar,b.jar", "--conf", "k=v"])
    assert cfg.conf == ["spark.jars=a.jar,b.jar", "k=v"]


def test_precedence_file_then_set_then_flag(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"notes": "from-file", "k": 3, "rate": 0.1}))
    cfg = config.parse(Example, ["--config", str(path), "--set", "k=4", "--rate", "0.2"])
    assert (cfg.notes, cfg.k, cfg.rate) == (Path("from-file"), 4, 0.2)
    cfg = config.parse(Example, ["--config", str(path), "--set", "k=4", "--k", "6"])
    assert cfg.k == 6


@pytest.mark.parametrize("argv, message", [
    (["--set", "kk=3", "--notes", "x"], "unknown setting(s) ['kk']"),
    (["--set", "k=three", "--notes", "x"], "k: 'three' is not an integer"),
    (["--set", "rate=2", "--notes", "x"], "rate=2.0 must be in [0, 1]"),
    (["--set", "mode=slow", "--notes", "x"], "mode='slow' is not one of"),
    (["--set", "full=maybe", "--notes", "x"], "full: 'maybe' is not true or false"),
    ([], "required setting(s) missing: ['notes']"),
])
def test_bad_settings_name_the_key(argv, message):
    with pytest.raises(ConfigError) as err:
        config.parse(Example, argv)
    assert message in str(err.value)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        config.parse(Example, ["--config", str(bad)])
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="one object of settings"):
        config.parse(Example, ["--config", str(bad)])
    with pytest.raises(ConfigError, match="cannot read the config file"):
        config.parse(Example, ["--config", str(tmp_path / "absent.json")])


def test_yaml_config(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "c.yaml"
    path.write_text("notes: n.parquet\nk: 8\nsites: [a, b]\n")
    assert config.parse(Example, ["--config", str(path)]) == Example(notes=Path("n.parquet"), k=8, sites=["a", "b"])


def test_help_is_generated_from_the_dataclass(capsys):
    with pytest.raises(SystemExit) as done:
        config.parse(Example, ["--help"], prog="example")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "An example stage." in out
    assert "neighbours per query (default: 10)" in out and "notes file (required)" in out
    assert "{auto,fast,exact}" in out and "--no-full" in out
