"""report.html in a real browser: headless Chromium draws every figure and fetches nothing.

Chromium loads a copy of the page with a probe script appended (it records, after the
load event, every image's decoded size, and the number of canvas / svg elements), prints
the DOM (``--dump-dom``), and writes a network log (``--log-net-log``) in which every
URL the page asked for appears. The host resolver maps every name to nowhere, so a
request cannot leave the machine, but it is still logged and the test fails on it.

Chromium comes from the Debian package ``chromium-headless-shell`` (or ``chromium``),
which ``.ci/run`` installs when it can; ``TBPTT_TEST_CHROMIUM`` names another binary.
Without one the tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tbptt.report import write_report
from tests.report.conftest import tiny_comparison

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
LOCAL = ("file:", "data:", "about:", "chrome:", "blob:")

PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(
    (i) => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}));
  const probe = document.createElement("pre");
  probe.id = "tbptt-probe";
  probe.textContent = JSON.stringify({images: images,
    canvases: document.querySelectorAll("canvas").length,
    svgs: document.querySelectorAll("svg").length});
  document.body.appendChild(probe);
});
</script>
"""


def chromium() -> str:
    named = os.environ.get("TBPTT_TEST_CHROMIUM")
    found = named or next((p for b in BROWSERS if (p := shutil.which(b))), None)
    if not found:
        pytest.skip(
            "no headless Chromium: install the Debian package chromium-headless-shell "
            "(apt-get install --no-install-recommends chromium-headless-shell) or set "
            "TBPTT_TEST_CHROMIUM to a Chromium binary"
        )
    return found


def render(page: Path, work: Path) -> tuple[dict, set[str]]:
    """(what the probe saw, every URL in the network log) for ``page`` in headless Chromium."""
    probed = work / f"probed-{page.name}"
    text = page.read_text()
    probed.write_text(text.replace("</body>", PROBE + "</body>") if "</body>" in text else text)
    net_log = work / "net.json"
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--log-net-log={net_log}",
        f"--user-data-dir={work / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probed.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="tbptt-probe">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"Chromium printed no probe (exit {done.returncode}): {done.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    urls = set()
    for event in json.loads(net_log.read_text())["events"]:
        url = event.get("params", {}).get("url")
        if url:
            urls.add(url)
    return probe, urls


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    return write_report(tiny_comparison(out, seeds=(0,)), out).html


@pytest.mark.slow
def test_every_figure_is_drawn_and_nothing_is_fetched(report_html, tmp_path):
    probe, urls = render(report_html, tmp_path)
    in_page = len(re.findall(r"<img\b", report_html.read_text()))
    assert in_page >= 4  # cuts, validation, gap, gradient norms at least
    assert len(probe["images"]) == in_page
    for image in probe["images"]:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
    assert [u for u in urls if not u.startswith(LOCAL)] == []


@pytest.mark.slow
def test_the_check_sees_a_broken_figure_and_a_network_request(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body>"
        '<img src="data:image/png;base64,AAAA">'
        '<img src="https://example.com/figure.png">'
        "</body></html>"
    )
    probe, urls = render(page, tmp_path)
    assert [i["width"] for i in probe["images"]] == [0, 0]
    assert "https://example.com/figure.png" in urls
