"""The layout rules of docs/architecture.md, checked on the source (ast, not grep):
stages import only themselves and notellm/; notellm/ imports no stage; the
retrieval service (serving/) is a consumer: notellm/ and indexing's consumer API
(indexing.snapshot, indexing.watcher) only; command
lines come from notellm.config (no hand-built argparse in a package); modules
stay small enough to have one job."""

from __future__ import annotations

import ast

import pytest

from tests.support.paths import REPO

PACKAGES = ("notellm", "jobs", "training", "indexing", "evaluation", "serving")
STAGES = ("jobs", "training", "indexing", "evaluation")
MAX_MODULE_LINES = 400
ARGPARSE_ALLOWED = {"notellm/config.py", "notellm/cli.py"}
CONSUMER_API = {"indexing.snapshot", "indexing.watcher"}


def _modules():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            yield package, path, path.relative_to(REPO).as_posix()


def _imported_modules(tree: ast.AST) -> set[str]:
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("package, path, rel", list(_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_module_rules(package, path, rel):
    text = path.read_text()
    tree = ast.parse(text, filename=rel)
    modules = _imported_modules(tree)
    roots = {m.split(".")[0] for m in modules}
    if package == "serving":
        beyond = sorted(m for m in modules if m.split(".")[0] in STAGES and m not in CONSUMER_API)
        assert not beyond, f"{rel}: the service uses only indexing's consumer API, not {beyond}"
    else:
        others = {s for s in STAGES if s != package} | {"serving"}
        assert not (roots & others), f"{rel} imports another stage: {sorted(roots & others)}"
    if package == "notellm":
        assert not (roots & set(STAGES)), f"{rel}: notellm/ must not import a stage"
    if rel not in ARGPARSE_ALLOWED:
        assert "argparse" not in roots, f"{rel}: build the command line from a dataclass with notellm.config"
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{rel} has {lines} lines (> {MAX_MODULE_LINES}): split it by job"
