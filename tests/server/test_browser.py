"""End to end in headless Chromium: participants take a study through the real page.

One small study served by the dev server on SQLite; three participants: one completes
everything (practice repeated once), one reloads mid-practice and mid-main, one goes offline
for several trials. Afterwards the database must hold every trial on each path exactly once.
Others preview, decline, or fail the catch trials and are screened out. A second study on
the same server puts the strong examples on the left, gives feedback on main trials, and
has researcher text that looks like HTML.
"""

from __future__ import annotations

import os
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlparse

import pytest
from sqlalchemy import func, select

from server.app import create_app
from server.catalog import launch_study
from server.devserver import serving
from server.extensions import get_db
from server.models import ParticipantSession, PlatformIdentity, TrialResponse
from tests.conftest import app_config, demo_spec, fresh_database

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCK_MS = 200
MAIN, CATCH = 5, 2  # catch_rate 0.4 of 5 main trials: 2 catch trials
PRACTICE, MAX_ATTEMPTS = 2, 3
CODE = "DEMO2AFC"
SCREENOUT = "DEMOSCREEN"
HOSTILE = "<img src=x onerror=alert(1)>"
PROLIFIC = re.compile(r"^https://app\.prolific\.com/")
# Reported CSP violations come back through the console, where the test collects errors.
CSP_PROBE = """
document.addEventListener('securitypolicyviolation', (e) =>
  console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));
"""


