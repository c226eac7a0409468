"""A headless Chromium driven over the DevTools protocol, for tests that open a page for real.

No browser-automation package: Chromium's `--remote-debugging-pipe` speaks the DevTools
protocol over file descriptors 3 (commands in) and 4 (replies and events out), one JSON
message per NUL-terminated frame, so the standard library is enough.

    with Browser() as browser:
        page = browser.open(Path("report.html"), screenshot=Path("shot.png"))
        page.text, page.images, page.errors         # DOM text, <img> states, console errors
        browser.evaluate("document.title")

`make test` and .ci/run install Debian's `chromium` when it is missing; `find_chromium()`
returns None where there is none, and the tests that need it skip.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Page:
    text: str
    """document.body.innerText after load."""
    images: list[dict]
    """Each <img>: {"complete", "width" (naturalWidth), "alt"}; loaded means width > 0."""
    errors: list[str] = field(default_factory=list)
    """Console errors, uncaught exceptions and failed loads reported while the page loaded."""


class Browser:
    def __init__(self, width: int = 1400, height: int = 1000, timeout_s: float = 60.0) -> None:
        exe = find_chromium()
        if exe is None:
            raise RuntimeError("no chromium on PATH (apt-get install chromium)")
        self.width, self.height, self.timeout_s = width, height, timeout_s
        self._profile = tempfile.TemporaryDirectory(prefix="rlvr-chromium-")
        cmd_read, self._cmd_write = os.pipe()
        self._reply_read, reply_write = os.pipe()

        def to_fds_3_and_4() -> None:  # in the child, before exec
            os.dup2(cmd_read, 3)
            os.dup2(reply_write, 4)

        self._proc = subprocess.Popen(
            [exe, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
             "--disable-extensions", "--disable-background-networking", "--mute-audio",
             f"--user-data-dir={self._profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=to_fds_3_and_4, pass_fds=(3, 4),
        )  # fmt: skip
        os.close(cmd_read)
        os.close(reply_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                  "deviceScaleFactor": 1, "mobile": False}, session=True)  # fmt: skip

    # ------------------------------------------------------------------ the protocol

    def send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        """Send one command and wait for its reply; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        os.write(self._cmd_write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._reply_read, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        frame, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(frame)

    def wait_for(self, method: str) -> dict:
        """The first event `method` of this page (kept events first)."""
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == self._session:
                    return self.events.pop(i)
            self.events.append(self._receive())

    # ------------------------------------------------------------------ pages

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                           "awaitPromise": True}, session=True)  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, path: Path, screenshot: Path | None = None) -> Page:
        """Load a local file, wait for its load event, and read the page back."""
        self.events.clear()
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=True)
        self.wait_for("Page.loadEventFired")
        text = self.evaluate("document.body.innerText")
        images = self.evaluate(
            "Array.from(document.images).map(i => ({complete: i.complete, "
            "width: i.naturalWidth, alt: i.alt}))"
        )
        if screenshot is not None:
            self.screenshot(screenshot)
        return Page(text=text, images=images, errors=self.errors())

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def errors(self) -> list[str]:
        """Console errors, exceptions and failed loads among the events seen so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails", {}))[:300])
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(json.dumps(params.get("args", []))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(params["entry"].get("text", "")[:300])
            elif method == "Network.loadingFailed":
                found.append(f"load failed: {params.get('errorText')}")
        return found

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError, TimeoutError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._cmd_write)
        os.close(self._reply_read)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
