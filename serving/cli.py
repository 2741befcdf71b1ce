"""``python -m serving``: run the retrieval service until it is stopped (Ctrl+C / SIGTERM).

The command contract is :mod:`notellm.cli`'s: logs (uvicorn's included) on
stderr, and when the server stops, one JSON result line on stdout with the
address it listened on, the snapshot it served last, the swaps and refusals the
watcher saw and the number of requests answered. A missing snapshot root is bad
input (exit 2); an empty one is not: the service starts unhealthy (503) and
serves the first snapshot published there.
"""

from __future__ import annotations

import logging
import sys

from notellm import cli
from serving.config import ServeConfig

log = logging.getLogger("serving")

PROG = "python -m serving"


def _server(config):
    """A uvicorn Server that stops on SIGINT / SIGTERM without re-raising the signal afterwards.

    uvicorn re-raises the captured signal once it has shut down (so a host program sees it);
    here that would kill the process (SIGTERM) or raise KeyboardInterrupt (SIGINT) before the
    result line is printed, so the signal is recorded and dropped instead.
    """
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: str | None = None

        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            self.stopped_by = signal.Signals(sig).name
            self._captured_signals.clear()

    return Server(config)


def serve(cfg: ServeConfig, timer: cli.Timer) -> dict:
    import uvicorn

    from serving.app import create_app

    if not cfg.snapshot_root.is_dir():
        raise cli.BadInput(f"{cfg.snapshot_root}: snapshot root does not exist (publish with indexing.cli first)")
    app = create_app(cfg)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_config=None, log_level=cfg.log_level,
                            access_log=False, lifespan="on")
    sock = config.bind_socket()   # bound here so the real port is known when --port 0 picks one
    host, port = sock.getsockname()[:2]
    log.info("listening on http://%s:%d", host, port)
    server = _server(config)
    with timer.phase("serve"):
        server.run(sockets=[sock])
    svc = app.state.service
    status = svc.final_status or svc.watcher_status()
    return {"url": f"http://{host}:{port}", "host": host, "port": port, "snapshot": status.get("serving"),
            "swaps": status.get("swaps", 0), "refused": [r.get("name") for r in status.get("refused") or []],
            "requests": svc.metrics.total_requests(), "stopped_by": server.stopped_by}


def main(argv: list[str] | None = None) -> int:
    return cli.main(serve, ServeConfig, argv=sys.argv[1:] if argv is None else argv, prog=PROG,
                    description=(__doc__ or "").split("\n\n")[0])
