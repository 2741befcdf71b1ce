"""Reference retrieval service: serves the live index snapshot over HTTP and swaps to
each newly published snapshot without a restart or a failed request.

Run it with ``python -m serving --snapshot-root <root>`` (settings:
:class:`serving.config.ServeConfig`). Endpoints and error codes:
:mod:`serving.app`; metrics: :mod:`serving.metrics`; text queries:
:mod:`serving.text`. The snapshot swap itself is :class:`indexing.watcher.SnapshotWatcher`'s.
"""
