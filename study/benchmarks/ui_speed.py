"""How long the MLflow UI's runs page of a study takes to show its table, in a real browser.

Debian's headless chromium, driven over the Chrome DevTools protocol (aiohttp's websocket
client, which Ray already installs): navigate to the runs page, then poll the DOM until a table
row names the study's parent run. A store on SQLite gets ``mlflow ui`` (``study.ui``'s command);
a tracking server is its own UI.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from study.engine.console import log
from study.records.browse import runs_url, ui_command

PAGE_TIMEOUT = 180.0

# A row of the runs table (MLflow 3.17 draws it as a role=row grid) holding the parent's name.
_TABLE_SHOWS = """(() => [...document.querySelectorAll('[role="row"], tr')]
    .some(r => r.innerText && r.innerText.includes(%s)))()"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the process serving {url} exited with code "
                                   f"{proc.returncode}") from None
            if time.time() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


def runs_page_seconds(store, plan) -> float | None:
    """Seconds from navigating to the study's runs page to its table showing the study; None
    (said why) where there is no chromium."""
    browser = shutil.which("chromium")
    if browser is None:
        log("  ui_runs_page_s not measured: no chromium here (apt-get install chromium)")
        return None

    server = None
    if store.tracking_uri.startswith("http"):
        base = store.tracking_uri.rstrip("/")
    else:
        port = free_port()
        server = subprocess.Popen(ui_command(store, port), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", 120, server)
        url = runs_url(plan.experiment_id, base=base)
        # Chromium's helper processes may still write its profile as it ends.
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
            debug = free_port()
            chrome = subprocess.Popen(
                [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}",
                 f"--remote-debugging-port={debug}", "--window-size=1500,1000", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_http(f"http://127.0.0.1:{debug}/json/version", 60, chrome)
                # Once to warm the UI's server and the browser's cache of the page's code,
                # then the measured load: what a user opening the study's page sees.
                asyncio.run(_time_to_table(debug, url, plan.study))
                return asyncio.run(_time_to_table(debug, url, plan.study))
            finally:
                os.killpg(chrome.pid, signal.SIGTERM)  # the browser and its helpers
                chrome.wait(timeout=30)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


async def _time_to_table(debug_port: int, url: str, name: str) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{debug_port}/json/list") as r:
            pages = [t for t in await r.json() if t["type"] == "page"]
        async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 1 << 30))

            async def call(method: str, **params):
                i = next(ids)
                await ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == i:
                        return data.get("result", {})
                raise RuntimeError("the browser closed its connection")

            await call("Page.navigate", url="about:blank")
            start = time.perf_counter()
            await call("Page.navigate", url=url)
            check = _TABLE_SHOWS % json.dumps(name)
            while time.perf_counter() - start < PAGE_TIMEOUT:
                found = await call("Runtime.evaluate", expression=check, returnByValue=True)
                if found.get("result", {}).get("value"):
                    return time.perf_counter() - start
                await asyncio.sleep(0.05)
    raise RuntimeError(f"the runs page never showed {name!r} within {PAGE_TIMEOUT:.0f} s")
