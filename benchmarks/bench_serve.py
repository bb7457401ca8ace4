"""Throughput of `paretoalign serve` (micro-batching) on the shipped default reward model, three ways.

Same held-out rows, same model, same client code:

  (a) `paretoalign serve --model default`, 64 concurrent clients, one row per request (micro-batching on);
  (b) the same server, one client sending the rows one at a time;
  (c) a naive FastAPI scorer written here (one `model.score` per request, no batching; a sync endpoint, so
      FastAPI's thread pool runs the requests in parallel), in its own uvicorn process, hit by the same 64 clients.

Reports rows/s, the ratios (a)/(b) and (a)/(c), p50/p99 request latency, each the median of --repeats runs, and
checks that (a)'s scores equal this process's `model.score` of the same rows within 1e-6 * max(1, |score|) (with
--exact-check also a `serve --exact` run against `model.score(batch_size=1)`, bit for bit). Rows: the project's
held-out ("test") side of the HH-RLHF test file in ../shared/data (chosen replies; --short: only single-turn rows
with short replies), or --data FILE.jsonl with the same schema. --serve-args adds `paretoalign serve` flags for (a)
and (b).

    nice python benchmarks/bench_serve.py [--rows 256] [--clients 64] [--repeats 3] [--short]
        [--serve-args "--batch-size 8"] [--exact-check]

Each run is stored under its label in benchmarks/results/bench_serve.json ({"runs": {label: report}}; other
labels are kept) and printed as a summary table. Servers bind 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_fault import HOST, ServerProcess, free_port  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "hh_rlhf" / "hh_rlhf_test.jsonl"
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "bench_serve.json"
TOLERANCE = 1e-6


# ---------------------------------------------------------------------------------------------------- rows

SHORT_CHARS = 300
"""--short: single-turn prompts whose chosen reply has at most this many characters."""


def load_rows(path: Path, n: int, *, short: bool = False) -> list[dict[str, Any]]:
    """`n` held-out rows {"prompt": messages, "response": chosen}, spread evenly over the file (`short`: only
    single-turn prompts with a reply of at most SHORT_CHARS characters)."""
    from paretoalign.data.hh import parse_hh_dialogue
    from paretoalign.data.splits import split_of

    held_out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if not record.get("chosen"):
                continue
            messages = parse_hh_dialogue(record["prompt"])
            if short and (len(messages) != 1 or len(record["chosen"]) > SHORT_CHARS):
                continue
            if split_of(messages) == "test":
                held_out.append({"prompt": messages, "response": record["chosen"]})
    if len(held_out) < n:
        raise SystemExit(f"{path}: only {len(held_out)} held-out rows, asked for {n}")
    step = len(held_out) / n
    return [held_out[int(i * step)] for i in range(n)]


# ---------------------------------------------------------------------------------------------------- (c)

def naive_app(model_ref: str) -> Any:
    """A FastAPI app that scores each request's rows with one `model.score` call: no queue, no batching."""
    from fastapi import FastAPI

    from paretoalign.rewards.loading import load_reward_model

    model = load_reward_model(model_ref)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/rewards")
    def rewards(body: dict[str, Any]) -> dict[str, Any]:
        items = body["items"]
        out = model.score([it["prompt"] for it in items], [it["response"] for it in items])
        return {"results": [{"index": i, "score": float(s)} for i, s in enumerate(out.score)]}

    return app


def serve_naive(model_ref: str, port: int) -> None:
    """Run `naive_app` under uvicorn on 127.0.0.1:port until SIGTERM, with the CPU-thread setup every paretoalign
    command gets (`paretoalign.threads`, default "auto"), so both servers run torch the same way."""
    import uvicorn

    from paretoalign.threads import threads_scope

    with threads_scope():
        uvicorn.run(naive_app(model_ref), host=HOST, port=port, log_level="warning")


# ---------------------------------------------------------------------------------------------------- clients

