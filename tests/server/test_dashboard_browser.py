"""The researcher's dashboard in a real browser (Chromium, Playwright): login, progress
plots drawn from live data under the Content-Security-Policy, pausing a study (a new
participant then gets the paused page), and a second researcher who cannot see or
download the first one's study."""

from __future__ import annotations

import secrets

import pytest
from playwright.sync_api import expect

from server.access import add_member
from server.app import create_app
from server.devserver import serving
from server.extensions import get_db
from server.researchers import create_researcher
from tests.conftest import app_config, fresh_database
from tests.server.participant_client import Participant, complete
from tests.server.test_api import session_of
from tests.server.test_browser import CSP_PROBE, _launch, browser  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
PASSWORD = "a long password"


@pytest.fixture(scope="module")
def dashboard_site(tmp_path_factory, stimulus_dir):
    tmp = tmp_path_factory.mktemp("dashboard")
    url = next(fresh_database("sqlite", tmp))
    app = create_app(app_config(url, tmp))
    slug = "dash-" + secrets.token_hex(3)
    _launch(app, stimulus_dir, slug)
    with app.app_context():
        db = get_db()
        with db.begin():
            create_researcher(db, "alice", PASSWORD)
            create_researcher(db, "mallory", PASSWORD)
            add_member(db, slug, "alice", "owner")
    for i in range(3):  # two finish, one is still inside
        p = Participant(app.test_client(), slug, pid=f"DASH{i}")
        if i < 2:
            complete(p, session_of(app, p).plan)
    with serving(app) as base:
        yield base, slug
    app.extensions["assay.engine"].dispose()


def logged_in(browser, base: str, username: str):  # noqa: F811
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.add_init_script(CSP_PROBE)
    page.goto(f"{base}/login")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    expect(page.locator("h1")).to_have_text("Studies")
    return page, errors


def test_progress_is_plotted_from_live_data_and_a_study_can_be_paused(
        browser, dashboard_site):  # noqa: F811
    base, slug = dashboard_site
    page, errors = logged_in(browser, base, "alice")
    box = page.locator(f"#study-{slug} .progress")
    expect(box).to_have_attribute("data-drawn", "1")
    arrivals = page.evaluate(
        """(sel) => window.Chart.getChart(document.querySelector(sel)).data.datasets
               .filter((d) => d.label.endsWith(' arrived'))
               .reduce((n, d) => n + d.data.length, 0)""", f"#study-{slug} canvas")
    assert arrivals == 3  # each live arrival is a point
    expect(box.locator(".progress-note")).to_contain_text("live 3")
    expect(page.locator(f"#study-{slug} .peek-warning")).to_contain_text("Do not peek")
    page.click(f"#study-{slug} button[value=paused]")
    expect(page.locator(f"#study-{slug} .state")).to_have_text("paused")
    newcomer = browser.new_page()
    newcomer.goto(f"{base}/s/{slug}?PROLIFIC_PID=LATE1&STUDY_ID=S&SESSION_ID=L")
    expect(newcomer.locator("main")).to_have_attribute("data-study-state", "paused")
    expect(newcomer.locator("main")).to_contain_text("return the study on Prolific")
    page.click(f"#study-{slug} button[value=open]")
    expect(page.locator(f"#study-{slug} .state")).to_have_text("open")
    assert errors == []
    page.close()
    newcomer.close()


def test_a_second_researcher_cannot_see_or_download_the_study(
        browser, dashboard_site):  # noqa: F811
    base, slug = dashboard_site
    page, errors = logged_in(browser, base, "mallory")
    assert page.locator(f"#study-{slug}").count() == 0
    assert page.request.get(f"{base}/dashboard/{slug}/trials.csv").status == 404
    assert page.request.get(f"{base}/dashboard/{slug}/progress.json").status == 404
    assert errors == []
    page.close()


def test_the_stimulus_browser_shows_what_participants_see(browser, dashboard_site):  # noqa: F811
    base, slug = dashboard_site
    page, errors = logged_in(browser, base, "alice")
    page.click(f"#study-{slug} a:text('Stimuli')")
    expect(page.locator("h1")).to_contain_text(f"Stimuli of {slug}")
    entries = page.locator("section.entry")
    assert entries.count() > 0
    assert entries.first.locator(".method[data-method=exemplars] img").count() > 0
    page.wait_for_load_state("networkidle")
    broken = page.evaluate("""() => [...document.images].filter(
        (img) => img.loading !== 'lazy' && !(img.complete && img.naturalWidth > 0)).length""")
    assert broken == 0
    assert errors == []
    page.close()


def test_the_report_opens_in_the_browser(browser, dashboard_site):  # noqa: F811
    base, slug = dashboard_site
    page, errors = logged_in(browser, base, "alice")
    page.click(f"#study-{slug} a:text('Report')")
    expect(page.locator("h1").first).to_be_visible(timeout=120_000)
    assert "Accuracy" in page.content() and "correct ~ condition" in page.content()
    assert page.url.endswith(f"/dashboard/{slug}/report")
    assert errors == []
    page.close()
