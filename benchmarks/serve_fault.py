"""Fault test of `paretoalign serve`: 1 000 concurrent good and bad requests, client disconnects, then SIGTERM.

Supports: a server subprocess (`python -m paretoalign.cli serve`, 127.0.0.1 only) on a tiny random reward model
(a 2-layer Llama backbone, built here with tests/tiny.py) started with `--exact`, so every valid request can be
checked against `model.score(..., batch_size=1)` computed in this process, bit for bit. The request mix:

- valid `POST /v1/rewards` (string or message prompts, gated or user weights) and `POST /get_reward` (OpenRLHF's
  shape, chat-templated prompts; the server parses them with `--query-template`);
- malformed JSON, wrong types, unknown objectives, too many items, a text over --max-text-chars, bodies over
  --max-body-bytes (with Content-Length and chunked), each expecting a 4xx whose error body names a JSON path;
- clients that send the headers and half the body then close, and clients that send a whole request and close
  before reading the answer (raw asyncio sockets).

Checks: every valid answer exact, zero 5xx (answers and the server's own /metrics), no traceback or ERROR line in
the server's log, every bad request its 4xx with the expected `error.path`, /health still answers, VmRSS growth
under a bound, and SIGTERM with requests in flight: they all complete with 200 (exact) and the process exits 0
within --graceful-timeout-s.

Assumes: Linux (/proc/<pid>/status), the `paretoalign serve` flags (ServeConfig field names as --kebab-case flags,
plus --threads). tests/server/test_fault.py imports this module and runs a smaller mix.

    python benchmarks/serve_fault.py [--requests 1000] [--concurrency 1000] [--output benchmarks/results/...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "serve_fault.json"
HOST = "127.0.0.1"
RSS_GROWTH_BOUND_MB = 200.0
"""Allowed VmRSS growth over the whole mix. The server's body limit here is 64 KiB and nothing is meant to outlive a
request, so steady growth comes only from allocator arenas and torch kernels warmed for new shapes (tens of MB); a
leak of the request bodies or of each batch's tensors over 1 000 requests (>= 200 KB each) exceeds it."""

# Limits the server is started with: small, so the bad requests are cheap to build and send.
MAX_BODY_BYTES = 64 * 1024
MAX_ITEMS = 32
MAX_TEXT_CHARS = 2000
GRACEFUL_TIMEOUT_S = 30.0
THREADS = 1
"""Torch threads of the server and of the expected scores here: a fixed count, so float rounding cannot depend on
the machine's load (`paretoalign.threads`)."""

WORDS = ("the quick brown fox jumps over lazy dog how do i bake bread mix flour water salt yeast knead rise "
         "paris is capital of france berlin germany cannot help with that request here safer alternative "
         "please explain why because answer question thanks hello").split()
END_OF_TURN = "<|im_end|>"


# ---------------------------------------------------------------------------------------------------- the server

def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """VmRSS of process `pid` in MB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


class ServerProcess:
    """`paretoalign serve ARGS --host 127.0.0.1 --port P` as a subprocess; started and stopped as a context."""

    def __init__(self, args: Sequence[str], *, log_path: Path | None = None, startup_timeout_s: float = 180.0,
                 env: dict[str, str] | None = None, command: Sequence[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        base = list(command) if command else [sys.executable, "-m", "paretoalign.cli", "serve"]
        self.argv = [*base, *args, "--host", HOST, "--port", str(self.port)]
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="serve-", suffix=".log")[1])
        self.startup_timeout_s = startup_timeout_s
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self, tail: int = 4000) -> str:
        """The end of the server's stdout + stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def start(self) -> ServerProcess:
        """Start the process and wait until GET /health answers 200 (RuntimeError with its log otherwise)."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=REPO_ROOT)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} before answering /health:\n"
                                   f"{' '.join(self.argv)}\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer /health within {self.startup_timeout_s:.0f} s:\n{self.log()}")

    def stop(self, timeout_s: float = 40.0) -> int | None:
        """SIGTERM (then SIGKILL after `timeout_s`); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------- the model

