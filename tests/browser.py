"""A real headless Chromium (Debian's ``chromium``) driven over the DevTools
protocol, for tests of pages that render in the browser (Bokeh draws on a
canvas after its websocket delivers the document, which ``--screenshot``
does not wait for)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

from tornado.ioloop import IOLoop
from tornado.websocket import websocket_connect


class Chromium:
    """``with Chromium() as b: png = b.screenshot(url, ready_js)``."""

    def __init__(self, width: int = 1400, height: int = 1000):
        self.binary = shutil.which("chromium")
        if self.binary is None:
            raise RuntimeError("Debian's chromium is not installed (make system-deps)")
        self.size = (width, height)

    def __enter__(self) -> Chromium:
        self.profile = tempfile.TemporaryDirectory(
            prefix="lepton-chromium-", ignore_cleanup_errors=True
        )
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                f"--window-size={self.size[0]},{self.size[1]}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile.name}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its helper processes go with it
        )
        deadline = time.monotonic() + 60
        self.port = None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("chromium exited before it listened")
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            raise RuntimeError("chromium did not open its DevTools port")
        # keep draining stderr so chromium never blocks on a full pipe
        import threading

        self._drain = threading.Thread(target=self.proc.stderr.read, daemon=True)
        self._drain.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import os
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._drain.join(10)
        self.proc.stderr.close()
        self.profile.cleanup()

    def _page_ws(self) -> str:
        targets = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list").read()
        )
        pages = [t for t in targets if t.get("type") == "page"]
        return pages[0]["webSocketDebuggerUrl"]

    def visit(
        self, url: str, ready_js: str, timeout: float = 60.0, settle: float = 1.5
    ) -> dict[str, Any]:
        """Open ``url``, wait until ``ready_js`` is truthy, wait ``settle``
        seconds more for painting; return ``{"png": bytes, "ready": value}``."""
        return IOLoop().run_sync(
            lambda: self._visit(url, ready_js, timeout, settle), timeout=timeout + 30
        )

    async def _visit(self, url, ready_js, timeout, settle):
        import asyncio

        ws = await websocket_connect(self._page_ws(), max_message_size=256 * 2**20)
        counter = iter(range(1, 10**9))

        async def call(method: str, **params: Any) -> dict[str, Any]:
            i = next(counter)
            ws.write_message(json.dumps({"id": i, "method": method, "params": params}))
            while True:
                msg = await ws.read_message()
                if msg is None:
                    raise RuntimeError("DevTools connection closed")
                body = json.loads(msg)
                if body.get("id") == i:
                    if "error" in body:
                        raise RuntimeError(f"{method}: {body['error']}")
                    return body["result"]

        try:
            await call("Page.enable")
            await call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            value = None
            while time.monotonic() < deadline:
                res = await call(
                    "Runtime.evaluate", expression=ready_js, returnByValue=True
                )
                value = res.get("result", {}).get("value")
                if value:
                    break
                await asyncio.sleep(0.25)
            else:
                raise TimeoutError(f"{url}: {ready_js!r} never became true")
            await asyncio.sleep(settle)
            shot = await call("Page.captureScreenshot", format="png")
            return {"png": base64.b64decode(shot["data"]), "ready": value}
        finally:
            ws.close()
