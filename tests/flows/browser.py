"""Open a page in headless Chromium, offline, and say what it requested and what it drew.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: file
descriptors 3 and 4, NUL-separated JSON), so no port, no websocket library and no driver
binary are needed. Every request the page makes is recorded (``Network.requestWillBeSent``),
with the ones that failed (``Network.loadingFailed``, an HTTP status >= 400) and every
uncaught script error (``Runtime.exceptionThrown``). Host names resolve to nothing
(``--host-resolver-rules``) and a proxy that does not exist takes every http(s) request, so
a page that needs the network shows failed requests here, as it would on an offline machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium() -> str | None:
    found = (
        os.environ.get("TRADELOOP_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    return found or next((c for c in CHROMIUM_CANDIDATES if Path(c).exists()), None)


@dataclass
class PageLoad:
    requested: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "url: why"
    errors: list[str] = field(default_factory=list)  # uncaught script errors
    probe: Any = None  # what the probe expression returned


class _Pipe:
    def __init__(self, proc: subprocess.Popen[bytes], write_fd: int, read_fd: int) -> None:
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self.next_id

    def read(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + 30
        while True:
            message = self.read(deadline)
            if message is None:
                raise TimeoutError(f"no answer to {method}")
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)


def open_page(url: str, profile: Path, probe: str, *, settle_s: float = 3.0) -> PageLoad:
    """Load ``url``, wait for its load event and ``settle_s`` more seconds of quiet, then
    evaluate ``probe`` (a JavaScript expression returning JSON-able data) in the page."""
    browser = chromium()
    assert browser is not None
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def wire() -> None:  # runs in the child: the protocol's fds are 3 (in) and 4 (out)
        # first above 10, so that placing one on 3 or 4 cannot overwrite the other
        src_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        src_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.dup2(src_in, 3)
        os.dup2(src_out, 4)

    proc = subprocess.Popen(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=http://127.0.0.1:9",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "--window-size=1400,1000",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=wire,
        close_fds=False,
        start_new_session=True,
    )
    os.close(to_browser_r)
    os.close(from_browser_w)
    pipe = _Pipe(proc, to_browser_w, from_browser_r)
    load = PageLoad()
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Network.enable", "Page.enable", "Runtime.enable"):
            pipe.call(domain, session=session)
        pipe.call("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + 60
        loaded_at: float | None = None
        last_event = time.monotonic()
        while time.monotonic() < deadline:
            wait_until = min(deadline, time.monotonic() + 0.5)
            message = pipe.read(wait_until)
            now = time.monotonic()
            if message is not None:
                pipe.events.append(message)
                last_event = now
                if message.get("method") == "Page.loadEventFired":
                    loaded_at = now
            elif loaded_at is not None and now - max(loaded_at, last_event) >= settle_s:
                break
        assert loaded_at is not None, f"{url} fired no load event in 60 s"
        result = pipe.call(
            "Runtime.evaluate",
            {"expression": f"JSON.stringify({probe})", "returnByValue": True},
            session=session,
        )
        value = result.get("result", {}).get("value")
        load.probe = json.loads(value) if isinstance(value, str) else None
        pipe.send("Browser.close")
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(to_browser_w)
        os.close(from_browser_r)
    urls: dict[str, str] = {}
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
            load.requested.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            why = params.get("errorText") or params.get("blockedReason") or "failed"
            load.failed.append(f"{urls.get(params['requestId'], '?')}: {why}")
        elif method == "Network.responseReceived":
            status = params["response"].get("status") or 0
            if status >= 400:
                load.failed.append(f"{params['response']['url']}: HTTP {status}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            load.errors.append(str(text))
    return load