def build_tiny_rm(directory: Path) -> tuple[Path, Path]:
    """Save a tiny random Llama (+ ChatML tokenizer) and a random RewardModel on it; (rm_dir, tokenizer_dir)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.rewards.model_factory import random_llama_rm
    from tests.tiny import save_tiny_model

    llama = save_tiny_model(directory / "tiny_llama", "llama")
    rm_dir = directory / "tiny_rm"
    random_llama_rm(llama).save_pretrained(rm_dir)
    return rm_dir, llama


def server_args(rm_dir: Path, template_dir: Path, *, exact: bool = True) -> list[str]:
    """The `serve` flags of the fault run: the tiny RM, its chat template for /get_reward, small limits."""
    args = ["--model", str(rm_dir), "--query-template", str(template_dir), "--threads", str(THREADS),
            "--max-body-bytes", str(MAX_BODY_BYTES),
            "--max-items", str(MAX_ITEMS), "--max-text-chars", str(MAX_TEXT_CHARS),
            "--graceful-timeout-s", str(GRACEFUL_TIMEOUT_S)]
    return [*args, "--exact"] if exact else args


@dataclass
class Row:
    """One (prompt messages, response) of the pool the valid requests draw from."""

    messages: list[dict[str, str]]
    response: str


@dataclass
class Expected:
    """The in-process scores of the pool: per weight setting, score[j] and objectives[j] (float64)."""

    rows: list[Row]
    objective_names: list[str]
    by_weights: dict[str, tuple[list[float], list[list[float]]]] = field(default_factory=dict)


WEIGHT_SETTINGS: dict[str, Any] = {"gated": None, "dict": {"helpfulness": 1.0, "harmlessness": 0.5},
                                   "list": [0.25, 1.0, -0.5]}


def make_pool(n: int, seed: int = 0) -> list[Row]:
    """`n` distinct rows: single user turns, system + user, and multi-turn prompts, with word-salad texts."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    rows = []
    for j in range(n):
        kind = j % 3
        if kind == 0:
            messages = [{"role": "user", "content": f"{j} {text(2, 12)}"}]
        elif kind == 1:
            messages = [{"role": "system", "content": text(2, 6)}, {"role": "user", "content": f"{j} {text(2, 12)}"}]
        else:
            messages = [{"role": "user", "content": f"{j} {text(2, 8)}"}, {"role": "assistant", "content": text(2, 8)},
                        {"role": "user", "content": text(2, 8)}]
        rows.append(Row(messages, text(1, 40)))
    return rows


def expected_scores(rm_dir: Path, rows: list[Row]) -> Expected:
    """Score the pool in this process one row at a time (what `serve --exact` does), under every weight setting."""
    from paretoalign.rewards.loading import load_reward_model
    from paretoalign.threads import threads_scope

    model = load_reward_model(str(rm_dir))
    prompts = [r.messages for r in rows]
    responses = [r.response for r in rows]
    exp = Expected(rows, list(model.objective_names))
    with threads_scope(THREADS):
        for name, weights in WEIGHT_SETTINGS.items():
            out = model.score(prompts, responses, weights=weights, batch_size=1)
            exp.by_weights[name] = ([float(x) for x in out.score],
                                    [[float(v) for v in row] for row in out.objectives])
    return exp


# ---------------------------------------------------------------------------------------------------- raw HTTP

@dataclass
class RawResponse:
    status: int | None
    body: bytes = b""
    error: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


