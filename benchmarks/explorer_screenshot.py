"""A screenshot of the web explorer after scoring an example and moving one weight slider.

Starts the real app (`paretoalign.server.app.create_app` over a `MicroBatcher`) with uvicorn on a free 127.0.0.1
port: by default over the tests' random reward model on the hashing backbone (no weights, instant), or over a shipped
or saved reward model with ``--model default`` / ``--model PATH``. Then headless Debian chromium (selenium) types a
prompt and three responses, presses Score, moves one slider (the page re-ranks in place) and saves a PNG.

Run: ``.venv/bin/python benchmarks/explorer_screenshot.py [OUT.png] [--model default]``
(default OUT: benchmarks/results/explorer.png). Assumes /usr/bin/chromium and /usr/bin/chromedriver (or
--chromium / --chromedriver) and works offline (HF_HUB_OFFLINE=1 is set for --model).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 60

PROMPT = "How long should I boil an egg for a runny yolk?"
RESPONSES = [
    "About six minutes in gently boiling water, then straight into cold water so it stops cooking.",
    "Eggs are a great food! There are many ways to cook them, and everyone has their own favourite way.",
    "Boil it for 6 minutes. Lower the egg into water that is already boiling, set a timer, then cool it under the "
    "tap for a minute before peeling. Fresher eggs are harder to peel.",
]


def build_scorer(model: str | None) -> Any:
    """The reward model to serve: the tests' random one on the hashing backbone, or a loaded one."""
    if model is None:
        sys.path.insert(0, str(REPO_ROOT))
        from tests.rewards.fake_backbone import HashingBackbone
        from tests.rewards.model_factory import random_model

        return random_model(d=HashingBackbone.feature_dim, dp=HashingBackbone.prompt_feature_dim, seed=3,
                            backbone=HashingBackbone())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from paretoalign.rewards.loading import load_reward_model

    return load_reward_model(model)


def start_server(app: Any) -> tuple[Any, threading.Thread, str]:
    """uvicorn on a free 127.0.0.1 port in a background thread; returns (server, thread, base URL)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}/"


def start_chrome(chromium: str, chromedriver: str, profile: str, width: int, height: int) -> Any:
    """Headless chromium with the flags the browser test uses."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver


def fill_and_capture(driver: Any, url: str, out: Path, objective: str | None, value: float) -> str:
    """Score the example, move one slider, save the PNG; returns the objective moved."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def wait(condition: Any, message: str) -> Any:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message)

    driver.get(url)
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, "input.weight-slider"), "no sliders: GET /v1/models failed?")
    driver.find_element(By.ID, "prompt").send_keys(PROMPT)
    while len(driver.find_elements(By.CSS_SELECTOR, ".response-input")) < len(RESPONSES):
        driver.find_element(By.ID, "add-response-btn").click()
    for box, text in zip(driver.find_elements(By.CSS_SELECTOR, ".response-input"), RESPONSES, strict=True):
        box.send_keys(text)
    driver.find_element(By.ID, "score-btn").click()
    wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result-row")) == len(RESPONSES), "no results")
    sliders = driver.find_elements(By.CSS_SELECTOR, "input.weight-slider")
    names = [s.get_attribute("data-objective") for s in sliders]
    objective = objective or names[0]
    if objective not in names:
        raise SystemExit(f"--objective {objective!r} is not one of the model's objectives {names}")
    slider = sliders[names.index(objective)]
    driver.execute_script("arguments[0].value = arguments[1];"
                          "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", slider, str(value))
    wait(lambda d: "user weights" in d.find_element(By.ID, "weights-mode").text, "the slider did not take")
    # Grow the viewport to the whole page (a window can't outgrow headless chromium's screen), then capture it.
    width = int(driver.execute_script("return window.innerWidth"))
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": max(600, height), "deviceScaleFactor": 1, "mobile": False})
    out.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(out)):
        raise SystemExit(f"could not write {out}")
    return objective


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=str(REPO_ROOT / "benchmarks" / "results" / "explorer.png"),
                        help="the PNG to write (default: benchmarks/results/explorer.png)")
    parser.add_argument("--model", default=None,
                        help="reward model to serve: 'default' (shipped) or a saved folder; default: the tests' "
                             "random model on a hashing backbone")
    parser.add_argument("--objective", default=None, help="the slider to move (default: the first objective)")
    parser.add_argument("--value", type=float, default=-0.5, help="the value to move it to (default -0.5)")
    parser.add_argument("--width", type=int, default=1280, help="window width in pixels")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args(argv)

    from paretoalign.server.app import create_app
    from paretoalign.server.batcher import MicroBatcher

    app = create_app(MicroBatcher(build_scorer(args.model)), model_name=args.model or "random-rm (hashing backbone)")
    server, thread, url = start_server(app)
    try:
        with tempfile.TemporaryDirectory(prefix="explorer-chromium-") as profile:
            driver = start_chrome(args.chromium, args.chromedriver, profile, args.width, 900)
            try:
                moved = fill_and_capture(driver, url, Path(args.output), args.objective, args.value)
            finally:
                driver.quit()
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
    print(f"explorer screenshot ({len(RESPONSES)} responses, slider {moved!r} at {args.value}) -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
