"""Screening and withdrawal in headless Chromium: a small window (after the prompt to
enlarge it) and an emulated phone are screened out before consent, on record with their
reason and without a code; a window made large enough goes on to consent; a participant
sent straight back to Prolific can withdraw on the debrief, or later by the link it gives."""

from __future__ import annotations

import secrets

import pytest
from playwright.sync_api import expect

from server.app import create_app
from server.devserver import serving
from tests.conftest import app_config, fresh_database
from tests.server.test_browser import (  # noqa: F401 (browser: a fixture)
    CODE,
    PROLIFIC,
    SCREENOUT,
    Participant,
    Site,
    _launch,
    browser,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NEED = {"min_width": 1000, "min_height": 700, "allow_mobile": False}
DESKTOP = {"viewport": {"width": 1280, "height": 720}}
PIXEL_5 = {  # Playwright's "Pixel 5" descriptor
    "user_agent": "Mozilla/5.0 (Linux; Android 11; Pixel 5) AppleWebKit/537.36 (KHTML, like "
                  "Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "viewport": {"width": 393, "height": 727},
    "device_scale_factor": 2.75,
    "is_mobile": True,
    "has_touch": True,
}
RESIZE = "Please make this window larger"


@pytest.fixture(scope="module")
def site(tmp_path_factory, stimulus_dir):
    """A short study that screens windows below 1000 x 700 and phones, and sends those who
    finish straight back to Prolific with the completion code."""
    tmp = tmp_path_factory.mktemp("screening")
    url = next(fresh_database("sqlite", tmp))
    app = create_app(app_config(url, tmp))
    slug = "screen-" + secrets.token_hex(3)
    _launch(app, stimulus_dir, slug, screening=NEED,
            paradigm={"response_lock_ms": 100, "feedback": False},
            trials={"main": 2, "catch_rate": 0.0}, practice={"trials": 1, "max_attempts": 1})
    with serving(app) as base:
        yield Site(base, slug, app)
    app.extensions["assay.engine"].dispose()


def visit(browser, site: Site, context: dict, url: str | None = None) -> Participant:  # noqa: F811
    """A participant who accepts dialogs, as one sure of withdrawing would."""
    return Participant.open(browser, site, url=url, context=context, accept_dialogs=True)


def assert_no_code(me: Participant) -> None:
    html = me.page.content()
    assert CODE not in html and SCREENOUT not in html
    assert not [u for u in me.requests if u.endswith("/api/finish") or "cc=" in u]


def test_a_small_window_is_screened_out_after_the_prompt_to_enlarge_it(browser, site):  # noqa: F811
    me = visit(browser, site, {"viewport": {"width": 900, "height": 600}})
    content = me.page.locator("#jspsych-content")
    expect(content).to_contain_text(RESIZE)
    expect(me.page.locator("#browser-check-actual-width")).to_have_text("900")
    expect(me.page.locator("#browser-check-min-height")).to_have_text("700")
    me.click("I cannot make the window larger")
    screened = me.page.locator(".assay-screened-out")
    expect(screened).to_contain_text("at least 1000 × 700 pixels")
    expect(screened).to_contain_text("Your window was 900 × 600.")
    expect(screened).to_contain_text("no completion code")
    expect(me.page.get_by_role("button", name="I agree")).to_have_count(0)
    session = site.session(me.pid)
    assert (session.status, session.screen_reason) == ("screened_out", "window_too_small")
    assert session.consented_at is None

    me.page.reload()  # the same page again, not the study
    expect(me.page.locator(".assay-screened-out")).to_contain_text("at least 1000 × 700")
    expect(content).not_to_contain_text(RESIZE)
    me.page.get_by_role("link", name="Back to Prolific").click()
    me.page.wait_for_url("https://app.prolific.com/")
    assert_no_code(me)
    assert me.errors == []
    me.close()


def test_a_phone_is_screened_out_without_being_asked_to_resize(browser, site):  # noqa: F811
    me = visit(browser, site, PIXEL_5)
    screened = me.page.locator(".assay-screened-out")
    expect(screened).to_contain_text("cannot be done on a phone or tablet")
    session = site.session(me.pid)
    assert (session.status, session.screen_reason) == ("screened_out", "mobile")
    expect(me.page.locator("#jspsych-content")).not_to_contain_text(RESIZE)
    expect(me.page.get_by_role("link", name="Back to Prolific")).to_have_attribute(
        "href", "https://app.prolific.com/")
    assert_no_code(me)
    assert me.errors == []
    me.close()


def test_a_window_made_large_enough_goes_on_to_consent(browser, site):  # noqa: F811
    me = visit(browser, site, {"viewport": {"width": 900, "height": 600}})
    expect(me.page.locator("#jspsych-content")).to_contain_text(RESIZE)
    me.page.set_viewport_size({"width": 1100, "height": 760})
    me.start()  # consent, then the instructions
    assert me.trial() == 0
    session = site.session(me.pid)
    assert (session.status, session.screen_reason) == ("trials", None)
    assert me.errors == []
    me.close()


def run_to_debrief(me: Participant) -> None:
    me.start()  # a large enough window: straight to consent
    assert me.practice() == 0
    me.click("Start")
    for expected in me.main_indices():
        assert me.answer() == expected
    me.questionnaire()
    expect(me.page.locator(".assay-debrief")).to_be_visible()


def test_withdrawing_on_the_debrief_before_the_redirect(browser, site):  # noqa: F811
    me = visit(browser, site, DESKTOP)
    run_to_debrief(me)
    assert sum(site.stored(me.pid).values()) == 3
    me.click("Withdraw my responses")
    expect(me.page.locator(".assay-withdrawn")).to_contain_text("your responses have been deleted")
    assert me.dialogs == ["Delete all your responses from this study? This cannot be undone."]
    assert site.session(me.pid).status == "withdrawn" and site.stored(me.pid) == {}
    me.page.reload()
    expect(me.page.locator(".assay-task")).to_contain_text("You have withdrawn")
    assert not PROLIFIC.match(me.page.url)
    assert_no_code(me)
    assert me.errors == []
    me.close()


def test_the_link_on_the_debrief_withdraws_after_the_redirect(browser, site):  # noqa: F811
    me = visit(browser, site, DESKTOP)
    run_to_debrief(me)
    link = me.page.locator(".assay-withdraw-link")
    url = link.get_attribute("href")
    assert link.text_content() == url and url.startswith(site.url + "/withdraw/")
    assert me.pid not in url
    me.click("Finish")
    me.page.wait_for_url(PROLIFIC)
    assert me.page.url.endswith("cc=" + CODE)
    assert site.session(me.pid).status == "completed"
    me.close()

    later = visit(browser, site, DESKTOP, url=url)  # another day, another browser
    expect(later.page.locator("h1")).to_contain_text("Which image belongs")
    later.click("Withdraw my responses")
    expect(later.page.locator(".assay-withdrawn")).to_contain_text(
        "your responses have been deleted")
    assert site.session(me.pid).status == "withdrawn" and site.stored(me.pid) == {}
    later.page.reload()  # withdrawing is done once; the page says so
    expect(later.page.locator(".assay-withdrawn")).to_be_visible()
    assert later.errors == []
    later.close()

