"""The HTTP API over a MicroBatcher of a hashing-backbone reward model: every endpoint's shape and values, and a
table of bad requests answered 4xx with the JSON path of the bad part (never 5xx)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paretoalign.server.config import ServeConfig
from tests.server.conftest import app_client
from tests.tiny import make_tokenizer

ROWS = [
    ("How do I bake bread?", "Mix flour, water, salt and yeast, knead, let it rise, then bake."),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "capital of France?"}],
     "Paris is the capital of France."),
    ([{"role": "user", "content": "explain why"}, {"role": "assistant", "content": "because"},
      {"role": "user", "content": "and the capital of Germany?"}], "Berlin is the capital of Germany."),
]


def as_messages(prompt):
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def items(rows=ROWS):
    return [{"prompt": p, "response": r, "extra": "ignored"} for p, r in rows]


def expected(rm, rows=ROWS, weights=None):
    return rm.score([as_messages(p) for p, _ in rows], [r for _, r in rows], weights=weights)


def chatml(messages, add_generation_prompt=True):
    return make_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


# ---------------------------------------------------------------- /v1/rewards
def test_rewards_gated_equal_the_models_own_scores_exactly(rm, client):
    r = client.post("/v1/rewards", json={"items": items()})
    assert r.status_code == 200, r.text
    body = r.json()
    out = expected(rm)
    assert body["model"] == "test-rm" and body["weights"] is None
    assert body["objective_names"] == rm.objective_names
    assert [res["index"] for res in body["results"]] == [0, 1, 2]
    for j, res in enumerate(body["results"]):
        assert res["score"] == float(out.score[j])
        assert res["objectives"] == {n: float(out.objectives[j, i]) for i, n in enumerate(rm.objective_names)}
        assert res["gating"] == {n: float(out.gating[j, i]) for i, n in enumerate(rm.objective_names)}
        assert res["verbosity_contribution"] == float(out.verbosity_contribution[j])
    assert len({res["score"] for res in body["results"]}) == 3  # the rows really differ


@pytest.mark.parametrize("weights", [{"helpfulness": 1.0, "verbosity": -0.5},
                                     [0.25, 1.0, -0.5, 2.0], {"honesty": 3}])
def test_rewards_with_weights_are_the_weighted_sum_of_the_objectives(rm, client, weights):
    r = client.post("/v1/rewards", json={"items": items(), "weights": weights})
    assert r.status_code == 200, r.text
    body = r.json()
    w = rm.resolve_weights(weights)
    assert body["weights"] == {n: float(v) for n, v in zip(rm.objective_names, w, strict=True)}
    out = expected(rm, weights=weights)
    for j, res in enumerate(body["results"]):
        assert res["score"] == float(out.score[j])
        total = 0.0
        for name in body["objective_names"]:  # left to right, as a page re-ranking without the server would
            total += body["weights"][name] * res["objectives"][name]
        assert res["score"] == total
        assert res["gating"] == body["weights"]
        assert res["verbosity_contribution"] == body["weights"]["verbosity"] * res["objectives"]["verbosity"]


def test_rewards_read_hh_text_prompts_as_paretoalign_score_does(rm, client):
    hh = "\n\nHuman: hello there\n\nAssistant: hi\n\nHuman: how do I bake bread?\n\nAssistant:"
    r = client.post("/v1/rewards", json={"items": [{"prompt": hh, "response": "Knead and bake."}]})
    assert r.status_code == 200, r.text
    messages = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "how do I bake bread?"}]
    assert r.json()["results"][0]["score"] == float(rm.score([messages], ["Knead and bake."]).score[0])


# ---------------------------------------------------------------- /get_reward
def test_get_reward_with_prompts_equals_score_of_the_prompt_messages(rm, client):
    prompts = [chatml(as_messages(p)) for p, _ in ROWS]
    queries = [p + r + "<|im_end|>" for p, (_, r) in zip(prompts, ROWS, strict=True)]
    r = client.post("/get_reward", json={"query": queries, "prompts": prompts, "labels": ["a", None, 3]})
    assert r.status_code == 200, r.text
    body = r.json()
    # without --query-template a templated prompt is one user message: the whole prompt text
    out = rm.score([[{"role": "user", "content": p}] for p in prompts], [resp for _, resp in ROWS])
    assert body["rewards"] == body["scores"] == [float(s) for s in out.score]
    for i, name in enumerate(rm.objective_names):
        assert body["extra_logs"][name] == [float(v) for v in out.objectives[:, i]]
    assert body["extra_logs"]["verbosity_contribution"] == [float(v) for v in out.verbosity_contribution]


def test_get_reward_with_a_query_template_recovers_the_messages(rm):
    from paretoalign.server.query_split import QueryTemplate

    template = QueryTemplate.from_tokenizer(make_tokenizer())
    with app_client(rm, template=template) as client:
        prompts = [chatml(as_messages(p)) for p, _ in ROWS]
        queries = [p + r + "<|im_end|>" for p, (_, r) in zip(prompts, ROWS, strict=True)]
        with_prompts = client.post("/get_reward", json={"query": queries, "prompts": prompts})
        without = client.post("/get_reward", json={"query": queries, "weights": [1, 0, 0, 0]})
    assert with_prompts.status_code == 200 and without.status_code == 200, (with_prompts.text, without.text)
    out = expected(rm)
    assert with_prompts.json()["rewards"] == [float(s) for s in out.score]
    assert without.json()["rewards"] == [float(s) for s in expected(rm, weights=[1, 0, 0, 0]).score]


def test_get_reward_without_prompts_or_template_names_prompts(client):
    r = client.post("/get_reward", json={"query": [chatml(as_messages("hi")) + "hello<|im_end|>"]})
    assert r.status_code == 422
    assert r.json()["error"]["path"] == "$.prompts" and "--query-template" in r.json()["error"]["message"]


# ---------------------------------------------------------------- /classify and /score
def test_classify_messages_and_templated_input_give_probs_label_and_score(rm):
    from paretoalign.server.query_split import QueryTemplate

    template = QueryTemplate.from_tokenizer(make_tokenizer())
    conversation = [*as_messages(ROWS[1][0]), {"role": "assistant", "content": ROWS[1][1]}]
    with app_client(rm, template=template) as client:
        by_messages = client.post("/classify", json={"model": "x", "messages": conversation})
        by_input = client.post("/classify", json={"input": [chatml(conversation, False), chatml(
            [*as_messages(ROWS[0][0]), {"role": "assistant", "content": ROWS[0][1]}], False)]})
    assert by_messages.status_code == 200 and by_input.status_code == 200, (by_messages.text, by_input.text)
    out = expected(rm, [ROWS[1], ROWS[0]])
    for body, rows in ((by_messages.json(), 1), (by_input.json(), 2)):
        assert body["object"] == "list" and body["id"].startswith("classify-") and body["model"] == "test-rm"
        assert len(body["data"]) == rows
        assert body["usage"]["completion_tokens"] == 0 and body["usage"]["total_tokens"] > 0
        for j, row in enumerate(body["data"]):
            probs = [float(v) for v in out.objectives[j]]
            assert row == {"index": j, "label": rm.objective_names[int(np.argmax(probs))], "probs": probs,
                           "num_classes": 4, "score": float(out.score[j])}


def test_classify_input_needs_a_template_and_messages_must_end_with_the_response(client):
    r = client.post("/classify", json={"input": "hello"})
    assert r.status_code == 422 and r.json()["error"]["path"] == "$.input"
    r = client.post("/classify", json={"messages": [{"role": "user", "content": "a"},
                                                    {"role": "user", "content": "b"}]})
    assert r.status_code == 422 and r.json()["error"]["path"] == "$.messages[1].role"
    r = client.post("/classify", json={})
    assert r.status_code == 422 and r.json()["error"]["path"] == "$.input"


def test_score_one_query_against_n_documents_and_n_pairs(rm, client):
    docs = [r for _, r in ROWS]
    one = client.post("/score", json={"text_1": "How do I bake bread?", "text_2": docs})
    pairs = client.post("/score", json={"queries": ["q one", "q two", "q three"], "documents": docs})
    assert one.status_code == 200 and pairs.status_code == 200, (one.text, pairs.text)
    expected_one = rm.score([as_messages("How do I bake bread?")] * 3, docs).score
    expected_pairs = rm.score([as_messages(q) for q in ("q one", "q two", "q three")], docs).score
    assert one.json()["id"].startswith("score-") and one.json()["object"] == "list"
    assert one.json()["data"] == [{"index": j, "object": "score", "score": float(s)}
                                  for j, s in enumerate(expected_one)]
    assert [d["score"] for d in pairs.json()["data"]] == [float(s) for s in expected_pairs]
    bad = client.post("/score", json={"data_1": ["a", "b"], "data_2": ["x", "y", "z"]})
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "$.data_2"
    both = client.post("/score", json={"queries": "a", "text_1": "b", "documents": "x"})
    assert both.status_code == 422 and both.json()["error"]["path"] == "$.text_1"


# ---------------------------------------------------------------- /v1/models, /health, /metrics
def test_models_health_and_metrics(rm, client):
    models = client.get("/v1/models").json()
    (entry,) = models["data"]
    assert models["object"] == "list"
    assert entry["id"] == "test-rm" and entry["object"] == "model" and entry["owned_by"] == "paretoalign"
    assert entry["objectives"] == rm.objective_names and entry["verbosity_objective"] == "verbosity"
    assert entry["format"] == "paretoalign" and entry["policy"] is None
    assert entry["limits"]["max_items"] == 256 and entry["limits"]["max_n"] == 16
    assert client.get("/health").json() == {"status": "ok", "model": "test-rm", "policy": None}
    client.post("/v1/rewards", json={"items": items()})
    client.post("/v1/rewards", json={"items": []})
    text = client.get("/metrics").text
    assert 'paretoalign_requests_total{endpoint="/v1/rewards",status="200"} 1.0' in text
    assert 'paretoalign_requests_total{endpoint="/v1/rewards",status="422"} 1.0' in text
    assert 'paretoalign_requests_total{endpoint="/health",status="200"} 1.0' in text


def test_the_explorer_page_and_the_openapi_schema_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert client.get("/explorer/explorer.js").status_code == 200
    schema = client.get("/openapi.json")
    assert schema.status_code == 200 and "/v1/rewards" in schema.json()["paths"]


# ---------------------------------------------------------------- /v1/best-of-n
@pytest.fixture(scope="module")
def tiny_policy():
    from tests.inference.conftest import make_policy

    return make_policy("llama")


def test_best_of_n_picks_the_best_finished_candidate(rm, tiny_policy):
    with app_client(rm, policy=tiny_policy) as client:
        r = client.post("/v1/best-of-n", json={"prompt": "How do I bake bread?", "n": 4, "max_new_tokens": 24,
                                               "seed": 3, "weights": {"helpfulness": 1.0}})
        health = client.get("/health").json()
    assert r.status_code == 200, r.text
    row = r.json()
    assert health["policy"] == "tiny-llama"
    assert row["prompt"] == "How do I bake bread?" and set(row) == {"prompt", "response", "selected", "candidates",
                                                                     "stats"}
    cands = row["candidates"]
    assert len(cands) == 4 and row["stats"]["n"] == 4
    finished = [c for c in cands if c["finished"]]
    assert finished, "the EOS-biased tiny policy finishes some candidates in 24 tokens"
    assert row["selected"] is not None and cands[row["selected"]]["finished"]
    assert cands[row["selected"]]["score"] == max(c["score"] for c in finished)
    assert row["response"] == cands[row["selected"]]["response"]
    # scored through the server's row scorer: the same numbers as the model with these weights
    out = rm.score([as_messages("How do I bake bread?")] * 4, [c["response"] for c in cands],
                   weights={"helpfulness": 1.0})
    assert [c["score"] for c in cands] == [float(s) for s in out.score]
    assert all(c["tokens"] <= 24 for c in cands)


def test_best_of_n_without_a_policy_is_404_and_limits_apply(rm, tiny_policy, client):
    r = client.post("/v1/best-of-n", json={"prompt": "hi", "n": 2})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    config = ServeConfig(model="test-rm", max_n=4, max_new_tokens=16)
    with app_client(rm, config, policy=tiny_policy) as c:
        too_many = c.post("/v1/best-of-n", json={"prompt": "hi", "n": 5})
        too_long = c.post("/v1/best-of-n", json={"prompt": "hi", "n": 2, "max_new_tokens": 17})
        bad_weights = c.post("/v1/best-of-n", json={"prompt": "hi", "n": 2, "weights": {"x": 1}})
    assert (too_many.status_code, too_many.json()["error"]["path"]) == (422, "$.n")
    assert (too_long.status_code, too_long.json()["error"]["path"]) == (422, "$.max_new_tokens")
    assert (bad_weights.status_code, bad_weights.json()["error"]["path"]) == (422, "$.weights.x")


# ---------------------------------------------------------------- bad input
GOOD = {"prompt": "hello", "response": "hi there"}
SMALL = ServeConfig(model="test-rm", max_items=4, max_text_chars=50, max_body_bytes=4096, max_n=3)

BAD = [
    # (name, endpoint, body (dict -> JSON, bytes as is), status, path)
    ("malformed json", "/v1/rewards", b'{"items": [', 400, "$"),
    ("not json", "/v1/rewards", b"this is not json", 400, "$"),
    ("invalid utf-8", "/v1/rewards", b'{"items": "\xff\xfe"}', 400, "$"),
    ("empty body", "/v1/rewards", b"", 422, "$"),
    ("body not an object", "/v1/rewards", [1, 2], 422, "$"),
    ("missing items", "/v1/rewards", {"weights": None}, 422, "$.items"),
    ("items not a list", "/v1/rewards", {"items": "x"}, 422, "$.items"),
    ("no items", "/v1/rewards", {"items": []}, 422, "$.items"),
    ("missing response", "/v1/rewards", {"items": [GOOD, {"prompt": "a"}]}, 422, "$.items[1].response"),
    ("number as response", "/v1/rewards", {"items": [{"prompt": "a", "response": 5}]}, 422, "$.items[0].response"),
    ("number as prompt", "/v1/rewards", {"items": [{"prompt": 5, "response": "b"}]}, 422, "$.items[0].prompt"),
    ("empty response", "/v1/rewards", {"items": [{"prompt": "a", "response": "  \n"}]}, 422, "$.items[0].response"),
    ("empty prompt", "/v1/rewards", {"items": [{"prompt": "", "response": "b"}]}, 422, "$.items[0].prompt"),
    ("bad role", "/v1/rewards", {"items": [{"prompt": [{"role": "bot", "content": "a"}], "response": "b"}]}, 422,
     "$.items[0].prompt[0].role"),
    ("content not a string", "/v1/rewards",
     {"items": [GOOD, {"prompt": [{"role": "user", "content": 1}], "response": "b"}]}, 422,
     "$.items[1].prompt[0].content"),
    ("prompt ends with assistant", "/v1/rewards",
     {"items": [{"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                 "response": "c"}]}, 422, "$.items[0].prompt"),
    ("unknown objective", "/v1/rewards", {"items": [GOOD], "weights": {"nonexistent": 1.0}}, 422,
     "$.weights.nonexistent"),
    ("weight not a number", "/v1/rewards", {"items": [GOOD], "weights": {"helpfulness": "1"}}, 422,
     "$.weights.helpfulness"),
    ("non-finite weight", "/v1/rewards", b'{"items": [{"prompt": "a", "response": "b"}], "weights": '
                                         b'{"honesty": Infinity}}', 422, "$.weights.honesty"),
    ("NaN in a weight vector", "/v1/rewards", b'{"items": [{"prompt": "a", "response": "b"}], "weights": '
                                              b'[1, NaN, 0, 0]}', 422, "$.weights[1]"),
    ("weight vector of the wrong length", "/v1/rewards", {"items": [GOOD], "weights": [1.0, 2.0]}, 422, "$.weights"),
    ("all-zero weights", "/v1/rewards", {"items": [GOOD], "weights": {"honesty": 0}}, 422, "$.weights"),
    ("weight a boolean", "/v1/rewards", {"items": [GOOD], "weights": [1, 0, True, 0]}, 422, "$.weights[2]"),
    ("weights a string", "/v1/rewards", {"items": [GOOD], "weights": "helpfulness=1"}, 422, "$.weights"),
    ("too many items", "/v1/rewards", {"items": [GOOD] * 5}, 413, "$.items"),
    ("over-long response", "/v1/rewards", {"items": [{"prompt": "a", "response": "x" * 51}]}, 413,
     "$.items[0].response"),
    ("over-long message", "/v1/rewards",
     {"items": [{"prompt": [{"role": "user", "content": "y" * 51}], "response": "b"}]}, 413,
     "$.items[0].prompt[0].content"),
    ("oversized body", "/v1/rewards", {"items": [{"prompt": "a", "response": "z" * 5000}]}, 413, "$"),
    ("query not a list", "/get_reward", {"query": "q"}, 422, "$.query"),
    ("number in query", "/get_reward", {"query": [1, 2], "prompts": ["a", "b"]}, 422, "$.query[0]"),
    ("prompt not a prefix", "/get_reward", {"query": ["something else"], "prompts": ["the prompt"]}, 422,
     "$.query[0]"),
    ("prompts of another length", "/get_reward", {"query": ["ab", "cd"], "prompts": ["a"]}, 422, "$.prompts"),
    ("too many queries", "/get_reward", {"query": ["ab"] * 5, "prompts": ["a"] * 5}, 413, "$.query"),
    ("classify input and messages", "/classify", {"input": "a", "messages": [{"role": "user", "content": "a"},
                                                                            {"role": "assistant", "content": "b"}]},
     422, "$.messages"),
    ("score without documents", "/score", {"queries": "a"}, 422, "$.documents"),
    ("score document a number", "/score", {"queries": "a", "documents": ["x", 2]}, 422, "$.documents[1]"),
    ("n over max_n", "/v1/best-of-n", {"prompt": "hi", "n": 4}, 422, "$.n"),
    ("n zero", "/v1/best-of-n", {"prompt": "hi", "n": 0}, 422, "$.n"),
    ("n a float", "/v1/best-of-n", {"prompt": "hi", "n": 2.0}, 422, "$.n"),
    ("top_p over 1", "/v1/best-of-n", {"prompt": "hi", "n": 2, "top_p": 1.5}, 422, "$.top_p"),
    ("negative temperature", "/v1/best-of-n", {"prompt": "hi", "n": 2, "temperature": -1}, 422, "$.temperature"),
    ("unknown endpoint", "/v2/rewards", {"items": [GOOD]}, 404, "$"),
]


@pytest.fixture(scope="module")
def small_client(tiny_policy):
    from tests.server.conftest import make_rm

    with app_client(make_rm(), SMALL, policy=tiny_policy) as c:
        yield c


@pytest.mark.parametrize(("name", "endpoint", "body", "status", "path"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_naming_the_json_path(small_client, name, endpoint, body, status, path):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = small_client.post(endpoint, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["path"] == path, error
    assert error["code"] == status and isinstance(error["message"], str) and error["message"]
    assert error["type"] == {400: "invalid_request", 422: "invalid_request", 413: "too_large",
                             404: "not_found"}[status]


def test_the_bad_input_table_is_large_and_never_5xx(small_client):
    assert len(BAD) >= 20
    text = small_client.get("/metrics").text
    assert 'status="5' not in text
    # and the server still answers good requests afterwards
    assert small_client.post("/v1/rewards", json={"items": [GOOD]}).status_code == 200


def test_a_body_that_is_not_json_typed_is_refused(client):
    r = client.post("/v1/rewards", content=b'{"items": []}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["path"] == "$"


# ---------------------------------------------------------------- failures of the model and of the server
class FailingScorer:
    """A RowScorer whose model call breaks (a bug, not bad input)."""

    objective_names = ["a", "b"]
    verbosity_objective = None

    def check_weights(self, weights):
        return None

    def info(self):
        return {"objectives": self.objective_names}

    async def start(self):
        pass

    async def stop(self):
        pass

    async def score(self, prompts, responses, weights):
        raise RuntimeError("boom")


def test_an_unexpected_error_is_a_logged_500_in_the_error_shape(rm, caplog):
    with app_client(rm, row_scorer=FailingScorer(), raise_server_exceptions=False) as client:
        r = client.post("/v1/rewards", json={"items": [GOOD]})
        metrics = client.get("/metrics").text
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "internal" and "RuntimeError" in r.json()["error"]["message"]
    assert "boom" not in r.json()["error"]["message"]  # details stay in the log
    assert any("unexpected error" in rec.message and rec.exc_info for rec in caplog.records)
    assert 'paretoalign_requests_total{endpoint="/v1/rewards",status="500"} 1.0' in metrics


def test_a_stopped_scorer_answers_503(rm):
    from fastapi.testclient import TestClient

    from paretoalign.server.app import create_app
    from paretoalign.server.batcher import MicroBatcher

    client = TestClient(create_app(MicroBatcher(rm), ServeConfig(model="m")))  # no lifespan: never started
    r = client.post("/v1/rewards", json={"items": [GOOD]})
    assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable"