async def drive(url: str, rows: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """`clients` concurrent clients, each taking the next row and POSTing it alone; per-request latencies."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(rows)):
        queue.put_nowait(i)
    scores: list[float | None] = [None] * len(rows)
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600.0) as client:
        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t = time.perf_counter()
                r = await client.post("/v1/rewards", json={"items": [rows[i]]})
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors.append(f"row {i}: {r.status_code} {r.text[:200]}")
                    continue
                scores[i] = r.json()["results"][0]["score"]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies)
    return {"seconds": wall, "rows_per_s": len(rows) / wall, "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p99_ms": float(np.percentile(lat, 99) * 1e3), "errors": errors, "scores": scores}


def batch_stats(url: str) -> dict[str, float]:
    """Mean rows and requests per batch from the server's /metrics histograms (sum / count)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("paretoalign_batch_rows", "paretoalign_batch_requests"):
            for suffix in ("_sum", "_count"):
                if line.startswith(name + suffix + " "):
                    values[name + suffix] = float(line.split()[-1])
    out = {}
    for name in ("paretoalign_batch_rows", "paretoalign_batch_requests"):
        if values.get(name + "_count"):
            out[name.removeprefix("paretoalign_") + "_mean"] = values[name + "_sum"] / values[name + "_count"]
            out["batches"] = values[name + "_count"]
    return out


def warm(url: str, rows: list[dict[str, Any]]) -> None:
    """A few requests before timing (first tokenizer and kernel calls)."""
    for row in rows[:4]:
        httpx.post(url + "/v1/rewards", json={"items": [row]}, timeout=600).raise_for_status()


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("seconds", "rows_per_s", "p50_ms", "p99_ms")
    return {**{k: round(statistics.median(r[k] for r in runs), 3) for k in keys},
            "runs": [{**{k: round(r[k], 3) for k in keys},
                      "max_abs_diff_vs_in_process": r["max_abs_diff_vs_in_process"],
                      "rows_off_by_more_than_tolerance": r["rows_off_by_more_than_tolerance"]} for r in runs],
            "errors": sum(len(r["errors"]) for r in runs), "first_errors": [e for r in runs for e in r["errors"]][:5]}


def max_abs_diff(got: Sequence[float | None], want: np.ndarray) -> float:
    if any(g is None for g in got):
        return float("inf")
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want)))


