"""``peershop demo`` as a user runs it: live traffic within 30 s, a clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from hub.cli.demo import DEMO_LOGINS, DEMO_PASSWORD
from tests.helpers import Listener, WebClient, wait_for


@pytest.mark.sqlite_only("peershop demo keeps its shop in a SQLite file in --data by design")
def test_demo_shows_a_live_shop_and_stops_cleanly(tmp_path):
    from hub.service.broker import free_port

    mqtt_port, web_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "demo",
            "--speed",
            "120",
            "--port",
            str(web_port),
            "--mqtt-port",
            str(mqtt_port),
            "--data",
            str(tmp_path / "demo"),
            "--seed",
            "7",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    listener = None
    try:
        assert proc.stdout is not None
        banner = []
        for line in proc.stdout:  # the banner comes once everything runs
            banner.append(line)
            if line.startswith("Ctrl-C stops the demo"):
                break
        else:
            raise AssertionError(f"the demo exited with {proc.wait()}")
        # the logins it prints work: a member's page, a coordinator's Admin
        (logins,) = [line for line in banner if "log in as" in line]
        assert "dana (member)" in logins and DEMO_PASSWORD in logins, logins
        for handle, role in DEMO_LOGINS:
            browser = WebClient(f"http://127.0.0.1:{web_port}")
            assert browser.log_in(handle, DEMO_PASSWORD).status == 302, handle
            page = "/admin/" if role == "coordinator" else "/me"
            assert browser.get(page).status == 200, (handle, page)
        listener = Listener(mqtt_port, "peershop/tool/+/state")

        def in_use() -> list[str]:
            return [
                m.topic
                for m in listener.messages
                if json.loads(m.payload).get("member") and json.loads(m.payload)["state"] != "free"
            ]

        wait_for(in_use, 30, "a tool in use by a member")
        db = tmp_path / "demo" / "peershop.db"
        engine = create_engine(f"sqlite:///{db}")

        def signed_in() -> int:
            with engine.connect() as conn:  # a fresh snapshot each time
                return conn.execute(
                    text("SELECT count(*) FROM presence_changes WHERE state = 'in'")
                ).scalar()

        try:
            wait_for(signed_in, 30, "someone signed in")
        finally:
            engine.dispose()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if listener is not None:
            listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
