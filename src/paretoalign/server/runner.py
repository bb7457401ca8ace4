"""`serve(config)`: check, load, listen, answer until SIGTERM / Ctrl-C, then drain and exit.

In order, so that a mistake costs no model loading: the API token is read and the bind checked (a non-loopback
host needs one, `security.check_bind`), the port is bound (a port in use is an InputError naming --port), the
reward-model reference is inspected (`rewards.loading.inspect_reward_model`); then the reward model loads (behind a
`MicroBatcher`, with ``batch_size=1`` under --exact) or, with ``engine="ray"``, `server.ray_serve.RayRowScorer`
deploys it; then the optional policy and query template load, the row scorer starts, and uvicorn serves on the
bound socket. Once it listens, one line is printed: ``serving <model> on http://host:port (objectives: ...)``
(with the real port when --port 0 asked for any free one).

SIGTERM or Ctrl-C: the listening socket closes, the requests in flight finish (at most
``config.graceful_timeout_s`` seconds), the row scorer scores everything it accepted and stops, and `serve` returns
normally (the command exits 0). A second Ctrl-C stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from paretoalign.errors import InputError
from paretoalign.server.config import ServeConfig
from paretoalign.server.security import check_bind, load_api_key

if TYPE_CHECKING:
    import uvicorn

    from paretoalign.server.batcher import RowScorer

logger = logging.getLogger("paretoalign.server")


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening; InputError naming --host / --port when it cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve this address ({exc.strerror})", path=host, field="--host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", field="--port") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """http://host:port of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def load_row_scorer(config: ServeConfig, metrics: Any) -> RowScorer:
    """The scoring backend: the reward model behind a MicroBatcher, or the Ray deployment (engine="ray")."""
    if config.engine == "ray":
        from paretoalign.server.ray_serve import RayRowScorer

        return RayRowScorer(config)
    from paretoalign.rewards.loading import load_reward_model
    from paretoalign.server.batcher import MicroBatcher

    model = load_reward_model(config.model, trust_remote_code=config.trust_remote_code, field="--model")
    return MicroBatcher(model, max_rows=config.max_batch_rows, max_tokens=config.max_batch_tokens,
                        max_wait_ms=config.max_wait_ms, batch_size=config.rm_batch_size, metrics=metrics)


def _load_template(config: ServeConfig) -> Any:
    if config.query_template is None:
        return None
    from paretoalign.server.query_split import QueryTemplate

    try:
        return QueryTemplate.load(config.query_template, trust_remote_code=config.trust_remote_code)
    except InputError as exc:
        raise InputError(exc.reason, path=exc.path, field="--query-template") from None


def _server_class() -> type[uvicorn.Server]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server that prints the start-up line once it listens and, stopped by SIGTERM / Ctrl-C, returns
        normally instead of re-raising the signal (so a drained server exits 0)."""

        def __init__(self, config: uvicorn.Config, banner: str) -> None:
            super().__init__(config)
            self.banner = banner
            self.stop_signal: int | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit:
                print(self.banner, flush=True)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.stop_signal is None:
                self.stop_signal = sig
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def serve(config: ServeConfig) -> None:
    """Serve `config` until SIGTERM / Ctrl-C, then drain (see the module)."""

    from paretoalign.rewards.loading import inspect_reward_model
    from paretoalign.server.app import create_app
    from paretoalign.server.metrics import ServerMetrics

    api_key = load_api_key(config.api_key_file) if config.api_key_file else None
    check_bind(config.host, api_key)
    sock = bind_socket(config.host, config.port)
    try:
        inspect_reward_model(config.model, field="--model", trust_remote_code=config.trust_remote_code)
        metrics = ServerMetrics()
        row_scorer = load_row_scorer(config, metrics)
        policy = None
        if config.policy is not None:
            from paretoalign.inference.policy import Policy

            policy = Policy.from_pretrained(config.policy, trust_remote_code=config.trust_remote_code)
        template = _load_template(config)
        app = create_app(row_scorer, config, model_name=config.model, policy=policy, template=template,
                         metrics=metrics)
        asyncio.run(_serve(config, app, row_scorer, sock))
    finally:
        sock.close()


async def _serve(config: ServeConfig, app: Any, row_scorer: RowScorer, sock: socket.socket) -> None:
    """Start the row scorer here (its errors reach the command line as they are), then let uvicorn serve."""
    import uvicorn

    await row_scorer.start()  # the app's lifespan start is then a no-op; its shutdown drains the scorer
    try:
        objectives = ", ".join(row_scorer.objective_names)
        banner = f"serving {config.model} on {url_of(sock)} (objectives: {objectives})"
        uv_config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                   timeout_graceful_shutdown=config.graceful_timeout_s)
        server = _server_class()(uv_config, banner)
        await server.serve(sockets=[sock])
    finally:
        try:
            await row_scorer.stop()  # a no-op after a normal shutdown
        except Exception:
            logger.warning("stopping the reward model failed", exc_info=True)
    if server.stop_signal is not None:
        name = signal.Signals(server.stop_signal).name
        print(f"stopped by {name}", file=sys.stderr, flush=True)
