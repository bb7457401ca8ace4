"""The bearer token, the body limit, CORS, the bind check, the token file and the ServeConfig checks."""

from __future__ import annotations

import asyncio
import json

import pytest

from paretoalign.errors import InputError
from paretoalign.server.config import ServeConfig
from paretoalign.server.errors import json_path
from paretoalign.server.security import BodyLimitMiddleware, check_bind, is_loopback, load_api_key
from tests.server.conftest import app_client

GOOD = {"items": [{"prompt": "hello", "response": "hi there"}]}
TOKEN = "s3cret-token_42"


@pytest.fixture()
def key_file(tmp_path):
    path = tmp_path / "key.txt"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture()
def authed(rm, key_file):
    with app_client(rm, ServeConfig(model="m", api_key_file=str(key_file))) as client:
        yield client


# ---------------------------------------------------------------- the token
def test_requests_without_the_token_get_401_with_a_bearer_challenge(authed):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        r = authed.post("/v1/rewards", json=GOOD, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "unauthorized" and r.json()["error"]["code"] == 401
    for path in ("/v1/models", "/metrics"):
        assert authed.get(path).status_code == 401


def test_the_right_token_is_accepted_everywhere(authed):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert authed.post("/v1/rewards", json=GOOD, headers=headers).status_code == 200
    assert authed.get("/v1/models", headers=headers).status_code == 200
    assert authed.get("/metrics", headers=headers).status_code == 200
    assert authed.post("/v1/rewards", json=GOOD, headers={"authorization": f"bearer {TOKEN}"}).status_code == 200


def test_health_and_the_explorers_static_files_are_open(authed):
    assert authed.get("/health").json()["status"] == "ok"
    assert authed.get("/").status_code == 200
    assert authed.get("/explorer/explorer.js").status_code == 200
    assert authed.post("/health").status_code == 401  # only reading is open


def test_the_token_is_checked_before_the_body_is_read(authed):
    r = authed.post("/v1/rewards", content=b"x" * (9 * 1024 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 401


# ---------------------------------------------------------------- the body limit
def test_a_declared_or_streamed_body_over_the_limit_is_413(rm):
    with app_client(rm, ServeConfig(model="m", max_body_bytes=1000)) as client:
        declared = client.post("/v1/rewards", content=b"{" + b" " * 1200 + b"}",
                               headers={"content-type": "application/json"})

        def chunks():
            for _ in range(10):
                yield b" " * 200

        streamed = client.post("/v1/rewards", content=chunks(), headers={"content-type": "application/json"})
        fits = client.post("/v1/rewards", content=json.dumps(GOOD).encode(),
                           headers={"content-type": "application/json"})
    for r in (declared, streamed):
        assert r.status_code == 413
        assert r.json()["error"] == {"message": r.json()["error"]["message"], "type": "too_large", "path": "$",
                                     "code": 413}
        assert "1,000 bytes" in r.json()["error"]["message"]
    assert fits.status_code == 200


def run_middleware(limit, messages, headers=()):
    """Drive BodyLimitMiddleware with `messages` as the client's; (app calls, the app's body, what was sent)."""
    seen: list[bytes] = []
    sent: list[dict] = []

    async def app(scope, receive, send):
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main():
        queue = list(messages)

        async def receive():
            return queue.pop(0) if queue else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/rewards", "headers": list(headers)}
        await BodyLimitMiddleware(app, limit)(scope, receive, send)

    asyncio.run(main())
    return seen, sent


def test_the_body_limit_counts_chunks_as_they_arrive_and_hands_the_app_the_whole_body():
    parts = [{"type": "http.request", "body": b"a" * 40, "more_body": True},
             {"type": "http.request", "body": b"b" * 40, "more_body": True},
             {"type": "http.request", "body": b"c" * 40, "more_body": False}]
    seen, sent = run_middleware(100, parts)
    assert seen == [] and sent[0]["status"] == 413  # refused at the third chunk, the app never ran
    seen, sent = run_middleware(120, parts)
    assert seen == [b"a" * 40 + b"b" * 40 + b"c" * 40] and sent[0]["status"] == 200
    seen, sent = run_middleware(100, parts[:1], headers=[(b"content-length", b"101")])
    assert seen == [] and sent[0]["status"] == 413


def test_a_client_that_leaves_mid_body_gets_no_answer_and_the_app_never_runs():
    seen, sent = run_middleware(1000, [{"type": "http.request", "body": b"{", "more_body": True},
                                       {"type": "http.disconnect"}])
    assert seen == [] and sent == []


# ---------------------------------------------------------------- CORS
def test_cors_is_off_by_default_and_on_for_the_given_origins_only(rm, client):
    origin = "http://localhost:5173"
    r = client.get("/health", headers={"Origin": origin})
    assert "access-control-allow-origin" not in r.headers
    with app_client(rm, ServeConfig(model="m", cors_origins=(origin + "/",))) as c:
        allowed = c.get("/health", headers={"Origin": origin})
        other = c.get("/health", headers={"Origin": "http://evil.example"})
        preflight = c.options("/v1/rewards", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "authorization,content-type"})
    assert allowed.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()


# ---------------------------------------------------------------- bind check and token file
def test_check_bind_refuses_a_public_address_without_a_token():
    with pytest.raises(InputError) as err:
        check_bind("0.0.0.0", None)
    assert err.value.field == "--host" and "--api-key-file" in err.value.reason
    with pytest.raises(InputError):
        check_bind("192.168.1.7", None)
    check_bind("0.0.0.0", "token")
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host)
        check_bind(host, None)
    assert not is_loopback("example.com") and not is_loopback("::")


def test_load_api_key_reads_one_stripped_token_and_names_a_bad_file(tmp_path, key_file):
    assert load_api_key(key_file) == TOKEN
    (tmp_path / "empty").write_text("\n  \n")
    (tmp_path / "two").write_text("a b\n")
    for path, words in ((tmp_path / "missing", "not found"), (tmp_path / "empty", "empty"), (tmp_path, "folder"),
                        (tmp_path / "two", "one line")):
        with pytest.raises(InputError) as err:
            load_api_key(path)
        assert err.value.field == "--api-key-file" and err.value.path == str(path) and words in err.value.reason


def test_create_app_refuses_a_missing_key_file(rm, tmp_path):
    from paretoalign.server.app import create_app
    from paretoalign.server.batcher import MicroBatcher

    with pytest.raises(InputError, match="not found"):
        create_app(MicroBatcher(rm), ServeConfig(api_key_file=str(tmp_path / "nope")))


# ---------------------------------------------------------------- config values and JSON paths
@pytest.mark.parametrize(("kwargs", "flag"), [
    ({"port": 70000}, "--port"), ({"port": -1}, "--port"), ({"max_items": 0}, "--max-items"),
    ({"max_wait_ms": float("nan")}, "--max-wait-ms"), ({"graceful_timeout_s": -1}, "--graceful-timeout-s"),
    ({"exact": True, "batch_size": 8}, "--batch-size"), ({"engine": "spark"}, "--engine"),
    ({"replicas": 2}, "--replicas"), ({"ray_address": "auto"}, "--ray-address"),
    ({"cors_origins": ("localhost:3000",)}, "--cors-origin"), ({"cors_origins": ("http://a.b/path",)}, "--cors-origin"),
    ({"host": " "}, "--host"), ({"model": ""}, "--model"),
])
def test_serve_config_refuses_bad_values_naming_the_flag(kwargs, flag):
    with pytest.raises(InputError) as err:
        ServeConfig(**kwargs)
    assert err.value.field == flag


def test_serve_config_accepts_its_defaults_and_normalises_origins():
    config = ServeConfig(cors_origins=["https://example.org/"], exact=True, engine="ray", replicas=3)
    assert config.cors_origins == ("https://example.org",) and config.rm_batch_size == 1
    assert ServeConfig().rm_batch_size is None and ServeConfig().max_body_bytes == 8 * 1024 * 1024


def test_json_path_of_pydantic_locations():
    assert json_path(("items", 0, "response")) == "$.items[0].response"
    assert json_path(("items", 0, "prompt", "~list", 2, "role")) == "$.items[0].prompt[2].role"
    assert json_path(("weights", "~object", "helpfulness")) == "$.weights.helpfulness"
    assert json_path(("weights", "~object", "a b")) == '$.weights["a b"]'
    assert json_path(()) == "$"