def _parse_http(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, pos = b"", 0
        while True:
            end = rest.index(b"\r\n", pos)
            size = int(rest[pos:end].split(b";")[0], 16)
            if size == 0:
                break
            body += rest[end + 2:end + 2 + size]
            pos = end + 4 + size
        return status, headers, body
    length = headers.get("content-length")
    return status, headers, rest if length is None else rest[:int(length)]


def http_head(method: str, path: str, *, length: int | None = None, chunked: bool = False,
              content_type: str = "application/json") -> bytes:
    """Request line + headers (Connection: close) for a raw socket."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", f"Content-Type: {content_type}", "Connection: close"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, piece: int = 8192) -> list[bytes]:
    """`body` as HTTP/1.1 chunks, with the terminating chunk."""
    parts = [f"{len(body[i:i + piece]):x}\r\n".encode() + body[i:i + piece] + b"\r\n"
             for i in range(0, len(body), piece)]
    return [*parts, b"0\r\n\r\n"]


async def raw_exchange(port: int, parts: Sequence[bytes], *, timeout_s: float = 60.0) -> RawResponse:
    """Send `parts` (stopping quietly if the server closes early) while reading the answer until EOF."""
    reader, writer = await asyncio.open_connection(HOST, port)

    async def send() -> None:
        try:
            for part in parts:
                writer.write(part)
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server answered (e.g. 413) and closed before taking the rest

    async def receive() -> bytes:
        data = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionError, OSError):
            pass  # a reset after the answer: what was read before it counts
        return data

    try:
        _, data = await asyncio.wait_for(asyncio.gather(send(), receive()), timeout_s)
    except TimeoutError:
        return RawResponse(None, error=f"no answer within {timeout_s} s")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    if not data:
        return RawResponse(None, error="connection closed without an answer")
    try:
        status, _, body = _parse_http(data)
    except (ValueError, IndexError) as exc:
        return RawResponse(None, data, error=f"unparsable answer: {exc}")
    return RawResponse(status, body)


async def send_and_close(port: int, parts: Sequence[bytes]) -> None:
    """Send `parts`, then close the connection without reading anything."""
    _, writer = await asyncio.open_connection(HOST, port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


# ---------------------------------------------------------------------------------------------------- the mix

def _items_body(exp: Expected, idx: list[int], weights_key: str, as_messages: list[bool]) -> dict[str, Any]:
    items = []
    for j, msg in zip(idx, as_messages, strict=True):
        row = exp.rows[j]
        single_user = len(row.messages) == 1
        prompt = row.messages[0]["content"] if single_user and not msg else row.messages
        items.append({"prompt": prompt, "response": row.response, "extra_field": "ignored"})
    return {"items": items, "weights": WEIGHT_SETTINGS[weights_key]}


@dataclass
class Outcome:
    kind: str
    ok: bool
    status: int | None
    detail: str = ""


class FaultMix:
    """Builds and runs the request mix against one server; every request checks its own answer."""

    BAD_KINDS: dict[str, tuple[int, tuple[str, ...]]] = {
        # kind: (expected status, accepted error.path values)
        "malformed_json": (400, ("$",)),
        "not_json": (400, ("$",)),
        "wrong_type_response": (422, ("$.items[0].response",)),
        "missing_response": (422, ("$.items[1].response",)),
        "wrong_type_items": (422, ("$.items",)),
        "body_not_object": (422, ("$",)),
        "wrong_type_query": (422, ("$.query[0]",)),
        "unknown_objective": (422, ("$.weights.nonexistent",)),
        "weights_wrong_length": (422, ("$.weights",)),
        "prompt_not_prefix": (422, ("$.query[0]", "$.prompts[0]")),
        "too_many_items": (413, ("$.items",)),
        "text_too_long": (413, ("$.items[0].response",)),
        "oversized_content_length": (413, ("$",)),
        "oversized_chunked": (413, ("$",)),
    }
    DISCONNECT_KINDS = ("disconnect_half_body", "disconnect_before_read")

    def __init__(self, url: str, port: int, exp: Expected, tokenizer: Any, *, seed: int = 0) -> None:
        self.url = url
        self.port = port
        self.exp = exp
        self.tokenizer = tokenizer
        self.rng = random.Random(seed)

    def plan(self, n: int) -> list[str]:
        """`n` request kinds: ~35% valid /v1/rewards, ~25% valid /get_reward, ~30% bad, ~10% disconnects."""
        bad = list(self.BAD_KINDS)
        kinds = []
        for i in range(n):
            u = (i * 0.6180339887) % 1.0  # low-discrepancy, so a small n still has every class
            if u < 0.35:
                kinds.append("valid_rewards")
            elif u < 0.60:
                kinds.append("valid_get_reward")
            elif u < 0.90:
                kinds.append(bad[i % len(bad)])
            else:
                kinds.append(self.DISCONNECT_KINDS[i % 2])
        self.rng.shuffle(kinds)
        return kinds

    def templated(self, row: Row) -> str:
        return self.tokenizer.apply_chat_template(row.messages, tokenize=False, add_generation_prompt=True)

    # --- valid requests: exact scores ---

    def check_rewards(self, body: dict, idx: list[int], weights_key: str) -> str:
        scores, objectives = self.exp.by_weights[weights_key]
        results = body.get("results")
        if not isinstance(results, list) or len(results) != len(idx):
            return f"results: expected {len(idx)} rows, got {results!r:.200}"
        if body.get("objective_names") != self.exp.objective_names:
            return f"objective_names {body.get('objective_names')} != {self.exp.objective_names}"
        for i, (res, j) in enumerate(zip(results, idx, strict=True)):
            if res.get("index") != i:
                return f"results[{i}].index is {res.get('index')}"
            if res.get("score") != scores[j]:
                return f"results[{i}].score {res.get('score')!r} != expected {scores[j]!r} (row {j}, {weights_key})"
            got = [res.get("objectives", {}).get(name) for name in self.exp.objective_names]
            if got != objectives[j]:
                return f"results[{i}].objectives {got} != expected {objectives[j]}"
        return ""

    async def valid_rewards(self, client: httpx.AsyncClient) -> Outcome:
        n = self.rng.randint(1, 4)
        idx = [self.rng.randrange(len(self.exp.rows)) for _ in range(n)]
        weights_key = self.rng.choice(list(WEIGHT_SETTINGS))
        body = _items_body(self.exp, idx, weights_key, [self.rng.random() < 0.5 for _ in idx])
        r = await client.post("/v1/rewards", json=body)
        if r.status_code != 200:
            return Outcome("valid_rewards", False, r.status_code, r.text[:300])
        problem = self.check_rewards(r.json(), idx, weights_key)
        return Outcome("valid_rewards", not problem, 200, problem)

    async def valid_get_reward(self, client: httpx.AsyncClient) -> Outcome:
        n = self.rng.randint(1, 4)
        idx = [self.rng.randrange(len(self.exp.rows)) for _ in range(n)]
        prompts = [self.templated(self.exp.rows[j]) for j in idx]
        tails = [END_OF_TURN, END_OF_TURN + "\n", ""]
        queries = [p + self.exp.rows[j].response + self.rng.choice(tails) for p, j in zip(prompts, idx, strict=True)]
        r = await client.post("/get_reward", json={"query": queries, "prompts": prompts, "labels": [None] * n})
        if r.status_code != 200:
            return Outcome("valid_get_reward", False, r.status_code, r.text[:300])
        body = r.json()
        scores, objectives = self.exp.by_weights["gated"]
        want = [scores[j] for j in idx]
        if body.get("rewards") != want or body.get("scores") != want:
            return Outcome("valid_get_reward", False, 200, f"rewards {body.get('rewards')} != expected {want}")
        logs = body.get("extra_logs") or {}
        for k, name in enumerate(self.exp.objective_names):
            if logs.get(name) != [objectives[j][k] for j in idx]:
                return Outcome("valid_get_reward", False, 200, f"extra_logs[{name!r}] {logs.get(name)} wrong")
        return Outcome("valid_get_reward", True, 200)

    # --- bad requests: a 4xx naming a JSON path ---

    def bad_request(self, kind: str) -> tuple[str, list[bytes]]:
        """(path, raw parts) of one bad request of `kind`."""
        good = {"prompt": "hello", "response": "hi there"}

        def dumps(obj: Any) -> bytes:
            return json.dumps(obj).encode()

        endpoint = "/v1/rewards"
        if kind == "malformed_json":
            body = b'{"items": [{"prompt": "a", "response": "b"}'
        elif kind == "not_json":
            body = b"this is not json at all"
        elif kind == "wrong_type_response":
            body = dumps({"items": [{"prompt": "a", "response": 5}]})
        elif kind == "missing_response":
            body = dumps({"items": [good, {"prompt": "a"}]})
        elif kind == "wrong_type_items":
            body = dumps({"items": "not a list"})
        elif kind == "body_not_object":
            body = dumps([1, 2, 3])
        elif kind == "wrong_type_query":
            endpoint, body = "/get_reward", dumps({"query": [1, 2], "prompts": ["a", "b"]})
        elif kind == "unknown_objective":
            body = dumps({"items": [good], "weights": {"nonexistent": 1.0}})
        elif kind == "weights_wrong_length":
            body = dumps({"items": [good], "weights": [1.0, 2.0]})
        elif kind == "prompt_not_prefix":
            endpoint, body = "/get_reward", dumps({"query": ["something else entirely"], "prompts": ["the prompt"]})
        elif kind == "too_many_items":
            body = dumps({"items": [good] * (MAX_ITEMS + 1)})
        elif kind == "text_too_long":
            body = dumps({"items": [{"prompt": "a", "response": "x" * (MAX_TEXT_CHARS + 500)}]})
        elif kind in ("oversized_content_length", "oversized_chunked"):
            filler = "y" * (MAX_BODY_BYTES + 4096)
            body = dumps({"items": [{"prompt": "a", "response": filler}]})
            if kind == "oversized_chunked":
                return endpoint, [http_head("POST", endpoint, chunked=True), *chunked(body)]
            head = http_head("POST", endpoint, length=len(body))
            return endpoint, [head, *(body[i:i + 16384] for i in range(0, len(body), 16384))]
        else:
            raise ValueError(kind)
        return endpoint, [http_head("POST", endpoint, length=len(body)), body]

    async def bad(self, kind: str) -> Outcome:
        status, paths = self.BAD_KINDS[kind]
        _, parts = self.bad_request(kind)
        r = await raw_exchange(self.port, parts)
        if r.status is None:
            return Outcome(kind, False, None, r.error or "")
        try:
            err = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            return Outcome(kind, False, r.status, f"not an error body: {r.body[:200]!r}")
        problems = []
        if r.status != status:
            problems.append(f"status {r.status} != {status}")
        if err.get("path") not in paths:
            problems.append(f"path {err.get('path')!r} not in {paths}")
        if err.get("code") != r.status or not isinstance(err.get("message"), str) or not err.get("type"):
            problems.append(f"error body {err}")
        return Outcome(kind, not problems, r.status, "; ".join(problems) + (f" ({err.get('message')})"
                                                                           if problems else ""))

    async def disconnect(self, kind: str) -> Outcome:
        j = self.rng.randrange(len(self.exp.rows))
        body = json.dumps(_items_body(self.exp, [j], "gated", [True])).encode()
        head = http_head("POST", "/v1/rewards", length=len(body))
        if kind == "disconnect_half_body":
            await send_and_close(self.port, [head, body[:len(body) // 2]])
        else:
            await send_and_close(self.port, [head, body])
        return Outcome(kind, True, None)

    async def one(self, kind: str, client: httpx.AsyncClient) -> Outcome:
        try:
            if kind == "valid_rewards":
                return await self.valid_rewards(client)
            if kind == "valid_get_reward":
                return await self.valid_get_reward(client)
            if kind in self.DISCONNECT_KINDS:
                return await self.disconnect(kind)
            return await self.bad(kind)
        except (httpx.HTTPError, OSError) as exc:
            return Outcome(kind, False, None, f"{type(exc).__name__}: {exc}")

    async def run(self, n: int, concurrency: int) -> list[Outcome]:
        """Send the `n` requests of `plan(n)` with at most `concurrency` open at once."""
        kinds = self.plan(n)
        gate = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=120.0) as client:
            async def guarded(kind: str) -> Outcome:
                async with gate:
                    return await self.one(kind, client)

            return list(await asyncio.gather(*(guarded(k) for k in kinds)))


def count_5xx(metrics_text: str) -> int:
    """Total of paretoalign_requests_total samples whose status label is 5xx."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("paretoalign_requests_total{") and 'status="5' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


# ---------------------------------------------------------------------------------------------------- SIGTERM

async def drain_check(server: ServerProcess, mix: FaultMix, *, n_requests: int = 12, items: int = MAX_ITEMS,
                      first_answer_timeout_s: float = 30.0) -> dict[str, Any]:
    """Put `n_requests` full requests in flight, SIGTERM the server, and collect their answers and its exit."""
    exp = mix.exp
    plans = []
    for r in range(n_requests):
        idx = [(r * items + i) % len(exp.rows) for i in range(items)]
        body = json.dumps(_items_body(exp, idx, "gated", [True] * items)).encode()
        plans.append((idx, [http_head("POST", "/v1/rewards", length=len(body)), body]))
    done_at: dict[int, float] = {}

    async def request(r: int) -> RawResponse:
        resp = await raw_exchange(server.port, plans[r][1], timeout_s=GRACEFUL_TIMEOUT_S + 30)
        done_at[r] = time.monotonic()
        return resp

    tasks = [asyncio.create_task(request(r)) for r in range(n_requests)]
    # SIGTERM once the first answer is back: by then every request was written long ago and read by the server (it
    # takes them as they arrive), and the ones in later batches are still being scored.
    await asyncio.wait(tasks, timeout=first_answer_timeout_s, return_when=asyncio.FIRST_COMPLETED)
    sigterm_at = time.monotonic()
    pending = sum(1 for t in tasks if not t.done())
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    answers = await asyncio.gather(*tasks)
    loop = asyncio.get_running_loop()
    try:
        rc = await loop.run_in_executor(None, server.proc.wait, GRACEFUL_TIMEOUT_S + 15)
    except subprocess.TimeoutExpired:
        rc = None
    exit_s = time.monotonic() - sigterm_at
    problems = []
    for r, resp in enumerate(answers):
        if resp.status != 200:
            problems.append(f"request {r}: {resp.status} {resp.error or resp.body[:200]!r}")
            continue
        problem = mix.check_rewards(resp.json(), plans[r][0], "gated")
        if problem:
            problems.append(f"request {r}: {problem}")
    return {"requests": n_requests, "items_each": items, "pending_at_sigterm": pending,
            "completed_after_sigterm": sum(1 for t in done_at.values() if t > sigterm_at),
            "ok": n_requests - len(problems),
            "statuses": dict(Counter(str(a.status) for a in answers)), "problems": problems[:10],
            "exit_code": rc, "exit_seconds_after_sigterm": round(exit_s, 3),
            "graceful_timeout_s": GRACEFUL_TIMEOUT_S}


# ---------------------------------------------------------------------------------------------------- a whole run

async def fault_run(server: ServerProcess, mix: FaultMix, *, n: int, concurrency: int,
                    timeout_s: float) -> dict[str, Any]:
    """Warm up, the mix (under a global timeout), the after-checks, then the SIGTERM drain; a JSON-able report."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as client:
        for kind in ("valid_rewards", "valid_get_reward"):
            outcome = await mix.one(kind, client)
            if not outcome.ok:
                raise AssertionError(f"warm-up {kind} failed: {outcome}\n{server.log()}")
    rss_before = rss_mb(server.pid)
    t0 = time.monotonic()
    outcomes = await asyncio.wait_for(mix.run(n, concurrency), timeout_s)
    mix_s = time.monotonic() - t0
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
        health = await client.get("/health")
        metrics = await client.get("/metrics")
    rss_after = rss_mb(server.pid)
    per_kind: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = per_kind.setdefault(o.kind, {"sent": 0, "ok": 0})
        row["sent"] += 1
        row["ok"] += int(o.ok)
    failures = [f"{o.kind}: {o.status} {o.detail}" for o in outcomes if not o.ok]
    drain = await asyncio.wait_for(drain_check(server, mix), GRACEFUL_TIMEOUT_S + 90)
    log = server.log(tail=10**7)
    return {
        "requests": n, "concurrency": concurrency, "mix_seconds": round(mix_s, 3),
        "per_kind": dict(sorted(per_kind.items())),
        "answers_5xx": sum(1 for o in outcomes if o.status is not None and o.status >= 500),
        "metrics_5xx": count_5xx(metrics.text) if metrics.status_code == 200 else None,
        "metrics_status": metrics.status_code,
        "failures": failures[:20], "n_failures": len(failures),
        "health_after": {"status": health.status_code, "body": health.json() if health.status_code == 200 else None},
        "rss_mb_before": round(rss_before, 1), "rss_mb_after": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1), "rss_growth_bound_mb": RSS_GROWTH_BOUND_MB,
        "drain": drain,
        "server_log_tracebacks": log.count("Traceback (most recent call last)"),
        "server_log_errors": sum(1 for line in log.splitlines() if line.startswith("ERROR")),
    }


def verdict(report: dict[str, Any]) -> list[str]:
    """What failed in a `fault_run` report (empty: all good)."""
    problems = []
    if report["n_failures"]:
        problems.append(f"{report['n_failures']} requests wrong: {report['failures'][:5]}")
    if report["answers_5xx"] or report["metrics_5xx"]:
        problems.append(f"5xx: {report['answers_5xx']} answers, {report['metrics_5xx']} in /metrics")
    if report["server_log_tracebacks"] or report["server_log_errors"]:
        problems.append(f"the server logged {report['server_log_tracebacks']} tracebacks and "
                        f"{report['server_log_errors']} ERROR lines")
    if report["health_after"]["status"] != 200:
        problems.append(f"/health after: {report['health_after']}")
    if report["rss_growth_mb"] >= RSS_GROWTH_BOUND_MB:
        problems.append(f"RSS grew {report['rss_growth_mb']} MB >= {RSS_GROWTH_BOUND_MB}")
    d = report["drain"]
    if d["problems"] or d["statuses"] != {"200": d["requests"]}:
        problems.append(f"drain: {d['statuses']} {d['problems'][:3]}")
    if d["pending_at_sigterm"] < 1:
        problems.append("drain: no request was still in flight at SIGTERM (make the drain requests bigger)")
    if d["exit_code"] != 0 or d["exit_seconds_after_sigterm"] > d["graceful_timeout_s"]:
        problems.append(f"drain: exit code {d['exit_code']} after {d['exit_seconds_after_sigterm']} s")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Build the tiny RM, start the server, run the full mix, write the JSON report; 1 when a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1000, help="requests open at once")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="global timeout of the mix")
    parser.add_argument("--pool", type=int, default=96, help="distinct rows the valid requests draw from")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="serve-fault-") as tmp:
        rm_dir, tok_dir = build_tiny_rm(Path(tmp))
        exp = expected_scores(rm_dir, make_pool(args.pool, args.seed))
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        server = ServerProcess(server_args(rm_dir, tok_dir), log_path=Path(tmp) / "server.log")
        with server:
            mix = FaultMix(server.url, server.port, exp, tokenizer, seed=args.seed)
            report = asyncio.run(fault_run(server, mix, n=args.requests, concurrency=args.concurrency,
                                           timeout_s=args.timeout_s))
        log_tail = server.log(3000)
    report["server_command"] = " ".join(["paretoalign serve", *server.argv[4:]])
    report["machine"] = {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()}
    problems = verdict(report)
    report["verdict"] = problems or "pass"
    if problems:
        report["server_log_tail"] = log_tail
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("per_kind", "answers_5xx", "metrics_5xx", "rss_mb_before",
                                             "rss_mb_after", "drain", "verdict")}, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
