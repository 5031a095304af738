"""`citykey demo` (what `make demo` runs) opens a door from a fresh data directory."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_opens_a_door_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from api.cli import app; app()",
            "demo",
            "--port",
            str(port),
            "--broker-port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(output)
        url = re.search(r"curl -s -X POST (\S+)", text)
        token = re.search(r"Bearer (\S+?)'", text)
        assert url, text
        assert token, text

        response = httpx.post(
            url.group(1), headers={"Authorization": f"Bearer {token.group(1)}"}, timeout=10
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "unlocked"

        # The demo opens on the web app: its URL comes first, and its sign-in page lists Kari.
        app_url = re.search(r"Open (http://\S+/app) in a browser", text)
        assert app_url, text
        assert text.index(app_url.group(1)) < text.index("curl"), "the web app comes first"
        login = httpx.get(
            app_url.group(1), headers={"Accept": "text/html"}, follow_redirects=True, timeout=10
        )
        assert login.status_code == 200, login.text
        assert login.url.path == "/app/login"
        assert "Kari Nordmann" in login.text
    finally:
        process.send_signal(signal.SIGINT)
        remaining, _ = process.communicate(timeout=30)
    assert process.returncode == 0, "".join(output) + remaining
    assert "demo stopped" in remaining
