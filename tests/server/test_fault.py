"""A CI-sized run of benchmarks/serve_fault.py: a `paretoalign serve` subprocess under 300 concurrent good and bad
requests and client disconnects, then SIGTERM with requests in flight.

Valid answers must be bit-identical to the tiny reward model's `score(..., batch_size=1)` here (the server runs
`--exact`), bad requests a 4xx naming the JSON path, no 5xx anywhere (answers and /metrics), /health answering after,
bounded RSS growth, and a drain in which every in-flight request completes with 200 before the process exits 0.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_fault.py"
N_REQUESTS = 300


@pytest.fixture(scope="module")
def sf():
    """benchmarks/serve_fault.py, imported from its file."""
    spec = importlib.util.spec_from_file_location("serve_fault", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_fault"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(sf, tiny_llama_dir, tmp_path_factory):
    """(expected pool scores, tokenizer, rm_dir, tokenizer_dir) for a tiny random RM on the tiny Llama."""
    from transformers import AutoTokenizer

    from tests.rewards.model_factory import random_llama_rm

    rm_dir = random_llama_rm(tiny_llama_dir).save_pretrained(tmp_path_factory.mktemp("fault") / "rm")
    exp = sf.expected_scores(rm_dir, sf.make_pool(48, seed=3))
    return exp, AutoTokenizer.from_pretrained(str(tiny_llama_dir)), rm_dir, tiny_llama_dir


def test_bad_requests_are_what_the_mix_says(sf, setup):
    """The harness itself: each bad kind's body really is bad in the way its expected path says."""
    exp, tokenizer, _, _ = setup
    mix = sf.FaultMix("http://127.0.0.1:1", 1, exp, tokenizer)
    kinds = mix.plan(N_REQUESTS)
    assert set(kinds) == {"valid_rewards", "valid_get_reward", *sf.FaultMix.BAD_KINDS, *sf.FaultMix.DISCONNECT_KINDS}
    _, parts = mix.bad_request("too_many_items")
    assert len(json.loads(parts[1])["items"]) == sf.MAX_ITEMS + 1 and len(parts[1]) < sf.MAX_BODY_BYTES
    _, parts = mix.bad_request("oversized_chunked")
    assert sum(len(p) for p in parts[1:]) > sf.MAX_BODY_BYTES and b"chunked" in parts[0]
    _, parts = mix.bad_request("oversized_content_length")
    assert f"Content-Length: {sum(len(p) for p in parts[1:])}".encode() in parts[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(mix.bad_request("malformed_json")[1][1])
    assert sf.count_5xx('paretoalign_requests_total{endpoint="/v1/rewards",status="503"} 2.0\n'
                        'paretoalign_requests_total{endpoint="/v1/rewards",status="200"} 9.0\n') == 2


def test_fault_mix_then_sigterm_drain(sf, setup, tmp_path):
    exp, tokenizer, rm_dir, tok_dir = setup
    server = sf.ServerProcess(sf.server_args(rm_dir, tok_dir), log_path=tmp_path / "serve.log")
    with server:
        mix = sf.FaultMix(server.url, server.port, exp, tokenizer, seed=1)
        report = asyncio.run(sf.fault_run(server, mix, n=N_REQUESTS, concurrency=N_REQUESTS, timeout_s=120))
    problems = sf.verdict(report)
    assert not problems, f"{problems}\n{json.dumps(report, indent=1)[:3000]}\n{server.log()}"
    assert sum(v["sent"] for v in report["per_kind"].values()) == N_REQUESTS
    assert report["per_kind"]["valid_rewards"]["ok"] == report["per_kind"]["valid_rewards"]["sent"] > 50
    assert report["health_after"]["body"]["status"] == "ok"
    assert report["drain"]["exit_code"] == 0
