"""``kgtracin report``: a self-contained page, checked as written and as headless Chromium renders it.

The browser tests need Chromium (Debian package ``chromium``; ``.ci/run`` installs it). Without it they skip,
unless ``KGTRACIN_REQUIRE_BROWSER=1`` (set by CI), where a missing browser fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from kgtracin.cli import main
from kgtracin.report import Edge, subgraph_svg

#: the page checks itself in the browser: every drawing and label laid out, visible and inside its drawing
_CHECK = """
<script>
const out = {svgs: [], labels: 0, problems: []};
for (const svg of document.querySelectorAll("svg.subgraph")) {
  const box = svg.viewBox.baseVal;
  const edges = svg.querySelectorAll("path.edge").length, nodes = svg.querySelectorAll("circle.node").length;
  out.svgs.push({edges, nodes, width: svg.getBoundingClientRect().width});
  const nodeBoxes = [];
  for (const text of svg.querySelectorAll("text")) {
    out.labels += 1;
    const b = text.getBBox(), style = getComputedStyle(text);
    if (!(b.width > 0 && b.height > 0)) out.problems.push("empty label " + text.textContent);
    if (b.x < 0 || b.y < 0 || b.x + b.width > box.width || b.y + b.height > box.height)
      out.problems.push("label outside its drawing: " + text.textContent);
    if (style.visibility !== "visible" || style.display === "none" || style.opacity !== "1" ||
        style.fill === "none") out.problems.push("invisible label " + text.textContent);
    if (text.classList.contains("node-label")) nodeBoxes.push([text.textContent, b]);
  }
  for (let i = 0; i < nodeBoxes.length; i++) for (let j = i + 1; j < nodeBoxes.length; j++) {
    const [na, a] = nodeBoxes[i], [nb, b] = nodeBoxes[j];
    if (a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height)
      out.problems.push("entity labels overlap: " + na + " / " + nb);
  }
}
const page = document.body.getBoundingClientRect();
for (const table of document.querySelectorAll("table")) {
  if (!table.closest(".wide") && table.getBoundingClientRect().right > page.right + 1)
    out.problems.push("a table wider than the page: " + table.querySelector("th").textContent);
}
for (const cell of document.querySelectorAll("td.num")) {
  const range = document.createRange(); range.selectNodeContents(cell);
  if (range.getClientRects().length > 1) out.problems.push("a number broken over lines: " + cell.textContent);
}
const pre = document.createElement("pre"); pre.id = "kgtracin-check"; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>
"""


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("KGTRACIN_REQUIRE_BROWSER") == "1":
        pytest.fail("Chromium is required (apt-get install -y chromium) but was not found")
    pytest.skip("Chromium not installed (apt-get install -y chromium)")


def _chromium(browser: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def report_page(run_factory, tmp_path_factory):
    run = run_factory("DistMult", False)
    out = tmp_path_factory.mktemp("report") / "report.html"
    main(
        [
            "report",
            str(run),
            "--split",
            "test",
            "--limit",
            "2",
            "--top-k",
            "4",
            "--self-influence",
            "--audit",
            "5",
            "--output",
            str(out),
        ]
    )
    return out


def test_page_is_self_contained(report_page):
    page = report_page.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<link" not in page and "@import" not in page and "<img" not in page
    # the only URLs are SVG namespaces and in-page references
    urls = set(re.findall(r"(?:https?:)?//[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink", "http://www.w3.org/1999/xhtml"}, urls
    assert all(ref.startswith("#") for ref in re.findall(r"url\(([^)]*)\)", page))  # in-page references only
    assert page.count('<svg class="subgraph"') == 2
    assert "Self-influence" in page and "most suspicious" in page


def test_subgraph_draws_every_triple_once():
    edges = [
        Edge("a", "likes", "b", "test"),
        Edge("a", "knows", "b", "proponent", 0.5),
        Edge("b", "knows", "a", "opponent", -0.25),
        Edge("c", "is", "c", "proponent", 0.1),
    ]
    svg = subgraph_svg(edges, focus=("a", "b"))
    assert svg.count('<path class="edge') == 4 and svg.count('<circle class="node"') == 3
    assert svg.count("stroke-dasharray") == 1  # the explained triple
    widths = [float(w) for w in re.findall(r'class="edge (?:proponent|opponent)"[^>]*stroke-width="([\d.]+)"', svg)]
    assert widths[0] > widths[1] > widths[2]  # width follows |influence|
    assert svg.count('class="edge-label"') == 4 and ">likes<" in svg


def test_labels_escaped():
    svg = subgraph_svg([Edge("<b>", "r&d", 'x"y', "test")])
    assert "<b>" not in svg and "&lt;b&gt;" in svg and "r&amp;d" in svg


def test_browser_renders_drawing_and_labels(report_page, tmp_path):
    browser = _browser()
    checked = tmp_path / "checked.html"
    checked.write_text(report_page.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"), encoding="utf-8")
    dom = _chromium(browser, tmp_path, "--dump-dom", checked.as_uri()).stdout
    found = re.search(r'<pre id="kgtracin-check">(.*?)</pre>', dom, re.S)
    assert found, "the page did not run its check"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(result["svgs"]) == 2
    for svg in result["svgs"]:
        assert svg["edges"] == 1 + 2 * 4 and svg["nodes"] >= 2 and svg["width"] > 300
    assert result["labels"] >= 2 * (1 + 2 * 4)
    assert result["problems"] == []


def test_browser_screenshot_shows_the_drawing(report_page, tmp_path):
    from PIL import Image

    browser = _browser()
    shot = tmp_path / "report.png"
    _chromium(browser, tmp_path, "--window-size=1100,1400", f"--screenshot={shot}", report_page.as_uri())
    import numpy as np

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=int).reshape(-1, 3)

    def near(colour: str, tolerance: int = 40) -> int:
        target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - target) <= tolerance).all(axis=1).sum())

    assert near("#1a8a45") > 300  # proponent edges
    assert near("#c8302b") > 300  # opponent edges
    assert near("#2c3e91") > 100  # the explained triple and its entities
    assert near("#111111", 30) > 2000  # text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output", "report.txt"], "must end in .html"),
        (["--audit", "-1", "--output", "report.html"], "--audit"),
        (["--triple", "nobody", "knows", "nothing", "--output", "report.html"], "nobody"),
    ],
)
def test_report_bad_input_is_one_line(run_factory, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    run = run_factory("DistMult", False)
    extra = [] if "--triple" in args else ["--split", "test", "--limit", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(run), *extra, *args])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not list(tmp_path.iterdir())  # nothing written
