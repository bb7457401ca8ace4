"""OpenRLHF's own remote-RM client (`openrlhf.utils.agent.SingleTurnAgentExecutor`) against `paretoalign serve`.

The server is a real `paretoalign serve` subprocess on 127.0.0.1 (a tiny random reward model on a 2-layer Llama,
`--exact`, `--query-template` = the tiny ChatML tokenizer); the policy is a fake vLLM engine that returns a fixed
response's token ids + eos. What OpenRLHF gets back ("reward", "scores", "extra_logs") must equal the reward model's
own `score(prompt messages, response, batch_size=1)` bit for bit. Skipped when openrlhf is not importable, unless
PARETOALIGN_REQUIRE_OPENRLHF=1 (CI), where that is a failure.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_fault.py"
CONVERSATIONS = [
    ([{"role": "user", "content": "How do I bake bread?"}],
     "Mix flour, water, salt and yeast, knead, let it rise, then bake."),
    ([{"role": "system", "content": "Please answer the question."}, {"role": "user", "content": "hello"}],
     "Paris is the capital of France."),
    ([{"role": "user", "content": "explain why"}, {"role": "assistant", "content": "because"},
      {"role": "user", "content": "thanks, and the capital of Germany?"}],
     "Berlin is the capital of Germany."),
    ([{"role": "user", "content": "Can you help?"}], "I cannot help with that request, but here is a safer one."),
]


def _agent_module() -> Any:
    try:
        from openrlhf.utils import agent
    except ImportError as exc:
        if os.environ.get("PARETOALIGN_REQUIRE_OPENRLHF") == "1":
            pytest.fail(f"PARETOALIGN_REQUIRE_OPENRLHF=1 but openrlhf is not importable: {exc}")
        pytest.skip(f"openrlhf is not importable ({exc}); install it with "
                    "`pip install --no-deps openrlhf==0.11.2 pylatexenc==2.10`")
    return agent


@pytest.fixture(scope="module")
def agent() -> Any:
    """openrlhf.utils.agent (skip or fail when absent, see the module docstring)."""
    return _agent_module()


@pytest.fixture(scope="module")
def sf() -> Any:
    """benchmarks/serve_fault.py (its ServerProcess), imported from its file."""
    spec = importlib.util.spec_from_file_location("serve_fault", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_fault"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_rm_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    from tests.rewards.model_factory import random_llama_rm

    return random_llama_rm(tiny_llama_dir).save_pretrained(tmp_path_factory.mktemp("openrlhf") / "rm")


@pytest.fixture(scope="module")
def model(tiny_rm_dir) -> Any:
    from paretoalign.rewards.loading import load_reward_model

    return load_reward_model(str(tiny_rm_dir))


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


@pytest.fixture(scope="module")
def server(agent, sf, tiny_rm_dir, tiny_llama_dir) -> Any:
    args = ["--model", str(tiny_rm_dir), "--query-template", str(tiny_llama_dir), "--exact", "--threads", "1"]
    with sf.ServerProcess(args) as srv:
        yield srv


# ------------------------------------------------------------------ a fake vLLM engine


@dataclass
class Completion:
    """The fields of vllm.CompletionOutput that SingleTurnAgentExecutor reads."""

    token_ids: list[int]
    text: str
    finish_reason: str = "stop"
    logprobs: Any = None


@dataclass
class RequestOutput:
    outputs: list[Completion]


@dataclass
class SamplingParams:
    """What the executor reads and deep-copies of vllm.SamplingParams."""

    max_tokens: int | None = None
    logprobs: int | None = None
    temperature: float = 1.0


@dataclass
class FakeEngine:
    """An async `generate(prompt_token_ids, sampling_params, multi_modal_data)` returning a fixed response + eos."""

    tokenizer: Any
    response: str
    calls: list[tuple[list[int], int | None]] = field(default_factory=list)

    async def generate(self, prompt_token_ids: list[int], sampling_params: SamplingParams,
                       multi_modal_data: Any = None) -> RequestOutput:
        self.calls.append((list(prompt_token_ids), sampling_params.max_tokens))
        ids = self.tokenizer(self.response, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        return RequestOutput([Completion(ids, self.tokenizer.decode(ids, skip_special_tokens=False))])


def _templated(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _expected_logs(out: Any, names: list[str]) -> dict[str, list[float]]:
    logs = {name: [float(x) for x in out.objectives[:, i]] for i, name in enumerate(names)}
    if out.verbosity_contribution is not None:
        logs["verbosity_contribution"] = [float(x) for x in out.verbosity_contribution]
    return logs


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("case", range(len(CONVERSATIONS)))
def test_single_turn_executor_gets_the_models_scores(agent, server, model, tokenizer, case, one_thread):
    messages, response = CONVERSATIONS[case]
    prompt = _templated(tokenizer, messages)
    executor = agent.SingleTurnAgentExecutor(server.url + "/get_reward")
    engine = FakeEngine(tokenizer, response)
    params = SamplingParams(max_tokens=64)
    out = asyncio.run(executor.execute(prompt, f"label-{case}", deepcopy(params), 1024, tokenizer, engine))

    # What OpenRLHF sent is the prompt, the response and the eos (so the test is about the server, not the tokenizer).
    query = tokenizer.decode(out["observation_tokens"], skip_special_tokens=False)
    assert query == prompt + response + tokenizer.eos_token
    assert engine.calls and engine.calls[0][1] == 64
    want = model.score([messages], [response], batch_size=1)
    assert out["reward"] == [float(want.score[0])], out
    assert out["scores"] == [float(want.score[0])]
    assert out["extra_logs"] == _expected_logs(want, model.objective_names)
    assert out["truncated"] is False


def test_fetch_rewards_via_http_several_queries(agent, server, model, tokenizer, one_thread):
    prompts = [_templated(tokenizer, m) for m, _ in CONVERSATIONS]
    responses = [r for _, r in CONVERSATIONS]
    queries = [p + r + tokenizer.eos_token for p, r in zip(prompts, responses, strict=True)]
    queries[1] += "\n"  # a decoded eos with the template's newline after it is stripped as well
    executor = agent.SingleTurnAgentExecutor(server.url + "/get_reward")
    got = asyncio.run(executor._fetch_rewards_via_http(queries, prompts, [None, "a", {"k": 1}, 3]))
    want = model.score([m for m, _ in CONVERSATIONS], responses, batch_size=1)
    assert len(got) == 1
    assert got[0]["rewards"] == [float(x) for x in want.score]
    assert got[0]["scores"] == got[0]["rewards"]
    assert got[0]["extra_logs"] == _expected_logs(want, model.objective_names)


def test_fetch_rewards_sharded_over_two_endpoints(agent, server, model, tokenizer, one_thread):
    prompts = [_templated(tokenizer, m) for m, _ in CONVERSATIONS]
    responses = [r for _, r in CONVERSATIONS]
    queries = [p + r + tokenizer.eos_token for p, r in zip(prompts, responses, strict=True)]
    executor = agent.SingleTurnAgentExecutor([server.url + "/get_reward"] * 2)
    got = asyncio.run(executor._fetch_rewards_via_http(queries, prompts, [None] * len(queries)))
    want = [float(x) for x in model.score([m for m, _ in CONVERSATIONS], responses, batch_size=1).score]
    assert [len(g["rewards"]) for g in got] == [2, 2]
    assert got[0]["rewards"] + got[1]["rewards"] == want


def test_bad_query_reaches_openrlhf_as_no_reward(agent, server, tokenizer):
    """A query that does not start with its prompt is a 4xx; OpenRLHF retries, then leaves the reward unset."""
    executor = agent.SingleTurnAgentExecutor(server.url + "/get_reward")
    r = httpx.post(server.url + "/get_reward", json={"query": ["other text"], "prompts": ["the prompt"]}, timeout=30)
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["path"].startswith(("$.query", "$.prompts"))
    with pytest.raises(RuntimeError, match="Request error"):
        asyncio.run(asyncio.wait_for(executor._fetch_rewards_via_http(["other text"], ["the prompt"], [None]), 60))


async def _recording_proxy(target: str, seen: list[tuple[bytes, bytes]]) -> tuple[asyncio.Server, int]:
    """A one-shot HTTP/1.1 endpoint that records each request's head and body, forwards the body unchanged to
    `target` and answers with the target's answer."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:] if line)}
        body = await reader.readexactly(int(headers["content-length"]))
        seen.append((head, body))
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(target, content=body, headers={"content-type": headers["content-type"]})
        writer.write(f"HTTP/1.1 {r.status_code} OK\r\nContent-Type: application/json\r\nContent-Length: "
                     f"{len(r.content)}\r\nConnection: close\r\n\r\n".encode() + r.content)
        await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    return proxy, proxy.sockets[0].getsockname()[1]


