/* The participant's side of an Assay study.
 *
 * Reads the session token from <body data-token>, asks the server where the session stands
 * (GET /api/state) and builds the jsPsych timeline from there: screening (screening.js),
 * consent, instructions, preload, practice loop, main trials, questionnaire, debrief,
 * finish. The debrief and the last page offer withdrawal, now or later by a link
 * (<body data-withdraw-url>) that participants sent straight to Prolific can keep.
 *
 * Paradigm-blind: the page also loads the session's paradigm script
 * (static/js/paradigms/<id>.js), which registers `window.AssayParadigms[id]` =
 * {plugin, images(view), params(view, options), isCorrect(answer, key), controls(answer)}
 * (controls: the CSS selectors a participant clicks, in order, to give an answer, so that
 * tests can drive any paradigm like a person; a trial's root element carries
 * data-trial-index, and data-unlocked once it takes answers). Its jsPsych plugin
 * takes `trial_index`, `response_lock_ms`, `progress_text`, `correct` (the key, or null: no
 * feedback) and `on_response`, which it calls with {trial_index, answer, rt_ms,
 * presented_at, responded_at, events} the moment the participant answers.
 *
 * Every answer goes through an outbox kept in localStorage (per token) and sent in order in
 * the background, retried with exponential backoff while offline or while the server fails,
 * so the participant never waits for the network. A journal of this browser's answers
 * (also in localStorage) lets a reload resume after the last answer even when the outbox
 * has not been delivered yet, and lets the finish step resend what the server says is
 * missing. The completion redirect happens only once the server confirms every trial.
 * That network layer (requests, backoff, the outbox, the status line) is outbox.js,
 * loaded before this file as `window.AssayNet`.
 */
/* global initJsPsych, jsPsychModule, jsPsychHtmlButtonResponse, jsPsychSurveyHtmlForm,
   jsPsychPreload */
