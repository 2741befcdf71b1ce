from notellm.layout import Layout, asset_uri


def test_layout_joins_paths_and_uris():
    local = Layout("/data/notellm/")
    assert local.notes == "/data/notellm/notes/notes.parquet" and local.pairs == "/data/notellm/pairs"
    assert local.current_snapshot == "/data/notellm/index/snapshots/CURRENT"
    assert asset_uri(local.approved) == "file:///data/notellm/models/APPROVED.json"
    s3 = Layout("s3a://bucket/notellm")
    assert s3.events == "s3a://bucket/notellm/events" and asset_uri(s3.pairs) == "s3a://bucket/notellm/pairs"