def wrong_rows(got: Sequence[float | None], want: np.ndarray, tolerance: float = TOLERANCE) -> int:
    """Rows whose score is missing or further than `tolerance` * max(1, |score|) from the in-process one (float32
    features: batch composition moves the last bits, relative to the score's size)."""
    return sum(1 for g, w in zip(got, want, strict=True)
               if g is None or abs(g - float(w)) > tolerance * max(1.0, abs(float(w))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--short", action="store_true",
                        help=f"only single-turn rows with replies of at most {SHORT_CHARS} characters")
    parser.add_argument("--serve-args", default="", help='extra `paretoalign serve` flags, e.g. "--batch-size 8"')
    parser.add_argument("--label", help="the key of this run in the output file (default: from the settings)")
    parser.add_argument("--exact-check", action="store_true",
                        help="also run (a) against `serve --exact` and compare with model.score(batch_size=1)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--naive-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_server:
        serve_naive(args.model, args.naive_server)
        return 0

    from paretoalign.rewards.loading import load_reward_model
    from paretoalign.threads import threads_scope

    rows = load_rows(args.data, args.rows, short=args.short)
    load_start = os.getloadavg()
    model = load_reward_model(args.model)
    t = time.perf_counter()
    reference = model.score([r["prompt"] for r in rows], [r["response"] for r in rows]).score
    in_process_s = time.perf_counter() - t
    print(f"{len(rows)} rows; in-process model.score: {in_process_s:.1f} s ({len(rows) / in_process_s:.2f} rows/s)",
          flush=True)
    naive_port = free_port()
    naive = subprocess.Popen([sys.executable, __file__, "--model", args.model, "--naive-server", str(naive_port)],
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO_ROOT)
    naive_url = f"http://{HOST}:{naive_port}"
    results: dict[str, list[dict[str, Any]]] = {"a_batched_concurrent": [], "b_sequential": [],
                                                "c_naive_concurrent": []}
    server_args = ["--model", args.model, *shlex.split(args.serve_args)]
    try:
        with ServerProcess(server_args) as server:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(naive_url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if naive.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the naive FastAPI scorer did not start")
                time.sleep(0.3)
            warm(server.url, rows)
            warm(naive_url, rows)
            for rep in range(args.repeats):
                for key, url, clients in (("a_batched_concurrent", server.url, args.clients),
                                          ("b_sequential", server.url, 1),
                                          ("c_naive_concurrent", naive_url, args.clients)):
                    before = batch_stats(url) if url == server.url else {}
                    run = asyncio.run(drive(url, rows, clients))
                    if url == server.url:
                        after = batch_stats(url)
                        n_batches = after.get("batches", 0) - before.get("batches", 0)
                        run["batches"] = n_batches
                        run["rows_per_batch"] = len(rows) / n_batches if n_batches else None
                    run["max_abs_diff_vs_in_process"] = max_abs_diff(run["scores"], reference)
                    run["rows_off_by_more_than_tolerance"] = wrong_rows(run["scores"], reference)
                    results[key].append(run)
                    print(f"repeat {rep + 1} {key}: {run['rows_per_s']:.2f} rows/s, p50 {run['p50_ms']:.0f} ms, "
                          f"p99 {run['p99_ms']:.0f} ms, max |diff| {run['max_abs_diff_vs_in_process']:.2e}"
                          + (f", {run['rows_per_batch']:.1f} rows/batch" if run.get("rows_per_batch") else ""),
                          flush=True)
            serve_command = " ".join(["paretoalign serve", *server.argv[4:]])
        exact: dict[str, Any] | None = None
        if args.exact_check:
            # Default settings but one fixed thread count on both sides (thread counts can change float rounding,
            # see paretoalign.threads); --serve-args do not apply (--exact excludes --batch-size).
            with ServerProcess(["--model", args.model, "--exact", "--threads", "1"]) as server:
                warm(server.url, rows)
                run = asyncio.run(drive(server.url, rows, args.clients))
            with threads_scope(1):
                want = model.score([r["prompt"] for r in rows], [r["response"] for r in rows], batch_size=1).score
            exact = {"rows_per_s": round(run["rows_per_s"], 3),
                     "bit_identical": run["scores"] == [float(x) for x in want],
                     "max_abs_diff": max_abs_diff(run["scores"], want)}
    finally:
        naive.terminate()
        naive.wait(30)

    summary = {key: summarize(runs) for key, runs in results.items()}
    a, b, c = (summary[k]["rows_per_s"] for k in ("a_batched_concurrent", "b_sequential", "c_naive_concurrent"))
    diffs = [r["max_abs_diff_vs_in_process"] for r in results["a_batched_concurrent"]]
    label = args.label or f"{'short' if args.short else 'all'}-rows{(' ' + args.serve_args) if args.serve_args else ''}"
    report = {
        "command": shlex.join(["python", *sys.argv]), "serve_command": serve_command, "model": args.model,
        "data": os.path.relpath(args.data, REPO_ROOT),
        "row_filter": f"single-turn, reply <= {SHORT_CHARS} chars" if args.short else None,
        "rows": len(rows), "clients": args.clients, "repeats": args.repeats,
        "in_process_rows_per_s": round(len(rows) / in_process_s, 3),
        "modes": summary, "ratio_a_over_b": round(a / b, 3), "ratio_a_over_c": round(a / c, 3),
        "target_a_over_b": 4.0,
        "a_rows_per_batch": [r.get("rows_per_batch") for r in results["a_batched_concurrent"]],
        "a_max_abs_diff_vs_in_process": max(diffs), "a_within_tolerance": not any(r["rows_off_by_more_than_tolerance"]
                                               for r in results["a_batched_concurrent"]),
        "tolerance": TOLERANCE, "exact_check": exact,
        "c_max_abs_diff_vs_in_process": max(r["max_abs_diff_vs_in_process"] for r in results["c_naive_concurrent"]),
        "c_rows_off_by_more_than_tolerance": [r["rows_off_by_more_than_tolerance"]
                                              for r in results["c_naive_concurrent"]],
        "machine": {"cpus": os.cpu_count(), "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
                    "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.output.read_text()) if args.output.is_file() else {}
    runs = previous.get("runs", {}) if isinstance(previous, dict) else {}
    runs[label] = report
    args.output.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"\n{'mode':<24}{'rows/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for key, s in summary.items():
        print(f"{key:<24}{s['rows_per_s']:>10.2f}{s['p50_ms']:>10.0f}{s['p99_ms']:>10.0f}{s['errors']:>8}")
    print(f"(a)/(b) = {a / b:.2f}x (target >= 4x), (a)/(c) = {a / c:.2f}x; (a) max |score - model.score| = "
          f"{max(diffs):.2e} (tolerance {TOLERANCE:g})" + (f"; --exact: {exact}" if exact else ""))
    print(f"load: {report['machine']['uptime']}")
    return 0 if report["a_within_tolerance"] and not any(s["errors"] for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
