"""`ServeConfig`: every setting of `paretoalign serve`, checked when it is built.

Each field is the `--kebab-case` flag of the same name (`cors_origins` is the repeatable `--cors-origin`); a bad
value raises InputError naming that flag, before anything loads. The help texts here are the flags' help.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from paretoalign.errors import InputError

ENGINES = ("local", "ray")
MiB = 1024 * 1024


@dataclass
class ServeConfig:
    """The reward server: its models, where it listens, its batching, and the limits on what a request may ask."""

    model: str = field(default="default", metadata={
        "help": "Reward model: a folder from train-rm, `default` (the shipped one), or a Hugging Face "
                "sequence-classification folder or hub id."})
    policy: str | None = field(default=None, metadata={
        "help": "Policy for POST /v1/best-of-n: alias (smollm2), .gguf file, local folder or hub id (default: none; "
                "the endpoint then answers 404)."})
    host: str = field(default="127.0.0.1", metadata={
        "help": "Address to listen on; any address other than a loopback one needs --api-key-file."})
    port: int = field(default=8000, metadata={"help": "TCP port (0: any free port; the start-up line names it)."})
    api_key_file: str | None = field(default=None, metadata={
        "help": "File holding the API token; every request but GET /health (and the explorer's static page) must "
                "then send `Authorization: Bearer <token>`."})
    query_template: str | None = field(default=None, metadata={
        "help": "Tokenizer (alias, folder or hub id) whose chat template splits templated queries of /get_reward "
                "and /classify into prompt messages and response."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow the model folders this server loads to run their own Python code (an auto_map); off by "
                "default, and a saved model can never turn it on."})
    max_batch_rows: int = field(default=64, metadata={"help": "Rows the micro-batcher puts in one reward-model "
                                                              "call."})
    max_batch_tokens: int = field(default=32768, metadata={"help": "Tokens (estimated) in one reward-model call."})
    max_wait_ms: float = field(default=5.0, metadata={
        "help": "How long the first request of a batch waits for others to join it (milliseconds)."})
    batch_size: int | None = field(default=None, metadata={
        "help": "Embedding batch size inside a reward-model call (default: the backbone's)."})
    exact: bool = field(default=False, metadata={
        "help": "Embed one row at a time: scores bit-identical to `paretoalign score --batch-size 1`, whatever "
                "else is in the batch (slower)."})
    max_items: int = field(default=256, metadata={"help": "Rows one request may hold (413 beyond)."})
    max_text_chars: int = field(default=32768, metadata={"help": "Characters of one prompt or response text (413 "
                                                                 "beyond)."})
    max_body_bytes: int = field(default=8 * MiB, metadata={"help": "Bytes of one request body (413 beyond)."})
    cors_origins: tuple[str, ...] = field(default=(), metadata={
        "help": "A web origin (scheme://host[:port]) whose pages may call this server from the browser; repeat for "
                "several. Default: none (CORS off)."})
    max_n: int = field(default=16, metadata={"help": "The largest n a /v1/best-of-n request may ask for."})
    max_new_tokens: int = field(default=256, metadata={
        "help": "The largest max_new_tokens a /v1/best-of-n request may ask for (also its default)."})
    engine: str = field(default="local", metadata={
        "help": "local: the reward model runs in this process; ray: as Ray Serve replicas (the [ray] extra)."})
    replicas: int = field(default=1, metadata={"help": "--engine ray: reward-model replicas."})
    ray_address: str | None = field(default=None, metadata={
        "help": "--engine ray: the Ray cluster to join (default: start a local one)."})
    graceful_timeout_s: float = field(default=30.0, metadata={
        "help": "On SIGTERM / Ctrl-C: seconds to let the requests in flight finish before they are cut."})

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError("give a reward model", field=flag_name("model"))
        if not isinstance(self.host, str) or not self.host.strip():
            raise InputError("give an address to listen on", field=flag_name("host"))
        if not _whole(self.port) or not 0 <= self.port <= 65535:
            raise InputError(f"must be a port number in 0..65535, got {self.port!r}", field=flag_name("port"))
        for name in ("max_batch_rows", "max_batch_tokens", "max_items", "max_text_chars", "max_body_bytes", "max_n",
                     "max_new_tokens", "replicas"):
            value = getattr(self, name)
            if not _whole(value) or value < 1:
                raise InputError(f"must be a whole number >= 1, got {value!r}", field=flag_name(name))
        if self.batch_size is not None and (not _whole(self.batch_size) or self.batch_size < 1):
            raise InputError(f"must be a whole number >= 1, got {self.batch_size!r}", field=flag_name("batch_size"))
        for name in ("max_wait_ms", "graceful_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise InputError(f"must be a finite number >= 0, got {value!r}", field=flag_name(name))
        if self.exact and self.batch_size not in (None, 1):
            raise InputError(f"--exact embeds one row at a time; it cannot be combined with --batch-size "
                             f"{self.batch_size}", field=flag_name("batch_size"))
        if self.engine not in ENGINES:
            raise InputError(f"must be one of {', '.join(ENGINES)}, got {self.engine!r}", field=flag_name("engine"))
        if self.engine != "ray":
            if self.replicas != 1:
                raise InputError("only applies with --engine ray", field=flag_name("replicas"))
            if self.ray_address is not None:
                raise InputError("only applies with --engine ray", field=flag_name("ray_address"))
        origins = (self.cors_origins,) if isinstance(self.cors_origins, str) else tuple(self.cors_origins or ())
        self.cors_origins = tuple(check_origin(origin) for origin in origins)

    @property
    def rm_batch_size(self) -> int | None:
        """The embedding batch size of the reward-model calls: 1 with `exact`, else `batch_size`."""
        return 1 if self.exact else self.batch_size


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def flag_name(name: str) -> str:
    """The command-line flag of a ServeConfig field: max_items -> --max-items (cors_origins -> --cors-origin)."""
    return "--cors-origin" if name == "cors_origins" else "--" + name.replace("_", "-")


def check_origin(origin: str) -> str:
    """`origin` without a trailing slash (as browsers send it); InputError (--cors-origin) unless it is a web origin,
    http(s)://host[:port] with no path, or `*` (any origin)."""
    if origin == "*":
        return origin
    parts = urlsplit(origin) if isinstance(origin, str) else None
    try:
        ok = (parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
              and not parts.path.strip("/") and not parts.query
              and not parts.fragment and not parts.username and (parts.port is None or parts.port > 0))
    except ValueError:  # a port that is not a number
        ok = False
    if not ok:
        raise InputError(f"expected an origin such as http://localhost:5173 (scheme, host, optional port; no path), "
                         f"got {origin!r}", field=flag_name("cors_origins"))
    return origin.rstrip("/")


def config_fields() -> list[str]:
    """The names of ServeConfig's fields, in order."""
    return [f.name for f in fields(ServeConfig)]
