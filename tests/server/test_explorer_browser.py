"""The web explorer (GET /) in a real browser: scoring, live re-weighting, opening bon / front files, no stray traffic.

Drives Debian's headless chromium through selenium against the real app (`create_app` over a `MicroBatcher` of a
random reward model on the hashing backbone), served by uvicorn on a free 127.0.0.1 port in a background thread.
Skips when selenium, chromium or chromedriver is missing, unless PARETOALIGN_REQUIRE_BROWSER=1 (CI), then fails.
Every wait is bounded (WebDriverWait of WAIT_S); the driver is always quit and the server always stopped.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from tests.rewards.fake_backbone import HashingBackbone
from tests.rewards.model_factory import random_model

CHROMIUM = os.environ.get("PARETOALIGN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PARETOALIGN_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRE_BROWSER = os.environ.get("PARETOALIGN_REQUIRE_BROWSER") == "1"
WAIT_S = 30
DISPLAY_TOL = 0.5e-4 + 1e-9  # scores and r' are shown with 4 decimals
SLIDER_GRID = np.round(np.arange(-1.0, 2.0 + 1e-9, 0.05), 2)

PROMPT = "How do I boil an egg?"
RESPONSES = ["Put the egg in boiling water for nine minutes, then cool it in cold water.",
             "Eggs are great. I like eggs a lot, <b>bold</b> & tasty and good and nice."]


# ---------------------------------------------------------------- browser and server

def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not (Path(path).is_file() or shutil.which(path)):
            return f"{what} not found at {path} (apt-get install chromium chromium-driver)"
    return None


class CountingApp:
    """ASGI wrapper that counts HTTP requests per path (to prove that re-ranking makes no server call)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            with self._lock:
                self.counts[scope["path"]] += 1
        await self.app(scope, receive, send)

    def count(self, path: str) -> int:
        with self._lock:
            return self.counts[path]


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` with uvicorn on a free 127.0.0.1 port in a background thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="explorer-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        sock.close()


def make_app(rm: Any) -> Any:
    """The real app over a MicroBatcher of `rm` (no policy, no token)."""
    from paretoalign.server.app import create_app
    from paretoalign.server.batcher import MicroBatcher

    return create_app(MicroBatcher(rm))


def start_chrome(user_data_dir: Path) -> Any:
    """Headless chromium with browser console and network (performance) logging."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver


@pytest.fixture(scope="module")
def rm():
    return random_model(d=HashingBackbone.feature_dim, dp=HashingBackbone.prompt_feature_dim, seed=3,
                        backbone=HashingBackbone())


@pytest.fixture(scope="module")
def browser_ready() -> None:
    missing = _browser_missing()
    if missing:
        if REQUIRE_BROWSER:
            pytest.fail(f"PARETOALIGN_REQUIRE_BROWSER=1 but {missing}", pytrace=False)
        pytest.skip(missing)


@pytest.fixture(scope="module")
def server(browser_ready, rm) -> Iterator[tuple[str, CountingApp]]:
    app = CountingApp(make_app(rm))
    with serve(app) as url:
        yield url, app


class FakeSampler:
    """A policy backend that "samples" fixed texts: candidate 1 hits the token limit, the others finish."""

    name = "fake-policy"
    texts = ("Boil it for nine minutes.", "Well, eggs, you see, are a long story that", "Ask a chef about it.",
             "Nine minutes in boiling water, then cold water.")

    def encode_prompts(self, prompts, max_new_tokens):
        return [[1, 2, 3] for _ in prompts]

    def sample(self, prompt_ids, n, params, *, prompt_indices=None, progress=None):
        from paretoalign.inference.engine import Candidate

        indices = list(prompt_indices) if prompt_indices is not None else list(range(len(prompt_ids)))
        return [[Candidate(prompt_index=p, index=j, token_ids=list(range(3 + j)), text=self.texts[j % len(self.texts)],
                           finish_reason="length" if j == 1 else "eos") for j in range(n)] for p in indices]


@pytest.fixture(scope="module")
def guarded_server(browser_ready, rm, tmp_path_factory) -> Iterator[tuple[str, CountingApp, str]]:
    """The app with an API token and a (fake) policy for /v1/best-of-n."""
    from paretoalign.server.app import create_app
    from paretoalign.server.batcher import MicroBatcher
    from paretoalign.server.config import ServeConfig

    token = "explorer-test-token"
    key_file = tmp_path_factory.mktemp("key") / "token.txt"
    key_file.write_text(token + "\n")
    app = CountingApp(create_app(MicroBatcher(rm), ServeConfig(api_key_file=str(key_file), max_n=8),
                                 policy=FakeSampler()))
    with serve(app) as url:
        yield url, app, token


@pytest.fixture(scope="module")
def driver(browser_ready, tmp_path_factory) -> Iterator[Any]:
    d = start_chrome(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield d
    finally:
        d.quit()


# ---------------------------------------------------------------- page helpers

def wait(driver: Any, condition: Any, message: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, message)


def open_page(driver: Any, url: str, n_objectives: int) -> None:
    """Load the page and wait until /v1/models answered (one slider per objective)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "input.weight-slider")) == n_objectives,
         "the weight sliders never appeared (GET /v1/models failed?)")


def score_on_page(driver: Any, prompt: str, responses: list[str]) -> None:
    """Type a prompt and responses (adding response fields as needed), press Score, wait for the results."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "prompt").send_keys(prompt)
    while len(driver.find_elements(By.CSS_SELECTOR, ".response-input")) < len(responses):
        driver.find_element(By.ID, "add-response-btn").click()
    for box, text in zip(driver.find_elements(By.CSS_SELECTOR, ".response-input"), responses, strict=True):
        box.send_keys(text)
    driver.find_element(By.ID, "score-btn").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result-row")) == len(responses),
         "no results after Score")


READ_ROWS_JS = """
const num = (s) => (s.trim() === '—' ? null : Number(s));
return Array.from(document.querySelectorAll(arguments[0] + ' .result-row')).map((row) => ({
  index: Number(row.dataset.index),
  rank: Number(row.dataset.rank),
  cls: row.className,
  text: row.querySelector('.result-text').textContent,
  score: num(row.querySelector('.result-score').textContent),
  verbosity: row.querySelector('.result-verbosity') ? num(row.querySelector('.result-verbosity').textContent) : null,
  badges: Array.from(row.querySelectorAll('.badge')).map((b) => b.className + ': ' + b.textContent),
  objectives: Object.fromEntries(Array.from(row.querySelectorAll('.objective-value'))
    .map((c) => [c.dataset.objective, num(c.textContent)])),
  gating: Object.fromEntries(Array.from(row.querySelectorAll('.gating-value'))
    .map((c) => [c.dataset.objective, c.textContent.trim() ? num(c.textContent) : null])),
}));
"""


def read_rows(driver: Any, container: str = "#results") -> list[dict[str, Any]]:
    """The ranked rows as displayed (top to bottom), numbers parsed from their text."""
    return driver.execute_script(READ_ROWS_JS, container)


def slider_weights(driver: Any) -> dict[str, float]:
    return driver.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('input.weight-slider'))"
        ".map((s) => [s.dataset.objective, Number(s.value)]));")


def move_slider(driver: Any, objective: str, value: float) -> None:
    """Set a weight slider as a user drag does: change its value, then fire 'input'."""
    from selenium.webdriver.common.by import By

    slider = driver.find_element(By.CSS_SELECTOR, f'input.weight-slider[data-objective="{objective}"]')
    driver.execute_script("arguments[0].value = arguments[1];"
                          "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", slider, str(value))


def ranked(scores: Any) -> list[int]:
    """Indices by score, best first, ties by input order (the page's rule)."""
    return sorted(range(len(scores)), key=lambda j: (-float(scores[j]), j))


def formula_scores(objectives: np.ndarray, names: list[str], weights: dict[str, float]) -> np.ndarray:
    """score_j = sum_i w_i r'_ij."""
    return np.asarray(objectives, dtype=np.float64) @ np.array([weights[n] for n in names])


def assert_close(shown: float | None, want: float, what: str, tol: float = DISPLAY_TOL) -> None:
    assert shown is not None and abs(shown - want) <= tol, f"{what}: page shows {shown}, expected {want:.6f}"


def assert_clean_browser(driver: Any, base_url: str, allowed: str | None = None) -> set[str]:
    """No console errors or warnings (but those containing `allowed`), and no request to any host but the test
    server; returns the paths fetched."""
    logs = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")
            and not (allowed and allowed in e.get("message", ""))]
    assert not logs, f"browser console: {logs}"
    server_host = urlsplit(base_url).netloc
    paths, outside = set(), []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.requestWillBeSent":
            continue
        url = urlsplit(message["params"]["request"]["url"])
        if url.scheme not in ("http", "https", "ws", "wss", "ftp"):
            continue  # data:, blob: and the browser's own chrome:// pages (its start page) are no network
        if url.netloc != server_host:
            outside.append(url.geturl())
        paths.add(url.path)
    assert not outside, f"requests to hosts other than {server_host}: {outside}"
    return paths


def flush_logs(driver: Any) -> None:
    driver.get_log("browser")
    driver.get_log("performance")


# ---------------------------------------------------------------- files

def write_bon_file(rm: Any, path: Path) -> list[dict[str, Any]]:
    """A two-prompt `paretoalign bon` output built with the real output writers; returns its rows."""
    from paretoalign.atomic_io import write_jsonl_atomic
    from paretoalign.inference.engine import Candidate
    from paretoalign.inference.selection import ScoredCandidate, SelectionResult, pick_index

    prompts = ["Name a colour of the sky.", "Give me a tip for sleeping well."]
    texts = [["Blue, on a clear day.", "The sky is often blue but at sunset orange and red too.", "Green."],
             ["Keep a regular bedtime.", "Avoid screens late and keep the room dark and cool, go to bed early.",
              "Coffee at midnight helps a lot a lot a lot."]]
    rows = []
    for p, (prompt, candidates) in enumerate(zip(prompts, texts, strict=True)):
        out = rm.score([prompt] * len(candidates), candidates)
        scored = []
        for j, text in enumerate(candidates):
            finished = j != 1  # the middle one hit the token limit
            cand = Candidate(prompt_index=p, index=j, token_ids=list(range(4 + 3 * j)),
                             finish_reason="eos" if finished else "length", text=text)
            scored.append(ScoredCandidate(cand, float(out.score[j]),
                                          {n: float(v) for n, v in zip(out.objective_names, out.objectives[j],
                                                                       strict=True)}))
        selected = pick_index([c.score for c in scored], [c.candidate.finished for c in scored])
        result = SelectionResult(prompt=[{"role": "user", "content": prompt}], candidates=scored, selected=selected,
                                 stats={"tokens_generated": sum(c.candidate.num_tokens for c in scored)})
        rows.append({"id": f"p{p}", "prompt": prompt, **result.row()})
    write_jsonl_atomic(path, rows)
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_front_file(out_dir: Path) -> dict[str, Any]:
    """A front report written by the real writer; returns its front.json."""
    from paretoalign.eval.policy_eval import FrontPoint
    from paretoalign.report.front_report import write_front_report

    def point(name, kind, n, reward, kl, objectives, bound=False, answered=1.0):
        return FrontPoint(name=name, kind=kind, n=n, reward=reward, reward_stderr=None,
                          objectives=dict(zip(("helpfulness", "harmlessness", "honesty"), objectives, strict=True)),
                          kl=kl, kl_stderr=None, kl_is_bound=bound, num_prompts=4, num_samples=4,
                          finished_fraction=answered, mean_response_tokens=20.0, source="test",
                          answered_fraction=answered)

    points = [point("reference", "reference", None, 0.10, 0.0, (0.1, 0.5, 0.2)),
              point("bon-4", "best_of_n", 4, 0.45, 0.636, (0.4, 0.3, 0.5), bound=True, answered=0.75),
              point("dpo", "policy", None, 0.60, 0.30, (0.7, 0.1, 0.3)),
              point("worse", "policy", None, 0.20, 0.80, (0.05, 0.05, 0.1))]
    write_front_report(points, out_dir, title="Explorer test front")
    return json.loads((out_dir / "front.json").read_text())


def open_file(driver: Any, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "tab-file").click()
    driver.find_element(By.ID, "file-input").send_keys(str(path))


# ---------------------------------------------------------------- tests

def test_score_shows_the_reward_models_scores_in_rank_order(server, driver, rm):
    from selenium.webdriver.common.by import By

    url, app = server
    names = rm.objective_names
    open_page(driver, url, len(names))
    assert driver.find_element(By.ID, "generate-controls").is_displayed() is False  # no --policy
    assert f"{len(names)} objectives" in driver.find_element(By.ID, "model-info").text
    before = app.count("/v1/rewards")
    score_on_page(driver, PROMPT, RESPONSES)
    assert app.count("/v1/rewards") == before + 1

    out = rm.score([PROMPT] * 2, RESPONSES)
    rows = read_rows(driver)
    assert [r["index"] for r in rows] == ranked(out.score)
    assert [r["rank"] for r in rows] == [1, 2]
    v = names.index(rm.verbosity_objective)
    for row in rows:
        j = row["index"]
        assert row["text"] == RESPONSES[j]  # shown as text: "<b>bold</b>" is not markup
        assert_close(row["score"], out.score[j], f"score of response {j}")
        assert_close(row["verbosity"], out.verbosity_contribution[j], f"verbosity contribution of {j}")
        for i, name in enumerate(names):
            assert_close(row["objectives"][name], out.objectives[j, i], f"r'[{name}] of response {j}")
            assert_close(row["gating"][name], out.gating[j, i], f"gating[{name}] of response {j}", tol=0.5e-3 + 1e-9)
        assert row["verbosity"] == pytest.approx(rm.scale * out.gating[j, v] * out.objectives[j, v], abs=DISPLAY_TOL)
    assert not driver.find_elements(By.CSS_SELECTOR, "#results b")
    assert_clean_browser(driver, url)


def test_a_slider_re_ranks_live_by_the_formula_without_a_server_call(server, driver, rm):
    from selenium.webdriver.common.by import By

    url, app = server
    names = rm.objective_names
    open_page(driver, url, len(names))
    score_on_page(driver, PROMPT, RESPONSES)
    out = rm.score([PROMPT] * 2, RESPONSES)
    shown_order = [r["index"] for r in read_rows(driver)]
    assert shown_order == ranked(out.score)

    # Find one slider position that flips the order by sum_i w_i r'_i, clear of display rounding.
    start = slider_weights(driver)
    flip = None
    for name in names:
        for value in SLIDER_GRID:
            w = {**start, name: float(value)}
            s = formula_scores(out.objectives, names, w)
            if ranked(s) != shown_order and abs(s[0] - s[1]) > 1e-2:
                flip = (name, float(value))
                break
        if flip:
            break
    assert flip is not None, f"no single slider move flips the order from {start}"
    rewards_before = app.count("/v1/rewards")

    move_slider(driver, *flip)
    wait(driver, lambda d: [r["index"] for r in read_rows(d)] != shown_order, "the order did not change")
    weights = slider_weights(driver)
    assert weights == {**start, flip[0]: flip[1]}
    want = formula_scores(out.objectives, names, weights)
    rows = read_rows(driver)
    assert [r["index"] for r in rows] == ranked(want)
    v = names.index(rm.verbosity_objective)
    for row in rows:
        j = row["index"]
        assert_close(row["score"], want[j], f"re-weighted score of response {j}")
        assert_close(row["verbosity"], weights[names[v]] * out.objectives[j, v], f"verbosity contribution of {j}")
        assert row["gating"] == pytest.approx({n: weights[n] for n in names}, abs=0.5e-3)
    assert "user weights" in driver.find_element(By.ID, "weights-mode").text
    assert app.count("/v1/rewards") == rewards_before, "re-ranking called /v1/rewards"

    # "Check with server" asks /v1/rewards with these weights once; the spec makes its scores the formula's.
    driver.find_element(By.ID, "check-btn").click()
    check = wait(driver, lambda d: d.find_element(By.ID, "check-result").is_displayed()
                 and d.find_element(By.ID, "check-result"), "no check result")
    match = re.search(r"at most ([0-9.e+-]+)", check.text)
    assert match, check.text
    assert float(match.group(1)) <= 1e-12
    assert app.count("/v1/rewards") == rewards_before + 1

    # Back to the model's gating: the server's own scores again, still without a new request.
    driver.find_element(By.ID, "gating-btn").click()
    wait(driver, lambda d: [r["index"] for r in read_rows(d)] == shown_order, "the gating order did not return")
    for row in read_rows(driver):
        assert_close(row["score"], out.score[row["index"]], f"gated score of response {row['index']}")
    assert app.count("/v1/rewards") == rewards_before + 1
    assert_clean_browser(driver, url)


def test_opening_a_bon_output_shows_and_re_ranks_its_candidates(server, driver, rm, tmp_path):
    from selenium.webdriver.common.by import By

    url, app = server
    names = rm.objective_names
    file_rows = write_bon_file(rm, tmp_path / "bon.jsonl")
    open_page(driver, url, len(names))
    rewards_before = app.count("/v1/rewards")
    open_file(driver, tmp_path / "bon.jsonl")
    wait(driver, lambda d: d.find_element(By.ID, "bon-view").is_displayed(), "the bon view did not open")
    assert "2 prompts" in driver.find_element(By.ID, "file-status").text
    for p, file_row in enumerate(file_rows):
        if p:
            driver.find_element(By.ID, "bon-next").click()
        wait(driver, lambda d, p=p: d.find_element(By.ID, "bon-prompt").text == file_rows[p]["prompt"],
             f"prompt {p} not shown")
        assert driver.find_element(By.ID, "bon-counter").text.startswith(f"prompt {p + 1} of 2")
        cands = file_row["candidates"]
        rows = read_rows(driver, "#bon-candidates")
        assert [r["index"] for r in rows] == ranked([c["score"] for c in cands])
        for row in rows:
            c = cands[row["index"]]
            assert row["text"] == c["response"]
            assert_close(row["score"], c["score"], "file score")
            for name in names:
                assert_close(row["objectives"][name], c["objectives"][name], f"file r'[{name}]")
            assert ("unfinished" in row["cls"].split()) is (not c["finished"])
            file_pick = any(b.startswith("badge file-picked") for b in row["badges"])
            assert file_pick is (row["index"] == file_row["selected"])

    # The sliders re-rank the file's candidates by sum_i w_i r'_i; the pick skips the unfinished one.
    cands = file_rows[1]["candidates"]
    objectives = np.array([[c["objectives"][n] for n in names] for c in cands])
    move_slider(driver, names[0], -1.0)
    wait(driver, lambda d: "user weights" in d.find_element(By.ID, "weights-mode").text, "no user weights")
    weights = slider_weights(driver)
    want = formula_scores(objectives, names, weights)
    rows = read_rows(driver, "#bon-candidates")
    assert [r["index"] for r in rows] == ranked(want)
    for row in rows:
        assert_close(row["score"], want[row["index"]], "re-weighted candidate score")
    finished = [j for j, c in enumerate(cands) if c["finished"]]
    best = max(finished, key=lambda j: (want[j], -j))
    picks = [r["index"] for r in rows if any(b.startswith("badge picked") for b in r["badges"])]
    assert picks == [best]
    assert app.count("/v1/rewards") == rewards_before  # a file is browsed and re-ranked in the page only
    assert_clean_browser(driver, url)


def test_opening_a_front_report_shows_points_and_fronts(server, driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, _ = server
    table = write_front_file(tmp_path / "front")
    driver.get(url)
    open_file(driver, tmp_path / "front" / "front.json")
    wait(driver, lambda d: d.find_element(By.ID, "front-view").is_displayed(), "the front view did not open")
    shown = driver.execute_script(
        "return Array.from(document.querySelectorAll('#front-table tr.front-row')).map((r) => ["
        "r.dataset.name, r.querySelector('.front-reward').textContent, r.querySelector('.front-kl').textContent]);")
    assert [s[0] for s in shown] == [p["name"] for p in table["points"]]
    for (_, reward, kl), p in zip(shown, table["points"], strict=True):
        assert float(reward) == pytest.approx(p["reward"], abs=DISPLAY_TOL)
        assert float(kl.split()[0]) == pytest.approx(p["kl"], abs=DISPLAY_TOL)

    def plotted() -> dict[str, bool]:
        return driver.execute_script(
            "return Object.fromEntries(Array.from(document.querySelectorAll('#front-plot g.front-point'))"
            ".map((g) => [g.dataset.name, g.dataset.onFront === 'true']));")

    want = {p["name"]: p["on_front"]["reward_vs_kl"] for p in table["points"]}
    assert plotted() == want
    assert any(want.values()) and not all(want.values())
    pair = next(f for f in table["fronts"] if f["x"] == "helpfulness" and f["y"] == "harmlessness")
    Select(driver.find_element(By.ID, "front-x")).select_by_value("helpfulness")
    Select(driver.find_element(By.ID, "front-y")).select_by_value("harmlessness")
    want = {p["name"]: p["on_front"][pair["name"]] for p in table["points"]}
    wait(driver, lambda d: plotted() == want, f"the {pair['name']} front is not the report's")
    assert_clean_browser(driver, url)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("broken.jsonl", '{"candidates": [], "selected": null}\n{"candidates": [\n', "line 2"),
    ("unknown.jsonl", '{"prompt": "hi"}\n', 'no "candidates"'),
    ("badfront.json", '{"points": [{"name": 3, "objectives": {}}]}', "points[0].name"),
    ("truncated.json", '{"points": [', "not valid JSON"),
])
def test_a_malformed_file_shows_an_error(server, driver, tmp_path, name, content, message):
    from selenium.webdriver.common.by import By

    url, _ = server
    driver.get(url)
    (tmp_path / name).write_text(content)
    open_file(driver, tmp_path / name)
    error = wait(driver, lambda d: d.find_element(By.ID, "file-error").is_displayed()
                 and d.find_element(By.ID, "file-error"), "no error shown")
    assert message in error.text and name in error.text
    assert not driver.find_element(By.ID, "bon-view").is_displayed()
    assert not driver.find_element(By.ID, "front-view").is_displayed()
    assert_clean_browser(driver, url)


def test_the_page_fetches_only_from_its_server_and_logs_no_errors(server, driver, rm, tmp_path):
    url, _ = server
    flush_logs(driver)
    open_page(driver, url, rm.n_objectives)
    score_on_page(driver, PROMPT, RESPONSES)
    move_slider(driver, rm.objective_names[0], 0.5)
    paths = assert_clean_browser(driver, url)
    assert {"/", "/explorer/explorer.js", "/explorer/explorer.css", "/v1/models", "/v1/rewards"} <= paths


def test_a_token_protected_server_asks_for_the_token_and_generate_n_scores_the_candidates(guarded_server, driver,
                                                                                          rm):
    from selenium.webdriver.common.by import By

    url, app, token = guarded_server
    names = rm.objective_names
    flush_logs(driver)
    driver.get(url)
    wait(driver, lambda d: d.find_element(By.ID, "auth-panel").is_displayed(), "no token field after a 401")
    assert not driver.find_elements(By.CSS_SELECTOR, "input.weight-slider")
    driver.find_element(By.ID, "token-input").send_keys(token)
    driver.find_element(By.ID, "token-btn").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "input.weight-slider")) == len(names),
         "the token did not unlock /v1/models")
    assert not driver.find_element(By.ID, "auth-panel").is_displayed()
    assert "policy: fake-policy" in driver.find_element(By.ID, "model-info").text
    assert driver.find_element(By.ID, "generate-controls").is_displayed()

    driver.find_element(By.ID, "prompt").send_keys(PROMPT)
    n_box = driver.find_element(By.ID, "generate-n")
    n_box.clear()
    n_box.send_keys("3")
    before = (app.count("/v1/best-of-n"), app.count("/v1/rewards"))
    driver.find_element(By.ID, "generate-btn").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result-row")) == 3
         and not d.find_element(By.ID, "score-btn").get_attribute("disabled"), "no scored candidates")
    texts = list(FakeSampler.texts[:3])
    assert [b.get_attribute("value") for b in driver.find_elements(By.CSS_SELECTOR, ".response-input")] == texts
    assert (app.count("/v1/best-of-n"), app.count("/v1/rewards")) == (before[0] + 1, before[1] + 1)
    out = rm.score([PROMPT] * 3, texts)
    rows = read_rows(driver)
    assert [r["index"] for r in rows] == ranked(out.score)
    for row in rows:
        j = row["index"]
        assert_close(row["score"], out.score[j], f"score of candidate {j}")
        assert_close(row["gating"][names[0]], out.gating[j, 0], "gating", tol=0.5e-3 + 1e-9)
        assert ("unfinished" in row["cls"].split()) is (j == 1)
    assert_clean_browser(driver, url, allowed="status of 401")