def test_the_bytes_aiohttp_sends_are_what_the_server_parses(agent, server, model, tokenizer, one_thread):
    messages, response = CONVERSATIONS[0]
    prompt = _templated(tokenizer, messages)
    query = prompt + response + tokenizer.eos_token
    seen: list[tuple[bytes, bytes]] = []

    async def go() -> list[dict]:
        proxy, port = await _recording_proxy(server.url + "/get_reward", seen)
        try:
            executor = agent.SingleTurnAgentExecutor(f"http://127.0.0.1:{port}/get_reward")
            return await executor._fetch_rewards_via_http([query], [prompt], ["lbl"])
        finally:
            proxy.close()
            await proxy.wait_closed()

    got = asyncio.run(asyncio.wait_for(go(), 60))
    assert len(seen) == 1
    head, body = seen[0]
    assert head.startswith(b"POST /get_reward HTTP/1.1\r\n")
    assert b"application/json" in head.lower()
    assert json.loads(body) == {"query": [query], "prompts": [prompt], "labels": ["lbl"]}
    # The same bytes sent straight to the server: the same answer, and the model's score.
    direct = httpx.post(server.url + "/get_reward", content=body, headers={"content-type": "application/json"},
                        timeout=30)
    assert direct.status_code == 200
    assert got[0] == direct.json()
    assert got[0]["rewards"] == [float(model.score([messages], [response], batch_size=1).score[0])]


@pytest.mark.integration
def test_smollm2_template_drops_its_default_system_prompt(agent, sf, tiny_rm_dir, model, one_thread):
    """With SmolLM2's template (it injects a default system prompt), the RM sees only the user's turn."""
    from transformers import AutoTokenizer

    from paretoalign.embed.models import resolve_model

    smol = AutoTokenizer.from_pretrained(resolve_model("smollm2"))
    messages, response = CONVERSATIONS[0]
    prompt = _templated(smol, messages)
    assert "system" in prompt  # the template's own default system turn
    with sf.ServerProcess(["--model", str(tiny_rm_dir), "--query-template", "smollm2", "--exact", "--threads", "1"]) \
            as srv:
        executor = agent.SingleTurnAgentExecutor(srv.url + "/get_reward")
        out = asyncio.run(executor.execute(prompt, None, SamplingParams(max_tokens=64), 2048, smol,
                                           FakeEngine(smol, response)))
    want = model.score([messages], [response], batch_size=1)
    assert out["reward"] == [float(want.score[0])]
    assert out["extra_logs"] == _expected_logs(want, model.objective_names)