def _missing() -> str | None:
    if sync_playwright is None:
        return "the playwright package is not installed"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run under CI: {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Site:
    url: str
    slug: str
    app: object

    def entry(self, pid: str) -> str:
        query = urlencode({"PROLIFIC_PID": pid, "STUDY_ID": "BROWSER", "SESSION_ID": pid})
        return f"{self.url}/s/{self.slug}?{query}"

    def session(self, pid: str) -> ParticipantSession:
        with self.app.app_context():
            db = get_db()
            return db.scalar(
                select(ParticipantSession)
                .join(PlatformIdentity, PlatformIdentity.session_id == ParticipantSession.id)
                .where(PlatformIdentity.platform_pid == pid)
            )

    def latest_preview(self) -> ParticipantSession:
        with self.app.app_context():
            return get_db().scalar(
                select(ParticipantSession)
                .where(ParticipantSession.mode == "preview")
                .order_by(ParticipantSession.id.desc())
                .limit(1)
            )

    def stored(self, pid: str) -> Counter:
        """Trial index -> number of stored rows, for this participant."""
        with self.app.app_context():
            db = get_db()
            rows = db.execute(
                select(TrialResponse.trial_index, func.count())
                .join(ParticipantSession, ParticipantSession.id == TrialResponse.session_id)
                .join(PlatformIdentity, PlatformIdentity.session_id == ParticipantSession.id)
                .where(PlatformIdentity.platform_pid == pid)
                .group_by(TrialResponse.trial_index)
            )
            return Counter({index: n for index, n in rows})

    def events(self, pid: str, index: int) -> list[dict]:
        with self.app.app_context():
            db = get_db()
            return db.scalar(
                select(TrialResponse.events)
                .join(ParticipantSession, ParticipantSession.id == TrialResponse.session_id)
                .join(PlatformIdentity, PlatformIdentity.session_id == ParticipantSession.id)
                .where(PlatformIdentity.platform_pid == pid, TrialResponse.trial_index == index)
            )


def _launch(app, stimulus_dir: Path, slug: str, **overrides) -> None:
    spec = demo_spec(slug, stimulus_set=stimulus_dir.name, **overrides)
    with app.app_context():
        db = get_db()
        with db.begin():
            launch_study(db, spec, stimulus_dir.parent / "study.toml")


@pytest.fixture(scope="module")
def site(tmp_path_factory, stimulus_dir):
    """The demo study (screen-out on failed catch trials included), small and quick."""
    tmp = tmp_path_factory.mktemp("browser")
    databases = fresh_database("sqlite", tmp)
    url = next(databases)
    app = create_app(app_config(url, tmp))
    slug = "browser-" + secrets.token_hex(3)
    _launch(
        app,
        stimulus_dir,
        slug,
        paradigm={"response_lock_ms": LOCK_MS, "feedback": False, "progress": True},
        trials={"main": MAIN, "catch_rate": CATCH / MAIN},
        practice={"trials": PRACTICE, "max_attempts": MAX_ATTEMPTS},
    )
    with serving(app) as base:
        yield Site(base, slug, app)
    app.extensions["assay.engine"].dispose()


@pytest.fixture(scope="module")
def variant(site, stimulus_dir):
    """A second study on the same server: strong examples on the left, feedback on main
    trials too, one practice trial, two main trials, and researcher text with markup."""
    slug = "variant-" + secrets.token_hex(3)
    _launch(
        site.app,
        stimulus_dir,
        slug,
        paradigm={"response_lock_ms": LOCK_MS, "feedback": True, "max_side": "left"},
        trials={"main": 2, "catch_rate": 0.0},
        practice={"trials": 1, "max_attempts": 1},
        texts={"consent": f"Do you agree? {HOSTILE}", "debrief": f"Thanks! {HOSTILE}"},
        questionnaire=[
            {"id": "strategy", "prompt": f"How did you decide? {HOSTILE}"},
            {
                "id": "difficulty",
                "prompt": "How hard was the task?",
                "kind": "choice",
                "options": ["easy", "medium", "hard"],
                "required": True,
            },
        ],
    )
    return Site(site.url, slug, site.app)


@dataclass
class Participant:
    """One browser context (own localStorage) driving the study page like a person."""

    site: Site
    page: Page
    pid: str
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    plan: list[dict] = field(default_factory=list)

    @classmethod
    def open(cls, browser, site: Site, *, preview: bool = False, url: str | None = None,
             context: dict | None = None, accept_dialogs: bool = False) -> Participant:
        """A participant in a browser context of its own (``context``: window size,
        device), at the entry page or ``url``; dialogs are dismissed, or accepted."""
        context = browser.new_context(**(context or {"viewport": {"width": 1280,
                                                                   "height": 720}}))
        context.add_init_script(CSP_PROBE)
        page = context.new_page()
        page.set_default_timeout(15_000)
        me = cls(site, page, "P" + secrets.token_hex(6))
        page.on("console", lambda m: me.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: me.errors.append(f"pageerror: {exc}"))
        page.on("request", lambda request: me.requests.append(request.url))

        def dialog(d) -> None:
            me.dialogs.append(d.message)
            d.accept() if accept_dialogs else d.dismiss()

        page.on("dialog", dialog)
        page.route(PROLIFIC, lambda route: route.fulfill(body="<p>Prolific</p>"))
        if url is not None:
            page.goto(url)
        elif preview:  # no platform IDs: a researcher's look at the study
            page.goto(f"{site.url}/s/{site.slug}")
            me.plan = site.latest_preview().plan
        else:
            page.goto(site.entry(me.pid))
            me.plan = site.session(me.pid).plan
        return me

    def click(self, label: str) -> None:
        self.page.get_by_role("button", name=label, exact=True).click()

    def start(self) -> None:
        expect(self.page.locator("h1")).to_contain_text("Which image belongs")
        self.click("I agree")
        expect(self.page.locator("h1")).to_have_text("Instructions")
        self.click("Start")

    def trial(self) -> int:
        """Wait for a trial's images to be shown (every one of them loaded); its plan index."""
        root = self.page.locator('.afc[data-shown="1"]')
        expect(root).to_have_count(1)
        images = root.locator("img")
        assert images.count() == 2 * 9 + 2
        assert images.evaluate_all("imgs => imgs.every((i) => i.complete && i.naturalWidth > 0)")
        return int(root.get_attribute("data-trial-index"))

    def answer(self, *, right: bool = True, confidence: int = 3) -> int:
        index = self.trial()
        correct = self.plan[index]["key"]
        choice = correct if right else ("b" if correct == "a" else "a")
        expect(self.page.locator('.afc[data-unlocked="1"]')).to_have_count(1)
        self.page.locator(
            f'.trial-btn[data-choice="{choice}"][data-confidence="{confidence}"]'
        ).click()
        return index

    def practice(self, *, right: bool = True) -> int:
        index = self.answer(right=right)
        expect(self.page.locator(".trial-feedback-text")).to_contain_text(
            "Correct!" if right else "Not quite."
        )
        self.click("Continue")
        return index

    def questionnaire(self) -> None:
        form = self.page.locator("#jspsych-survey-html-form")
        expect(form).to_be_visible()
        form.locator('textarea[name="strategy"]').fill("colours <b>&</b> stripes")
        form.locator('input[name="difficulty"][value="medium"]').check()
        self.page.locator("#jspsych-survey-html-form-next").click()

    def finish(self) -> str:
        self.questionnaire()
        self.click("Finish")
        self.page.wait_for_url(PROLIFIC)
        return self.page.url

    def delivered(self) -> Counter:
        """Trial index -> stored rows, once this page's outbox is empty."""
        self.page.wait_for_function("() => window.assay.outbox.size === 0")
        return self.site.stored(self.pid)

    def main_indices(self) -> list[int]:
        return [t["index"] for t in self.plan if t["kind"] != "practice"]

    def close(self) -> None:
        self.page.context.close()


LOCK_PROBE = """() => {
  window.__lock = new Promise((resolve) => {
    const seen = {};
    const look = () => {
      const root = document.querySelector('.afc');
      if (!root) return;
      const buttons = [...root.querySelectorAll('.trial-btn')];
      if (root.dataset.shown && seen.shownAt === undefined) {
        seen.shownAt = performance.now();
        seen.disabledAtOnset = buttons.map((b) => b.disabled);
      }
      if (root.dataset.unlocked && seen.shownAt !== undefined) {
        seen.lockedMs = performance.now() - seen.shownAt;
        seen.enabledAfter = buttons.map((b) => !b.disabled);
        observer.disconnect();
        resolve(seen);
      }
    };
    const observer = new MutationObserver(look);
    observer.observe(document.body, {subtree: true, childList: true, attributes: true,
                                     attributeFilter: ['data-shown', 'data-unlocked']});
  });
}"""


def test_whole_study_with_practice_repeated(browser, site):
    me = Participant.open(browser, site)
    me.page.evaluate(LOCK_PROBE)  # armed before the first trial appears
    me.start()

    # Practice attempt 1: one wrong answer, so the block repeats.
    assert me.practice(right=False) == 0
    lock = me.page.evaluate("window.__lock")
    assert lock["disabledAtOnset"] == [True] * 6
    assert lock["enabledAfter"] == [True] * 6
    assert lock["lockedMs"] >= LOCK_MS - 20
    assert me.practice() == 1
    expect(me.page.locator("#jspsych-content")).to_contain_text("attempt 2 of 3")
    me.click("Continue")
    assert [me.practice(), me.practice()] == [2, 3]
    expect(me.page.locator("#jspsych-content")).to_contain_text("The practice is over")
    me.click("Start")

    main = me.main_indices()
    seen_kinds = Counter()
    for k, expected in enumerate(main, start=1):
        assert me.trial() == expected
        expect(me.page.locator(".trial-progress")).to_have_text(f"Trial {k} of {len(main)}")
        if k == 2:  # a blur and a focus during the trial are logged with it
            me.page.evaluate("window.dispatchEvent(new Event('blur'))")
            me.page.evaluate("window.dispatchEvent(new Event('focus'))")
        assert me.answer(confidence=1 + k % 3) == expected
        seen_kinds[me.plan[expected]["kind"]] += 1
    assert seen_kinds == {"main": MAIN, "catch": CATCH}

    url = me.finish()
    assert url.endswith("cc=" + CODE)
    assert me.errors == []

    session = site.session(me.pid)
    assert session.status == "completed"
    assert session.practice_attempts == 2
    assert session.questionnaire == {"strategy": "colours <b>&</b> stripes", "difficulty": "medium"}
    assert site.stored(me.pid) == Counter({i: 1 for i in [0, 1, 2, 3, *main]})
    assert [e["type"] for e in site.events(me.pid, main[1])] == ["blur", "focus"]
    me.close()


def test_reload_resumes_at_the_right_trial(browser, site):
    me = Participant.open(browser, site)
    me.start()
    assert me.practice() == 0
    assert me.answer(right=False) == 1
    me.page.reload()  # on the feedback screen: trial 1 is answered (maybe not yet sent)
    expect(me.page.locator("#jspsych-content")).to_contain_text("attempt 2 of 3")
    me.click("Continue")
    assert [me.practice(), me.practice()] == [2, 3]
    me.click("Start")

    main = me.main_indices()
    assert [me.answer(), me.answer()] == main[:2]
    me.page.reload()  # no consent, instructions or practice again
    assert me.trial() == main[2]
    expect(me.page.locator(".trial-progress")).to_have_text(f"Trial 3 of {len(main)}")
    for expected in main[2:]:
        assert me.answer() == expected

    assert me.finish().endswith("cc=" + CODE)
    assert me.errors == []
    assert site.session(me.pid).status == "completed"
    assert site.stored(me.pid) == Counter({i: 1 for i in [0, 1, 2, 3, *main]})
    me.close()


def test_offline_trials_are_sent_when_back_online(browser, site):
    me = Participant.open(browser, site)
    status = me.page.locator("#assay-status")
    me.start()
    assert [me.practice(), me.practice()] == [0, 1]
    me.click("Start")
    main = me.main_indices()
    assert me.answer() == main[0]
    expect(status).to_be_hidden()
    me.page.wait_for_function("() => window.assay.outbox.size === 0")  # main[0] has been stored

    me.page.context.set_offline(True)
    for expected in main[1:4]:
        assert me.answer() == expected
    expect(status).to_be_visible()
    expect(status).to_contain_text("Offline: 3 answers waiting")
    assert set(site.stored(me.pid)) == {0, 1, main[0]}  # nothing reached the server

    me.page.context.set_offline(False)
    expect(status).to_be_hidden()

    # Back online, the server fails twice (503), then refuses one trial outright (a 409 is
    # dropped, not retried); the finish step hears it is missing and resends it.
    hits = Counter()

    def flaky(route):
        index = route.request.post_data_json["trial_index"]
        hits[index] += 1
        if index == main[4] and hits[index] <= 2:
            route.fulfill(status=503, json={"error": "unavailable"})
        elif index == main[5] and hits[index] == 1:
            route.fulfill(status=409, json={"error": "simulated conflict"})
        else:
            route.continue_()

    me.page.route("**/api/trials", flaky)
    assert me.answer() == main[4]
    expect(status).to_contain_text("Connection problem: retrying")
    expect(status).to_be_hidden()
    assert site.stored(me.pid)[main[4]] == 1
    assert me.answer() == main[5]

    # Offline again for the last trial: the study waits for it before the questionnaire.
    me.page.context.set_offline(True)
    assert me.answer() == main[6]
    expect(me.page.locator(".assay-task")).to_have_text("Saving your answers… (1 left)")
    assert main[5] not in site.stored(me.pid)
    me.page.context.set_offline(False)
    assert me.finish().endswith("cc=" + CODE)

    assert hits[main[4]] == 3 and hits[main[5]] == 2
    # Chromium logs each failed response: two 503s, the simulated 409, and the real 409
    # from /api/questionnaire naming the missing trial; the page reports the refusal.
    failed = [e for e in me.errors if e.startswith("Failed to load resource")]
    assert [re.search(r"status of (\d+)", e).group(1) for e in failed] == [
        "503",
        "503",
        "409",
        "409",
    ]
    assert [e for e in me.errors if e not in failed] == [
        "Assay: the server refused /api/trials (409): simulated conflict"
    ]
    assert site.session(me.pid).status == "completed"
    assert site.stored(me.pid) == Counter({i: 1 for i in [0, 1, *main]})
    me.close()


def test_a_preview_ends_without_the_code_and_without_redirecting(browser, site):
    me = Participant.open(browser, site, preview=True)
    expect(me.page.locator(".preview-banner")).to_be_visible()
    me.start()
    assert [me.practice(), me.practice()] == [0, 1]
    me.click("Start")
    for expected in me.main_indices():
        assert me.answer() == expected
    form = me.page.locator("#jspsych-survey-html-form")
    form.locator('input[name="difficulty"][value="easy"]').check()
    me.page.locator("#jspsych-survey-html-form-next").click()
    me.click("Finish")
    expect(me.page.locator(".assay-task")).to_contain_text("You have finished this preview")
    expect(me.page.locator(".assay-code")).to_have_count(0)  # the live code is not shown
    assert CODE not in me.page.content()
    assert not PROLIFIC.match(me.page.url)
    assert me.errors == []
    me.close()


def test_declining_consent_ends_politely_and_is_recorded(browser, site):
    me = Participant.open(browser, site)
    me.click("I do not agree")
    expect(me.page.locator(".assay-task")).to_contain_text("You have declined to take part")
    me.page.wait_for_function("() => window.assay.outbox.size === 0")
    assert site.session(me.pid).status == "declined"
    me.page.reload()
    expect(me.page.locator(".assay-task")).to_contain_text("You have declined to take part")
    assert me.errors == []
    me.close()


def test_failed_catch_trials_screen_out_to_prolific(browser, site):
    me = Participant.open(browser, site)
    me.start()
    assert [me.practice(), me.practice()] == [0, 1]
    me.click("Start")
    for expected in me.main_indices():  # every catch trial wrong, every other one right
        assert me.answer(right=me.plan[expected]["kind"] != "catch") == expected
    assert me.finish() == "https://app.prolific.com/submissions/complete?cc=" + SCREENOUT
    assert me.errors == []
    assert site.session(me.pid).status == "screened_out"
    me.close()


def test_max_side_left_puts_the_strong_examples_on_the_left(browser, variant):
    me = Participant.open(browser, variant)
    me.start()
    assert me.trial() == 0
    expect(me.page.locator(".afc-question")).to_have_text(
        "Which image in the middle belongs with the strongly activating examples (the left side)?"
    )
    expect(me.page.locator(".afc-queries h2")).to_have_text("Which belongs on the left?")
    strong, middle, weak = (
        me.page.locator(selector).bounding_box()["x"]
        for selector in (".afc-max", ".afc-queries", ".afc-min")
    )
    assert strong < middle < weak
    assert me.errors == []
    me.close()


def test_feedback_follows_main_trials_when_the_study_asks_for_it(browser, variant):
    me = Participant.open(browser, variant)
    me.start()
    assert me.practice() == 0
    content = me.page.locator("#jspsych-content")
    expect(content).to_contain_text("Now the main part begins.")
    expect(content).not_to_contain_text("no longer be told")
    me.click("Start")
    main = me.main_indices()
    # The same feedback screen as in practice, for main trials (wrong, then right).
    assert [me.practice(right=False), me.practice()] == main
    expect(me.page.locator("#jspsych-survey-html-form")).to_be_visible()
    assert me.delivered() == {0: 1, main[0]: 1, main[1]: 1}
    assert me.errors == []
    me.close()


def test_researcher_text_that_looks_like_html_is_shown_as_text(browser, variant):
    me = Participant.open(browser, variant)
    content = me.page.locator("#jspsych-content")
    planted = me.page.locator('img[src="x"]')
    expect(content).to_contain_text(f"Do you agree? {HOSTILE}")
    expect(planted).to_have_count(0)
    me.start()
    assert me.practice() == 0
    me.click("Start")
    assert [me.practice(), me.practice()] == me.main_indices()
    expect(me.page.locator("legend").first).to_have_text(f"How did you decide? {HOSTILE}")
    expect(planted).to_have_count(0)
    me.questionnaire()
    expect(content).to_contain_text(f"Thanks! {HOSTILE}")
    expect(planted).to_have_count(0)
    me.click("Finish")
    me.page.wait_for_url(PROLIFIC)
    # An <img src=x> made anywhere, even in a detached element, would have been fetched;
    # its onerror would have been refused by the CSP (reported as an error) or shown a dialog.
    assert [u for u in me.requests if urlparse(u).path.endswith("/x")] == []
    assert me.dialogs == []
    assert me.errors == []
    me.close()


def test_a_condition_without_references_shows_only_the_queries(browser, site, stimulus_dir):
    """The no-explanation baseline: no empty reference panels, a question that makes sense
    without them, and (no references to check attention with) no catch trials."""
    slug = "bare-" + secrets.token_hex(3)
    _launch(
        site.app, stimulus_dir, slug,
        conditions=[{"name": "none", "source": "neuron",
                     "roles": {"max_refs": "none", "min_refs": "none"}}],
        paradigm={"response_lock_ms": LOCK_MS, "feedback": False},
        trials={"main": 2, "catch_rate": 0.25},
        practice={"trials": 0},
    )
    me = Participant.open(browser, Site(site.url, slug, site.app))
    assert [t["kind"] for t in me.plan] == ["main", "main"]
    me.start()
    root = me.page.locator('.afc[data-shown="1"]')
    expect(root).to_have_count(1)
    assert root.locator(".afc-refs").count() == 0 and root.locator("img").count() == 2
    expect(me.page.locator(".afc-question")).to_have_text(
        "Which of the two images makes the unit respond more strongly?")
    expect(me.page.locator(".afc-queries h2")).to_have_text("Which responds more strongly?")
    expect(me.page.locator('.afc[data-unlocked="1"]')).to_have_count(1)
    me.page.locator('.trial-btn[data-choice="a"][data-confidence="2"]').click()
    expect(me.page.locator('.afc[data-trial-index="1"][data-shown="1"]')).to_have_count(1)
    assert me.errors == []
    me.close()
