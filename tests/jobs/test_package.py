"""jobs.package: the zip spark-submit ships is deterministic and self-sufficient."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

from jobs import package


def test_package_is_deterministic_and_named_by_its_digest(tmp_path):
    a, b = package.build(tmp_path / "a"), package.build(tmp_path / "b")
    assert a["digest"] == b["digest"] and a["py_files"].endswith(f"notellm-jobs-{a['digest'][:12]}.zip")
    assert open(a["py_files"], "rb").read() == open(b["py_files"], "rb").read()
    names = zipfile.ZipFile(a["py_files"]).namelist()
    assert "sql/cooccurrence_score.sql" in names and "jobs/cooccurrence.py" in names and "notellm/storage.py" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "dags/", "training/"))]
    again = package.build(tmp_path / "a")          # reused as is: same bytes, no rewrite
    assert again == a


def test_packaged_code_runs_without_the_repository(tmp_path):
    """An isolated interpreter (-I: no cwd, no PYTHONPATH, no user site; the venv's
    editable install comes after sys.path) imports the jobs and reads the SQL from the zip."""
    built = package.build(tmp_path / "pkg")
    probe = ("import sys, json; sys.path.insert(0, sys.argv[1]);"
             "import jobs, jobs.cooccurrence, jobs.split; from jobs import sql_template;"
             "from jobs.package import code_digest;"
             "from jobs.config import CooccurrenceConfig as C;"
             "p = C(events='e', notes='n', out='o', quarantine_out='q', run_date='2026-11-20').score_params();"
             "print(json.dumps({'file': jobs.__file__, 'digest': code_digest(),"
             " 'sql': len(sql_template.load('cooccurrence_score.sql', p))}))")
    out = subprocess.run([sys.executable, "-I", "-c", probe, built["py_files"]], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert found["file"].startswith(built["py_files"]) and found["digest"] == built["digest"]
    assert found["sql"] > 3
    assert package.code_digest() == package.SOURCE_TREE       # this checkout is not a package


def test_entry_script_calls_the_job_main(tmp_path):
    built = package.build(tmp_path)
    proc = subprocess.run([sys.executable, built["cooccurrence"], "--help"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": built["py_files"], "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and "--run-date" in proc.stdout
