"""The paradigm contract in a real browser: for every registered paradigm, a simulated
participant completes a study of it through the real server in headless Chromium.

The page is driven like a person would: the answer comes from the paradigm's simulated
observer (looking at the images the page shows), and is given by clicking what the
paradigm's plugin says a participant clicks (``controls``). Afterwards the database holds
every planned trial exactly once, with those answers.
"""

from __future__ import annotations

import io
import re
import secrets
from urllib.parse import urlencode

import numpy as np
import pytest
import requests
from PIL import Image
from sqlalchemy import select

from experiments.paradigms import PARADIGMS
from server.app import create_app
from server.catalog import launch_study
from server.devserver import serving
from server.extensions import get_db
from server.models import ParticipantSession, PlatformIdentity, TrialResponse
from tests.conftest import app_config, fresh_database
from tests.experiments.test_paradigm_contract import small_spec
from tests.server.test_browser import CSP_PROBE, browser  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
PROLIFIC = re.compile(r"^https://app\.prolific\.com/")


@pytest.fixture(scope="module")
def server(tmp_path_factory, stimulus_dir):
    tmp = tmp_path_factory.mktemp("paradigms")
    url = next(fresh_database("sqlite", tmp))
    app = create_app(app_config(url, tmp))
    with serving(app) as base:
        yield app, base
    app.extensions["assay.engine"].dispose()


def stored_answers(app, pid: str) -> dict[int, dict]:
    with app.app_context():
        rows = get_db().execute(
            select(TrialResponse.trial_index, TrialResponse.answer)
            .join(ParticipantSession, ParticipantSession.id == TrialResponse.session_id)
            .join(PlatformIdentity, PlatformIdentity.session_id == ParticipantSession.id)
            .where(PlatformIdentity.platform_pid == pid)
        ).all()
    counts: dict[int, int] = {}
    for index, _ in rows:
        counts[index] = counts.get(index, 0) + 1
    assert set(counts.values()) <= {1}, "a trial stored twice"
    return dict(rows)


@pytest.mark.parametrize("paradigm_id", list(PARADIGMS))
def test_a_simulated_participant_completes_a_study_in_chromium(
    browser, server, stimuli_for, paradigm_id  # noqa: F811
):
    app, base = server
    paradigm = PARADIGMS[paradigm_id]
    stimulus_dir = stimuli_for(paradigm)
    slug = f"{paradigm_id.replace('_', '-')}-{secrets.token_hex(3)}"
    spec = small_spec(paradigm_id, slug=slug, main=4, catch_rate=0.25).model_copy(
        update={"stimulus_set": stimulus_dir.name})
    with app.app_context():
        db = get_db()
        with db.begin():
            launch_study(db, spec, stimulus_dir.parent / "study.toml")
    pid = "PB" + secrets.token_hex(5)
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.add_init_script(CSP_PROBE)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.route(PROLIFIC, lambda route: route.fulfill(body="<p>Prolific</p>"))
    page.goto(f"{base}/s/{slug}?" + urlencode({"PROLIFIC_PID": pid, "STUDY_ID": "S",
                                                "SESSION_ID": "E"}))

    seen: dict[str, np.ndarray] = {}

    def pixels(url: str) -> np.ndarray:
        if url not in seen:
            data = requests.get(base + url, timeout=10).content
            with Image.open(io.BytesIO(data)) as img:
                seen[url] = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        return seen[url]

    page.get_by_role("button", name="I agree", exact=True).click()
    page.get_by_role("button", name="Start", exact=True).click()
    state = page.evaluate("window.assay.state")
    views = {t["index"]: t for t in state["trials"]}
    options = paradigm.Options.model_validate(state["paradigm"])
    respond = paradigm.participant(options, np.random.default_rng(0), 1.0, pixels)
    given: dict[int, dict] = {}
    while True:
        trial = page.locator("[data-trial-index][data-unlocked='1']")
        continue_main = page.get_by_role("button", name="Start", exact=True)
        page.wait_for_function(
            "() => document.querySelector(\"[data-trial-index][data-unlocked='1']\") || "
            "document.querySelector('#jspsych-survey-html-form') || "
            "[...document.querySelectorAll('button')].some(b => b.textContent === 'Start' "
            "|| b.textContent === 'Continue')"
        )
        if page.locator("#jspsych-survey-html-form").count():
            break
        if trial.count() == 0:
            (continue_main if continue_main.count() else page.get_by_role(
                "button", name="Continue", exact=True)).first.click()
            continue
        index = int(trial.get_attribute("data-trial-index"))
        answer = respond(views[index]["view"])
        given[index] = paradigm.Answer.model_validate(answer).model_dump(mode="json")
        for selector in page.evaluate(
            "([id, answer]) => window.AssayParadigms[id].controls(answer)", [paradigm_id, answer]
        ):
            page.locator(selector).click()
        feedback = page.locator(".trial-continue")
        if views[index]["phase"] == "practice":
            feedback.click()
        page.wait_for_function(f"() => !document.querySelector('[data-trial-index=\"{index}\"]')")
    form = page.locator("#jspsych-survey-html-form")
    for question in spec.questionnaire:
        if question.kind == "choice":
            form.locator(f'input[name="{question.id}"]').first.check()
    page.locator("#jspsych-survey-html-form-next").click()
    page.get_by_role("button", name="Finish", exact=True).click()
    page.wait_for_url(PROLIFIC)
    assert page.url.endswith("cc=" + spec.recruitment.completion_code) or page.url.endswith(
        "cc=" + (spec.recruitment.screenout_code or ""))
    assert errors == []
    context.close()
    stored = stored_answers(app, pid)
    with app.app_context():
        plan = get_db().scalar(
            select(ParticipantSession.plan)
            .join(PlatformIdentity, PlatformIdentity.session_id == ParticipantSession.id)
            .where(PlatformIdentity.platform_pid == pid)
        )
    planned_main = {t["index"] for t in plan if t["kind"] != "practice"}
    assert planned_main <= set(stored) and stored == given