(function () {
  "use strict";

  const { Outbox, statusIndicator, requestUntilAnswered } = window.AssayNet;
  const Screening = window.AssayScreening;
  const WITHDRAWN = "You have withdrawn: your responses have been deleted. Please return the study on Prolific.";

  // --- small helpers -----------------------------------------------------------------------

  function escapeHtml(text) {
    const div = document.createElement("div");
    div.textContent = String(text);
    return div.innerHTML.replace(/"/g, "&quot;");
  }

  /** Researcher text as escaped paragraphs: blank lines separate paragraphs. */
  function paragraphs(text) {
    return String(text)
      .trim()
      .split(/\n\s*\n/)
      .map((p) => "<p>" + escapeHtml(p.replace(/\s*\n\s*/g, " ")) + "</p>")
      .join("");
  }

  // --- a step that runs an async task while showing a message ------------------------------

  class TaskPlugin {
    static info = {
      name: "assay-task",
      version: "1.0.0",
      parameters: {
        /** async (say) => data; `say(text)` replaces the message on screen. */
        run: { type: jsPsychModule.ParameterType.FUNCTION, default: undefined },
        message: { type: jsPsychModule.ParameterType.STRING, default: "" },
      },
      data: {},
    };

    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      const box = document.createElement("div");
      box.className = "assay-task";
      box.setAttribute("role", "status");
      display_element.replaceChildren(box);
      const say = (text) => {
        box.textContent = text;
      };
      say(trial.message);
      Promise.resolve()
        .then(() => trial.run(say, box))
        .then(
          () => this.jsPsych.finishTrial({}),
          (err) => {
            console.error("Assay:", err);
            say(
              "Something went wrong: " + (err && err.message ? err.message : err) +
                ". Please reload the page; your answers so far are kept."
            );
          }
        );
    }
  }

  const forever = () => new Promise(() => undefined);

  // --- where to resume ---------------------------------------------------------------------

  /** The practice attempts and main trials still to do, from server state and journal. */
  function resumePoint(state, outbox, paradigm) {
    const answered = (t) => t.stored || outbox.answered(t.index);
    const maxAttempts = state.practice.max_attempts;
    const attempts = [];
    for (let a = 1; a <= maxAttempts; a++) {
      attempts.push(
        state.trials
          .filter((t) => t.phase === "practice" && t.attempt === a)
          .sort((x, y) => x.index - y.index)
      );
    }
    const server = state.progress;
    const allCorrect = (a) => {
      if (a < server.practice_attempt) return false; // the server saw this attempt fail
      return attempts[a - 1].every((t) => {
        const mine = outbox.answer(t.index);
        if (mine === null) return true; // unknown: trust the server
        return paradigm.isCorrect(mine.answer || mine, t.correct); // (older pages: top level)
      });
    };
    let start = null;
    let done = server.practice_done || attempts.every((ts) => ts.length === 0);
    for (let a = 1; a <= maxAttempts && !done; a++) {
      const ts = attempts[a - 1];
      if (ts.length === 0) break;
      if (ts.some((t) => !answered(t))) {
        start = a;
        break;
      }
      if (a === maxAttempts || allCorrect(a)) done = true;
    }
    if (start === null) done = true;
    const main = state.trials
      .filter((t) => t.phase === "main")
      .sort((x, y) => x.index - y.index);
    return { attempts, start, done, allCorrect, answered, main };
  }

  // --- the timeline ------------------------------------------------------------------------

  function buildTimeline(jsPsych, state, outbox, token, screened) {
    const opts = state.paradigm;
    const paradigm = window.AssayParadigms && window.AssayParadigms[opts.id];
    if (!paradigm) throw new Error("this page has no plugin for the paradigm " + opts.id);
    const timeline = [];
    const flags = { declined: false, practiceShown: false };
    const button = (stimulus, choices, extra) =>
      Object.assign(
        { type: jsPsychHtmlButtonResponse, stimulus: stimulus, choices: choices },
        extra || {}
      );
    const onlyIf = (test, nodes) => ({ timeline: nodes, conditional_function: test });
    const endScreen = (html) => ({
      type: TaskPlugin,
      run: (say, box) => {
        box.innerHTML = html;
        return forever();
      },
    });

    const status = state.status;
    if (status === "declined") {
      timeline.push(endScreen(paragraphs("You have declined to take part. Thank you for your time; you may close this page.")));
      return timeline;
    }
    if (status === "withdrawn") {
      timeline.push(endScreen(paragraphs(WITHDRAWN)));
      return timeline;
    }
    if (status === "screened_out" && Screening.beforeConsent(state.screen_reason)) {
      timeline.push({
        type: TaskPlugin,
        run: (say, box) => {
          Screening.show(box, state.screen_reason, state.screening, state.return_url, null);
          return forever();
        },
      });
      return timeline;
    }

    if (status === "consent" && state.screening) {
      timeline.push(...Screening.steps(state.screening, screened)); // a failure ends the timeline
    }

    if (status === "consent") {
      timeline.push(
        button(
          "<h1>" + escapeHtml(state.title) + "</h1>" + paragraphs(state.texts.consent) +
            '<p class="assay-withdraw-note">You may stop at any time by closing this page. ' +
            "At the end you can withdraw: “Withdraw my responses” deletes your responses, " +
            "and a link lets you do so later too.</p>",
          ["I agree", "I do not agree"],
          {
            css_classes: ["assay-text"],
            on_finish: (data) => {
              flags.declined = data.response !== 0;
              outbox.push("/api/consent", { agree: !flags.declined });
            },
          }
        )
      );
      timeline.push(
        onlyIf(() => flags.declined, [
          endScreen(
            paragraphs(
              "You have declined to take part, and that has been recorded. " +
                "Thank you for your time; you may close this page."
            )
          ),
        ])
      );
    }

    if (status === "consent" || status === "instructions") {
      timeline.push(
        button("<h1>Instructions</h1>" + paragraphs(state.texts.instructions), ["Start"], {
          css_classes: ["assay-text"],
          on_finish: (data) => {
            outbox.push("/api/instructions", {
              seconds: Math.round((data.rt || 0) / 100) / 10,
            });
          },
        })
      );
    }

    if (["consent", "instructions", "trials"].includes(status)) {
      addTrials(timeline);
      timeline.push(savingStep());
      addQuestionnaire(timeline);
    }

    if (status !== "completed" && status !== "screened_out") {
      timeline.push(debriefStep());
    }
    timeline.push(finishStep());
    return timeline;

    /** The debrief, with the withdrawal a participant sent straight to Prolific needs. */
    function debriefStep() {
      return {
        type: TaskPlugin,
        run: (say, box) =>
          new Promise((resolve) => {
            box.removeAttribute("role");
            box.className = "assay-debrief";
            box.innerHTML = paragraphs(state.texts.debrief);
            const p = document.createElement("p");
            const finish = document.createElement("button");
            finish.className = "jspsych-btn";
            finish.textContent = "Finish";
            finish.addEventListener("click", () => resolve());
            p.appendChild(finish);
            box.appendChild(p);
            box.appendChild(withdrawal(box));
          }),
      };
    }

    function trialNode(t, progressText) {
      return Object.assign(paradigm.params(t.view, opts), {
        type: paradigm.plugin,
        trial_index: t.index,
        response_lock_ms: opts.response_lock_ms,
        progress_text: progressText,
        correct: t.correct === undefined ? null : t.correct,
        on_response: (data) => {
          outbox.addTrial({
            trial_index: data.trial_index,
            answer: data.answer,
            rt_ms: data.rt_ms,
            presented_at: data.presented_at,
            responded_at: data.responded_at,
            events: data.events,
          });
        },
        data: { phase: t.phase, attempt: t.attempt, block: t.block },
      });
    }

    function addTrials(nodes) {
      const resume = resumePoint(state, outbox, paradigm);
      const todo = [];
      if (!resume.done) {
        resume.attempts.slice(resume.start - 1).forEach((ts) => todo.push(...ts));
      }
      resume.main.filter((t) => !resume.answered(t)).forEach((t) => todo.push(t));
      const images = new Set();
      todo.forEach((t) => paradigm.images(t.view).forEach((u) => images.add(u)));
      if (images.size > 0) {
        nodes.push({
          type: jsPsychPreload,
          images: Array.from(images),
          message: "<p>Loading the images…</p>",
          error_message: paragraphs(
            "Some images could not be loaded. Please check your internet connection and reload this page."
          ),
        });
      }

      const practice = { done: resume.done };
      const nPractice = state.practice.trials;
      resume.attempts.forEach((ts, i) => {
        const a = i + 1;
        if (ts.length === 0 || resume.start === null || a < resume.start) return;
        nodes.push({
          conditional_function: () => !practice.done,
          timeline: [
            onlyIf(
              () => a > 1 && ts.every((t) => !resume.answered(t)),
              [
                button(
                  paragraphs(
                    "Not every answer was right, so the practice is repeated " +
                      "(attempt " + a + " of " + state.practice.max_attempts + ")."
                  ),
                  ["Continue"],
                  { css_classes: ["assay-text"] }
                ),
              ]
            ),
            ...ts.map((t, j) =>
              onlyIf(() => !resume.answered(t), [
                Object.assign(trialNode(t, "Practice " + (j + 1) + " of " + nPractice), {
                  on_start: () => {
                    flags.practiceShown = true;
                  },
                }),
              ])
            ),
          ],
          on_timeline_finish: () => {
            if (a === state.practice.max_attempts || resume.allCorrect(a)) practice.done = true;
          },
        });
      });

      const remaining = resume.main.filter((t) => !resume.answered(t));
      nodes.push(
        onlyIf(() => flags.practiceShown && remaining.length > 0, [
          button(
            paragraphs(
              "The practice is over. Now the main part begins" +
                (opts.feedback ? "." : ": you will no longer be told whether your answers are right.")
            ),
            ["Start"],
            { css_classes: ["assay-text"] }
          ),
        ])
      );
      const total = state.progress.main_total;
      resume.main.forEach((t, k) => {
        nodes.push(
          onlyIf(() => !resume.answered(t), [
            trialNode(t, opts.progress ? "Trial " + (k + 1) + " of " + total : null),
          ])
        );
      });
    }

    function savingStep() {
      return {
        type: TaskPlugin,
        message: "Saving your answers…",
        run: async (say) => {
          const show = () => say("Saving your answers… (" + outbox.size + " left)");
          show();
          const previous = outbox.onChange;
          outbox.onChange = (o) => {
            previous(o);
            show();
          };
          try {
            await outbox.whenEmpty();
          } finally {
            outbox.onChange = previous;
          }
        },
      };
    }

    function addQuestionnaire(nodes) {
      const questions = state.questionnaire;
      const answers = {};
      if (questions.length > 0) {
        nodes.push({
          type: jsPsychSurveyHtmlForm,
          preamble: "<h1>A few questions</h1>",
          html: questionnaireHtml(questions),
          button_label: "Continue",
          css_classes: ["assay-text"],
          on_finish: (data) => {
            for (const q of questions) {
              const value = data.response[q.id];
              if (typeof value === "string" && value.trim() !== "") answers[q.id] = value;
            }
          },
        });
      }
      nodes.push({
        type: TaskPlugin,
        message: "Saving your answers…",
        run: () => confirmed("/api/questionnaire", () => ({ answers: answers })),
      });
    }

    function finishStep() {
      return {
        type: TaskPlugin,
        message: "Saving your answers…",
        run: async (say, box) => {
          const res = await confirmed("/api/finish", () => ({}), say);
          const done = res.data || {};
          outbox.clear();
          if (done.redirect_url) {
            say("Thank you! Taking you back to Prolific…");
            window.location.assign(done.redirect_url);
            return forever();
          }
          box.replaceChildren();
          const h = document.createElement("h1");
          h.textContent = "Thank you!";
          box.appendChild(h);
          const p = document.createElement("p");
          p.textContent = done.code
            ? "Your completion code is:"
            : state.mode === "preview"
              ? "You have finished this preview (no completion code is given in a preview)."
              : "You have finished the study. You may close this page.";
          box.appendChild(p);
          if (done.code) {
            const code = document.createElement("p");
            code.className = "assay-code";
            code.textContent = done.code;
            box.appendChild(code);
          }
          box.appendChild(withdrawal(box));
          return forever();
        },
      };
    }

    /** Withdrawal: a button that deletes the participant's responses now (the whole `box`
     * then says so), and the link to do it later. */
    function withdrawal(box) {
      const section = document.createElement("div");
      section.className = "assay-withdrawal";
      const now = document.createElement("p");
      now.textContent = "Changed your mind? You can withdraw from the study: your responses are then deleted. ";
      const button = document.createElement("button");
      button.className = "jspsych-btn assay-withdraw";
      button.textContent = "Withdraw my responses";
      button.addEventListener("click", async () => {
        if (!window.confirm("Delete all your responses from this study? This cannot be undone.")) return;
        button.disabled = true;
        const res = await requestUntilAnswered(token, "POST", "/api/withdraw", {}, () => {});
        const p = document.createElement("p");
        p.className = "assay-withdrawn";
        p.textContent = res.status === 200
          ? WITHDRAWN
          : "The withdrawal could not be recorded: please message the researcher.";
        box.replaceChildren(p);
      });
      now.appendChild(button);
      section.appendChild(now);
      const url = document.body.dataset.withdrawUrl;
      if (url) {
        const later = document.createElement("p");
        later.textContent = "To withdraw later, keep this link (it does not contain your Prolific ID): ";
        const link = document.createElement("a");
        link.className = "assay-withdraw-link";
        link.href = url;
        link.textContent = url;
        later.appendChild(link);
        section.appendChild(later);
      }
      return section;
    }

    /** POST once the outbox is empty; resend what a 409 `missing` names, then try again. */
    async function confirmed(path, body, say) {
      for (let round = 0; round < 5; round++) {
        await outbox.whenEmpty();
        const res = await requestUntilAnswered(token, "POST", path, body(), (tries) => {
          if (say) say("Saving your answers… (waiting for the connection, try " + tries + ")");
        });
        if (res.status >= 200 && res.status < 300) return res;
        const missing = res.data && Array.isArray(res.data.missing) ? res.data.missing : null;
        if (res.status === 409 && missing) {
          if (outbox.resend(missing) === missing.length) continue;
          // Answers this browser never had: the server's state knows where to resume.
          if (reloadOnce()) return forever();
        }
        const why = (res.data && res.data.error) || "HTTP " + res.status;
        if (path === "/api/questionnaire" && res.status === 400) {
          console.error("Assay: questionnaire refused: " + why);
          return res; // finishing does not depend on it
        }
        throw new Error("the server refused " + path + " (" + why + ")");
      }
      throw new Error("some answers could not be saved");
    }
  }

  function reloadOnce() {
    const key = "assay.reloaded";
    let count = 0;
    try {
      count = Number(window.sessionStorage.getItem(key) || "0");
      window.sessionStorage.setItem(key, String(count + 1));
    } catch (e) {
      return false;
    }
    if (count >= 2) return false;
    window.location.reload();
    return true;
  }

  function questionnaireHtml(questions) {
    const wrap = document.createElement("div");
    wrap.className = "assay-form";
    for (const q of questions) {
      const block = document.createElement("fieldset");
      block.className = "assay-question";
      const legend = document.createElement("legend");
      legend.textContent = q.prompt + (q.required ? " *" : "");
      block.appendChild(legend);
      if (q.kind === "choice") {
        q.options.forEach((option) => {
          const label = document.createElement("label");
          label.className = "assay-option";
          const input = document.createElement("input");
          input.type = "radio";
          input.name = q.id;
          input.value = option;
          if (q.required) input.required = true;
          label.appendChild(input);
          label.appendChild(document.createTextNode(" " + option));
          block.appendChild(label);
        });
      } else {
        const area = document.createElement("textarea");
        area.name = q.id;
        area.rows = 3;
        area.maxLength = 5000;
        if (q.required) area.required = true;
        block.appendChild(area);
      }
      wrap.appendChild(block);
    }
    return wrap.outerHTML;
  }

  // --- start -------------------------------------------------------------------------------

  async function main() {
    const token = document.body.dataset.token;
    const target = document.getElementById("jspsych-target");
    const indicator = statusIndicator(document.getElementById("assay-status"));
    const outbox = new Outbox(token, indicator);
    indicator(outbox);
    outbox.kick(); // whatever a previous visit left behind

    target.textContent = "Loading…";
    const res = await requestUntilAnswered(token, "GET", "/api/state", undefined, () => {
      target.textContent = "Waiting for the connection…";
    });
    if (res.status !== 200) {
      target.textContent =
        "This study session could not be loaded (" +
        ((res.data && res.data.error) || "HTTP " + res.status) +
        ").";
      return;
    }
    target.textContent = "";
    const jsPsych = initJsPsych({ display_element: target });
    window.assay = { jsPsych: jsPsych, outbox: outbox, state: res.data }; // for tests and debugging
    const screened = {}; // what a failed screening step measured
    await jsPsych.run(buildTimeline(jsPsych, res.data, outbox, token, screened));
    if (screened.reason) {
      const request = (method, path, body) => requestUntilAnswered(token, method, path, body, () => {});
      await Screening.report(request, jsPsych.getDisplayElement(), res.data, screened);
    }
  }

  main().catch((err) => console.error("Assay:", err));
})();
