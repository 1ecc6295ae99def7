"""Screenshots of every page of the demo shop, on a phone and at a desk, for the docs.

    ./dev screenshots                  # or: .venv/bin/python -m tests.screenshots [DIR]

Runs ``peershop demo`` (its own broker, a temporary database, the demo's logins), waits
until members use tools, then has headless Chromium (tests/browser.py) take each page
as its visitor sees it, at 390x844 (a phone) and 1280x800 (a desk), into
docs/screenshots/ as ``<page>-phone.png`` and ``<page>-desk.png``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from hub.cli.demo import DEMO_PASSWORD
from hub.service.broker import free_port
from tests.browser import ARGS, CHROMIUM
from tests.helpers import REPO

OUT = REPO / "docs" / "screenshots"
SIZES = {"phone": {"width": 390, "height": 844}, "desk": {"width": 1280, "height": 800}}
# (file name, who looks (None: nobody logged in), path)
PAGES = (
    ("floor", "dana", "/"),
    ("login", None, "/login"),
    ("tasks", "dana", "/tasks"),
    ("me", "dana", "/me"),
    ("period", "farah", "/periods"),
    ("admin", "farah", "/admin/"),
    ("admin-tool", "farah", "/admin/tools/laser-1"),
    ("admin-trainings", "farah", "/admin/trainings"),
)


def _busy(url: str) -> bool:
    """Whether a member uses a tool on the demo's floor now."""
    with urllib.request.urlopen(f"{url}/api/v1/tools", timeout=5) as answer:
        return any(t["state"] in ("in_use", "busy") for t in json.load(answer)["tools"])


def _wait_busy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not _busy(url):  # a demo's shop, not a test: polling its API is the way in
        if time.monotonic() > deadline:
            raise SystemExit("the demo had no tool in use after 120 s")
        time.sleep(1)


def take(url: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    taken = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for size, viewport in SIZES.items():
            pages = {}  # one logged-in page per visitor
            for name, who, path in PAGES:
                page = pages.get(who)
                if page is None:
                    page = pages[who] = browser.new_context(viewport=viewport).new_page()
                    if who is not None:
                        page.goto(f"{url}/login")
                        page.fill("#handle", who)
                        page.fill("#password", DEMO_PASSWORD)
                        page.click("form >> text=Log in")
                        page.wait_for_url(f"{url}/")
                page.goto(f"{url}{path}")
                page.wait_for_load_state("load")
                file = out / f"{name}-{size}.png"
                page.screenshot(path=str(file), full_page=True)
                taken.append(file)
        browser.close()
    return taken


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="peershop-shots-") as data:
        command = [sys.executable, "-m", "hub.cli", "demo", "--speed", "120", "--seed", "7"]
        demo = subprocess.Popen(
            [*command, "--port", str(port), "--data", data],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        try:
            assert demo.stdout is not None
            for line in demo.stdout:  # the banner's last line comes once everything runs
                if line.startswith("Ctrl-C stops the demo"):
                    break
            else:
                raise SystemExit(f"peershop demo exited with {demo.wait()}")
            url = f"http://127.0.0.1:{port}"
            _wait_busy(url)
            for file in take(url, out):
                print(file.relative_to(REPO) if file.is_relative_to(REPO) else file)
        finally:
            demo.terminate()
            demo.wait(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
