"""The layout rules of docs/architecture.md, checked on the source (ast, not grep):
stages import only themselves and notellm/; notellm/ imports no stage; command
lines come from notellm.config (no hand-built argparse in a package); modules
stay small enough to have one job."""

from __future__ import annotations

import ast

import pytest

from tests.support.paths import REPO

PACKAGES = ("notellm", "jobs", "training", "indexing", "evaluation")
STAGES = ("jobs", "training", "indexing", "evaluation")
MAX_MODULE_LINES = 400
ARGPARSE_ALLOWED = {"notellm/config.py", "notellm/cli.py"}


def _modules():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            yield package, path, path.relative_to(REPO).as_posix()


def _imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package, path, rel", list(_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_module_rules(package, path, rel):
    text = path.read_text()
    tree = ast.parse(text, filename=rel)
    roots = _imported_roots(tree)
    others = {s for s in STAGES if s != package}
    assert not (roots & others), f"{rel} imports another stage: {sorted(roots & others)}"
    if package == "notellm":
        assert not (roots & set(STAGES)), f"{rel}: notellm/ must not import a stage"
    if rel not in ARGPARSE_ALLOWED:
        assert "argparse" not in roots, f"{rel}: build the command line from a dataclass with notellm.config"
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{rel} has {lines} lines (> {MAX_MODULE_LINES}): split it by job"
