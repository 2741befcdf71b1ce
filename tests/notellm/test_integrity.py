"""notellm.integrity: folder manifests refuse torn, changed, added and escaping files."""

from __future__ import annotations

import json

import pytest

from notellm.integrity import (
    SUMS_FILE,
    IntegrityError,
    check_model_id,
    check_relative_name,
    sums_digest,
    verify_sums,
    write_sums,
)


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(b"a" * 100)
    (d / "sub" / "b.json").write_text("{}")
    digest = write_sums(d)
    return d, digest


def test_written_folder_verifies_and_digest_pins_the_manifest(folder):
    d, digest = folder
    assert verify_sums(d) == digest == sums_digest(d)
    assert set(json.loads((d / SUMS_FILE).read_text())["files"]) == {"a.bin", "sub/b.json"}
    with pytest.raises(IntegrityError, match="was rewritten after it was recorded"):
        verify_sums(d, expected_digest="0" * 64)


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "a.bin").write_bytes(b"a" * 50), r"a\.bin: 50 bytes, 100 in"),
    (lambda d: (d / "a.bin").write_bytes(b"b" * 100), r"a\.bin: sha256 differs"),
    (lambda d: (d / "a.bin").unlink(), r"a\.bin: listed in SHA256SUMS\.json but missing"),
    (lambda d: (d / "evil.pt").write_bytes(b"pickle"), r"evil\.pt: not in SHA256SUMS\.json"),
    (lambda d: (d / SUMS_FILE).unlink(), r"SHA256SUMS\.json: missing"),
    (lambda d: (d / SUMS_FILE).write_text("{torn"), r"SHA256SUMS\.json: not a manifest"),
])
def test_damaged_folder_is_refused_naming_the_file(folder, damage, message):
    d, _ = folder
    damage(d)
    with pytest.raises(IntegrityError, match=message):
        verify_sums(d)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "./a", "a//b", "a\\b", "", "a/", "x\0y"])
def test_manifest_names_that_leave_the_folder_are_refused(folder, name):
    d, _ = folder
    with pytest.raises(IntegrityError, match="file name"):
        check_relative_name(name, "m.json")
    sums = json.loads((d / SUMS_FILE).read_text())
    sums["files"][name] = {"bytes": 1, "sha256": "0" * 64}
    (d / SUMS_FILE).write_text(json.dumps(sums))
    with pytest.raises(IntegrityError, match="file name"):
        verify_sums(d)


@pytest.mark.parametrize("bad", ["../../etc", "ABCDEF012345", "abc", "a" * 65, "12ab/34cd", None, 12345678])
def test_model_ids_are_strict_hex(bad):
    with pytest.raises(IntegrityError, match="is not a model id"):
        check_model_id(bad, "notellm.json")
    assert check_model_id("8c128fa1e1d2", "x") == "8c128fa1e1d2"
