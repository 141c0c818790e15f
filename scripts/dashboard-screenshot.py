#!/usr/bin/env python3
"""Screenshot of a running DCC's dashboard, as docs/dashboard.png was made.

    scripts/dashboard-screenshot.py URL API_KEY OUT.png [RANGE_SECS]

Drives headless Chromium through chromedriver (WebDriver, standard library only): opens the
dashboard, enters the key, waits until the history charts and the job table are drawn, saves a
PNG. Needs `chromium` and `chromium-driver` (scripts/test.sh installs both).
"""
import base64
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body or {}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["value"]


def until(what, cond, secs=30):
    deadline = time.time() + secs
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def main():
    url, key, out = sys.argv[1], sys.argv[2], sys.argv[3]
    span = sys.argv[4] if len(sys.argv) > 4 else "3600"
    port = free_port()
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1250",
            f"--user-data-dir={tempfile.mkdtemp()}"]}}}}
        sid = until("chromedriver", lambda: _try(lambda: call(base, "POST", "/session", caps)["sessionId"]))
        s = f"/session/{sid}"
        call(base, "POST", s + "/url", {"url": url})
        js = lambda script, *args: call(base, "POST", s + "/execute/sync", {"script": script, "args": list(args)})
        js("localStorage.setItem('dccKey', arguments[0]);", key)
        call(base, "POST", s + "/url", {"url": url})
        js("const r = document.getElementById('h-range'); r.value = arguments[0]; r.dispatchEvent(new Event('change'));", span)
        until("the charts", lambda: js("return document.querySelectorAll('#g-throughput path[data-total]').length > 0"
                                       " && document.querySelectorAll('#jobs tr').length > 0"))
        time.sleep(1)
        png = base64.b64decode(call(base, "GET", s + "/screenshot"))
        open(out, "wb").write(png)
        call(base, "DELETE", s)
    finally:
        driver.kill()


def _try(f):
    try:
        return f()
    except Exception:
        return None


if __name__ == "__main__":
    main()
