"""The HTML report page (trainer/report_page.py), checked in a real headless browser.

The browser is Debian's chromium driven by Playwright (`apt-get install chromium`; .ci/run
installs it). Without a browser or Playwright the browser test skips, saying which is
missing; the data and page-structure tests still run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil

import pytest

from tests.harness import cli_env, run_cli
from tests.improve_fixture import EVAL_QUESTIONS, shared_improve_run

pytestmark = pytest.mark.slow  # the shared improve run trains two adapters


@pytest.fixture(scope="module")
def improve(tmp_path_factory):
    return shared_improve_run(tmp_path_factory)


@pytest.fixture(scope="module")
def page(improve, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "report.html"
    res = run_cli(["--db", str(improve.db), "report", "--html", str(out)],
                  cli_env(out.parent), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == f"wrote {out}"  # --html alone: no PNG
    return out


def _data(page) -> dict:
    html = page.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_page_data_matches_the_store(improve, page):
    from store.api import Store
    from trainer.history import improve_run

    data = _data(page)
    store = Store(str(improve.db))
    run = improve_run(store, improve.name)
    assert [r["iteration"] for r in data["iterations"]] == [0, 1, 2]
    for row in data["iterations"]:
        ev = store.model_version(f"{improve.name}:it{row['iteration']}").metrics["eval"]
        assert row["accuracy"]["dev"]["mean"] == pytest.approx(ev["exact_mean"])
        assert row["accuracy"]["dev"]["questions"] == EVAL_QUESTIONS
    assert data["iterations"][1]["examples"] == run.state["it1"]["build"]["examples"]
    assert set(data["iterations"][1]["seconds"]) == {"grow", "rank", "build", "train", "evaluate", "promote"}
    assert 0 < data["iterations"][1]["keep_rate"] <= 1
    # the flips are the questions whose exact match changed between consecutive iterations
    exact = {}
    for it in (0, 1, 2):
        for e in store.evaluations(store.get_run(f"{improve.name}:eval:{it}").id):
            exact[(it, e.question_id)] = e.exact
    want = {(q, a, a + 1) for (a, q) in exact
            if (a + 1, q) in exact and exact[(a, q)] != exact[(a + 1, q)]}
    got = {(f["question_id"], f["before"], f["after"]) for f in data["flips"] if f["split"] == "dev"}
    assert got == want and got, "the fixture's policies are meant to flip some questions"
    for f in data["flips"]:
        q = data["questions"][str(f["question_id"])]
        assert {t["iteration"] for t in q["trajectories"]} >= {f["before"], f["after"]}


def test_page_is_self_contained(page):
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html), "the page loads a file"
    assert not re.search(r"""(src|href)\s*=\s*["']https?://""", html)
    assert "<svg" in html and "<style>" in html


def _browser():
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("Playwright is not installed (pip install '.[dev]')")
    exe = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
    if exe is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run does)")
    return exe


def _launch(p, exe: str):
    """The browser, or a skip naming why it would not start (a chromium that cannot run
    here, e.g. a container without its libraries): the page is not at fault then."""
    from playwright.sync_api import Error

    try:  # root in a container needs --no-sandbox; a small /dev/shm needs the other flag
        return p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-dev-shm-usage"])
    except Error as e:
        pytest.skip(f"{exe} does not start under Playwright: {str(e).strip().splitlines()[0]}")


def test_page_in_a_headless_browser(page):
    exe = _browser()
    from playwright.sync_api import sync_playwright

    data = _data(page)
    problems, requests = [], []
    with sync_playwright() as p:
        browser = _launch(p, exe)
        try:
            tab = browser.new_page()
            tab.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            tab.on("pageerror", lambda e: problems.append(str(e)))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(page.as_uri())
            tab.wait_for_selector("#accuracy-plot circle.point")
            # the plot: one point per (iteration, split) with a score
            points = sum(len(r["accuracy"]) for r in data["iterations"])
            assert tab.locator("#accuracy-plot circle.point").count() == points
            assert tab.locator("#accuracy-plot g.series").count() == 2  # dev and train
            assert tab.locator("#iterations tr[data-iteration]").count() == 3
            # click a flipped question: its trajectories appear side by side
            flip = data["flips"][0]
            tab.locator(f"button.flip[data-qid='{flip['question_id']}']").first.click()
            columns = tab.locator("#trajectory-grid .traj")
            want = data["questions"][str(flip["question_id"])]["trajectories"]
            assert columns.count() == len(want) >= 2
            shown = [columns.nth(i).get_attribute("data-trajectory") for i in range(columns.count())]
            assert shown == [str(t["id"]) for t in want]
            first = data["trajectories"][str(want[0]["id"])]
            col = columns.first
            assert col.locator(".step").count() == len(first["steps"])
            assert col.locator(".samples tr.pick").count() == sum(
                s["chosen_index"] is not None for s in first["steps"])
            if first["searches"]:
                assert first["searches"][0]["query"] in col.inner_text()
                assert col.locator(".hit.cited").count() >= 1
            assert flip["question"] in tab.locator("#traj-title").inner_text()
        finally:
            browser.close()
    assert not problems, problems
    assert all(u.startswith("file://") for u in requests), requests


def test_report_keeps_the_png(improve, tmp_path):
    res = run_cli(["--db", str(improve.db), "report", "--out", str(tmp_path / "a.png")], cli_env(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
