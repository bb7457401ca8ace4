"""`paretoalign serve` on the command line: --help, clean one-line errors before anything loads, the `score` flags
for the Ray engine, and one real server process: start, score, SIGTERM with a request in flight, drain, exit 0."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from paretoalign.cli import main
from paretoalign.cli.registry import build_parser
from tests.cli.conftest import forbid_calls

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0


def test_serve_help_lists_its_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in ("--model", "--policy", "--host", "--port", "--api-key-file", "--query-template", "--max-batch-rows",
                 "--max-batch-tokens", "--max-wait-ms", "--batch-size", "--exact", "--max-items", "--max-text-chars",
                 "--max-body-bytes", "--cors-origin", "--max-n", "--max-new-tokens", "--engine", "--replicas",
                 "--ray-address", "--graceful-timeout-s", "--trust-remote-code"):
        assert name in out, name
    assert "/v1/rewards" in out and "Default: 127.0.0.1" in out


def test_the_flags_build_the_serve_config():
    from paretoalign.cli.serve import serve_config

    args = build_parser().parse_args(["serve", "--model", "m", "--port", "0", "--exact", "--cors-origin",
                                      "http://a.example", "--cors-origin", "http://b.example:8080",
                                      "--max-wait-ms", "2.5", "--graceful-timeout-s", "3"])
    config = serve_config(args)
    assert (config.model, config.port, config.exact, config.max_wait_ms, config.graceful_timeout_s) == \
        ("m", 0, True, 2.5, 3.0)
    assert config.cors_origins == ("http://a.example", "http://b.example:8080")
    assert config.host == "127.0.0.1" and config.max_items == 256 and config.engine == "local"


@pytest.fixture()
def no_loading(monkeypatch):
    """Fail the test if any model loads or the server starts."""
    from paretoalign.rewards import loading
    from paretoalign.server import runner

    return forbid_calls(monkeypatch, [(loading, "load_reward_model"), (runner, "load_row_scorer")],
                        "a bad flag must be refused before anything loads")


@pytest.mark.parametrize(("argv", "words"), [
    (["--port", "70000"], "field '--port': must be a port number"),
    (["--host", "0.0.0.0"], "field '--host': listening on '0.0.0.0'"),
    (["--replicas", "2"], "field '--replicas': only applies with --engine ray"),
    (["--exact", "--batch-size", "4"], "field '--batch-size'"),
    (["--cors-origin", "example.org"], "field '--cors-origin'"),
    (["--api-key-file", "/nonexistent/key"], "field '--api-key-file': file not found"),
    (["--model", "/nonexistent/rm"], "field '--model'"),
    (["--policy", "/nonexistent/policy"], "field '--policy'"),
])
def test_a_bad_flag_is_one_clean_line_before_anything_loads(argv, words, capsys, no_loading):
    port = [] if "--port" in argv else ["--port", "0"]  # never the default 8000: it may be taken
    assert main(["serve", *port, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err
    assert no_loading == []


def test_a_port_in_use_is_a_clean_error(capsys, no_loading):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: field '--port': cannot listen on 127.0.0.1:") and err.count("\n") == 1


def test_an_argparse_type_error_names_the_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--max-items", "0"])
    assert exc.value.code == 2
    assert "--max-items: must be an integer >= 1" in capsys.readouterr().err


def test_score_takes_the_ray_engine_flags():
    args = build_parser().parse_args(["score", "--model", "m", "--input", "i", "--output", "o"])
    assert (args.engine, args.num_workers) == ("local", 2)
    args = build_parser().parse_args(["score", "--model", "m", "--input", "i", "--output", "o", "--engine", "ray",
                                      "--num-workers", "4"])
    assert (args.engine, args.num_workers) == ("ray", 4)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--model", "m", "--input", "i", "--output", "o", "--engine", "spark"])


# ---------------------------------------------------------------- a real server process
ROWS = [([{"role": "user", "content": "How do I bake bread?"}], "Mix flour, water, salt and yeast, then bake."),
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "capital of France?"}], "Paris."),
        ([{"role": "user", "content": "hello"}], "Hello! How can I help?")]


@pytest.fixture(scope="module")
def tiny_rm_dir(tiny_llama_dir, tmp_path_factory):
    from tests.rewards.model_factory import random_llama_rm

    return random_llama_rm(tiny_llama_dir).save_pretrained(tmp_path_factory.mktemp("serve") / "rm")


def _lines(stream, out: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)


def test_serve_end_to_end_drains_a_request_in_flight_on_sigterm(tiny_rm_dir, tmp_path):
    from paretoalign.rewards.loading import load_reward_model

    err_path = tmp_path / "stderr.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    # --max-wait-ms 3000: a lone request waits 3 s for others to join its batch, so it is in flight at SIGTERM
    argv = [sys.executable, "-m", "paretoalign.cli", "serve", "--model", str(tiny_rm_dir), "--port", "0", "--exact",
            "--max-wait-ms", "3000", "--graceful-timeout-s", "20", "--threads", "1"]
    with open(err_path, "w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=REPO_ROOT)
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        try:
            banner = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"no start-up line within {START_TIMEOUT_S} s: {err_path.read_text()[-3000:]}")
        assert banner.startswith(f"serving {tiny_rm_dir} on http://127.0.0.1:"), banner + err_path.read_text()
        assert banner.rstrip().endswith("(objectives: helpfulness, harmlessness, verbosity)")
        url = banner.split(" on ", 1)[1].split(" ", 1)[0]
        assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"
        assert httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["objectives"] == \
            ["helpfulness", "harmlessness", "verbosity"]

        answer: dict = {}

        def post() -> None:
            body = {"items": [{"prompt": p, "response": r} for p, r in ROWS]}
            try:
                answer["response"] = httpx.post(url + "/v1/rewards", json=body, timeout=60)
            except httpx.HTTPError as exc:
                answer["error"] = exc
            answer["at"] = time.monotonic()

        client = threading.Thread(target=post)
        client.start()
        time.sleep(0.5)  # the request is read by then; its batch runs 3 s after it arrived
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        client.join(60)
        assert not client.is_alive() and "error" not in answer, answer
        assert answer["at"] > sigterm_at  # answered after SIGTERM: it was in flight, and it was finished
        response = answer["response"]
        assert response.status_code == 200, response.text
        assert proc.wait(60) == 0, err_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    expected = load_reward_model(str(tiny_rm_dir)).score([p for p, _ in ROWS], [r for _, r in ROWS], batch_size=1)
    results = response.json()["results"]
    assert [res["score"] for res in results] == [float(s) for s in expected.score]  # --exact: bit for bit
    assert "stopped by SIGTERM" in err_path.read_text()
    assert "Traceback" not in err_path.read_text()
    json.dumps(results)  # plain JSON values
