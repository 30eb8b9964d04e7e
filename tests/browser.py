"""Render a report.html in headless Chromium and say what a reader's browser would object to.

Used by the report tests; :func:`chromium` is None where no Chromium is installed (Debian:
``apt-get install chromium-headless-shell``), and those tests skip with that reason.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

BINARIES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell")
WIDTH = 1280

# injected first in <head>: records console errors, failed loads (capture phase sees <img> errors) and, after
# load, images that did not decode, content wider than the window and every resource fetched (data: URIs aside)
PROBE = """<script>
window.__errors = [];
const __err = console.error.bind(console);
console.error = (...a) => { window.__errors.push(a.map(String).join(' ')); __err(...a); };
window.addEventListener('error', e => {
  const t = e.target;
  window.__errors.push(t && t !== window ? 'failed to load ' + (t.src || t.href || t.tagName) : String(e.message));
}, true);
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.alt || i.src.slice(0, 40));
  const requests = performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith('data:'));
  const check = {errors: window.__errors, broken, requests, images: document.images.length,
                 scroll_width: document.documentElement.scrollWidth, width: window.innerWidth};
  document.documentElement.setAttribute('data-check', JSON.stringify(check));
});
</script>"""


def chromium() -> str | None:
    """Path of a headless Chromium, or None."""
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def check_report(report: Path, timeout: float = 60.0) -> dict:
    """Load ``report`` (a copy with :data:`PROBE` injected) in headless Chromium with every host unreachable.

    Returns ``errors`` (console errors and failed loads), ``broken`` (images that did not load), ``requests``
    (non-data URLs fetched), ``images``, ``scroll_width`` and ``width`` (the window's)."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("no headless Chromium installed")
    text = report.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(re.sub(r"<head>", "<head>" + PROBE, text, count=1))
        r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            f"--window-size={WIDTH},900", "--host-resolver-rules=MAP * ~NOTFOUND",
                            "--virtual-time-budget=10000", f"--user-data-dir={tmp}/profile", "--dump-dom",
                            page.as_uri()], capture_output=True, text=True, timeout=timeout)
    m = re.search(r"data-check=\"([^\"]*)\"", r.stdout)
    if m is None:
        raise AssertionError(f"Chromium rendered no check (exit {r.returncode}): {r.stderr[-500:]}")
    raw = m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    return json.loads(raw)


def problems(check: dict) -> list[str]:
    """What a reader would see wrong, from :func:`check_report`'s result (empty: none)."""
    out = [f"console: {e}" for e in check["errors"]]
    out += [f"image not loaded: {b}" for b in check["broken"]]
    out += [f"network request: {u}" for u in check["requests"]]
    if check["scroll_width"] > check["width"]:
        out.append(f"content {check['scroll_width']} px wide in a {check['width']} px window")
    return out
