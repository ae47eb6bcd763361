"""Headless Chromium over the DevTools protocol, to open a page as a person would and
hear what went wrong: script exceptions, console and log errors, requests that left the
machine or failed. Then a screenshot.

The protocol travels over a pipe (--remote-debugging-pipe: the browser reads commands
on fd 3 and writes replies and events on fd 4, each message JSON ended by a NUL byte),
so the standard library and the Debian package `chromium` are all it needs.
Used by tests/analyze/test_html_report.py and bench/report_screenshot.py.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# schemes that never leave the machine: the page itself and what it makes in memory
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
INSTALL_HINT = "make setup installs it (Debian package chromium)"


def find_chromium() -> str | None:
    """The browser: $CHROMIUM, else chromium (Debian), chromium-browser or google-chrome on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


@dataclass
class PageLoad:
    """What opening one page showed."""

    url: str
    exceptions: list[str] = field(default_factory=list)  # uncaught script exceptions
    console_errors: list[str] = field(default_factory=list)  # console.error / console.assert
    log_errors: list[str] = field(default_factory=list)  # the browser's own log at level error
    external_requests: list[str] = field(default_factory=list)  # URLs that would leave the machine
    failed_requests: list[str] = field(default_factory=list)  # "url: reason"
    ready: bool = False  # the wait_for expression became true
    value: Any = None  # what `evaluate` returned, once ready
    screenshot: bytes | None = None  # PNG

    @property
    def problems(self) -> list[str]:
        return ([f"exception: {e}" for e in self.exceptions] + [f"console error: {e}" for e in self.console_errors]
                + [f"log error: {e}" for e in self.log_errors]
                + [f"network request: {u}" for u in self.external_requests]
                + [f"failed request: {u}" for u in self.failed_requests]
                + ([] if self.ready else ["the page never became ready"]))


class Browser:
    """One headless Chromium with a throw-away profile; `with Browser() as b: b.load(path)`."""

    def __init__(self, executable: str | None = None, timeout_s: float = 60.0):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError(f"no Chromium found on PATH: {INSTALL_HINT}")
        self.timeout_s = timeout_s
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []

    def __enter__(self) -> Browser:
        self._profile = tempfile.TemporaryDirectory(prefix="slo-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def pipes_at_3_and_4() -> None:  # in the child, before exec
            r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [self.executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self._profile.name}",
                "--remote-debugging-pipe", "about:blank"]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     close_fds=False, preexec_fn=pipes_at_3_and_4, start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", timeout_s=5)
        except BrowserError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        self.stderr.close()
        self._profile.cleanup()

    # --- the protocol ----------------------------------------------------------------

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout_s: float | None = None) -> dict:
        """Sends one command and waits for its reply; events read meanwhile go to `events`."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        except OSError as exc:
            raise BrowserError(f"{method}: the browser is gone ({exc.strerror}){self._stderr_tail()}") from None
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            reply = self._read(deadline)
            if reply is None:
                raise BrowserError(f"{method}: no reply within {timeout_s or self.timeout_s:g} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str | None, timeout_s: float) -> dict | None:
        """The first event `method` (of `session`), from those read already or still to come."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return ev
            seen = len(self.events)
            msg = self._read(deadline)
            if msg is None:
                return None
            if "method" in msg:
                self.events.append(msg)

    def _drain(self, until: float) -> None:
        """Keeps the events that arrive until `until` (monotonic)."""
        while (msg := self._read(until)) is not None:
            if "method" in msg:
                self.events.append(msg)

    def _read(self, deadline: float) -> dict | None:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"the browser closed its pipe (exit {self.proc.poll()}){self._stderr_tail()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        tail = self.stderr.read()[-2000:].decode(errors="replace").strip()
        return f"; its stderr ends: {tail}" if tail else ""

    # --- a page --------------------------------------------------------------------------

    def load(self, path: Path, *, wait_for: str = "true", evaluate: str | None = None, width: int = 1400,
             height: int = 900, screenshot: bool = True, full_page: bool = False,
             max_height: int = 12000, settle_s: float = 0.5) -> PageLoad:
        """Opens file `path`, waits for its load event and then for the JS expression `wait_for`
        to be true, evaluates `evaluate` (its value in `value`) and takes a PNG screenshot: the
        viewport (width x height), or with full_page the whole page up to max_height pixels.
        What the page reports up to `settle_s` after it is ready counts too (a late request)."""
        url = Path(path).resolve().as_uri()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable", session=s)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=s)
        first = len(self.events)
        self.send("Page.navigate", {"url": url}, session=s)
        load = PageLoad(url)
        if self.wait_event("Page.loadEventFired", s, self.timeout_s) is not None:
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                if self._evaluate(wait_for, s):
                    load.ready = True
                    break
                time.sleep(0.1)
        if load.ready and evaluate is not None:
            load.value = self._evaluate(evaluate, s)
        self._drain(time.monotonic() + settle_s)
        if screenshot:
            params: dict[str, Any] = {"format": "png"}
            if full_page:
                size = self.send("Page.getLayoutMetrics", session=s)["cssContentSize"]
                params.update(captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": width, "height": min(size["height"], max_height),
                                    "scale": 1})
            load.screenshot = base64.b64decode(self.send("Page.captureScreenshot", params, session=s)["data"])
        self._collect(load, [e for e in self.events[first:] if e.get("sessionId") == s])
        self.send("Target.closeTarget", {"targetId": target})
        return load

    def _evaluate(self, expression: str, session: str) -> Any:
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression!r}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    @staticmethod
    def _collect(load: PageLoad, events: list[dict]) -> None:
        urls: dict[str, str] = {}
        for ev in events:
            method, p = ev["method"], ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                load.exceptions.append((d.get("exception") or {}).get("description") or d.get("text", ""))
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                load.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                    for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                e = p["entry"]
                load.log_errors.append(f"{e.get('text')} ({e.get('url', '')})")
            elif method == "Network.requestWillBeSent":
                url = p["request"]["url"]
                urls[p["requestId"]] = url
                if not url.startswith(LOCAL_SCHEMES):
                    load.external_requests.append(url)
            elif method == "Network.loadingFailed":
                load.failed_requests.append(f"{urls.get(p['requestId'], p['requestId'])}: {p.get('errorText')}")


def open_page(path: Path, **options) -> PageLoad:
    """Browser().load(path, **options) in a browser of its own."""
    with Browser() as b:
        return b.load(path, **options)
