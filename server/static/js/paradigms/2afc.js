/* Assay's jsPsych 8 plugin for the 2AFC exemplar trial (Borowski et al. 2021), and its
 * registration as the browser side of the `2afc_exemplar` paradigm (see study.js).
 *
 * Minimally activating references on one side, maximally activating ones on the other, two
 * query images (A, B) in the middle. References from several explanation methods (natural
 * exemplars and feature visualizations, say) come as groups (`ref_groups`): each side shows
 * one grid per method, stacked in the order given and parted by a dotted line, all with the
 * same columns, so that a side stays one compact block that fits the screen; six buttons (choice x confidence) that unlock after
 * `response_lock_ms`. RT is measured with performance.now() from the frame in which the
 * images are first shown. Focus, visibility, fullscreen and network events during the trial
 * are logged as {type, t} with t in ms since that moment. When `correct` is given, a
 * feedback screen follows the response. `on_response` is called with the trial data as
 * soon as the participant answers (before any feedback), so the caller can send it at once.
 *
 * Every element is built with the DOM API: no HTML strings, nothing for CSP to object to.
 */
/* global jsPsychModule */
var jsPsych2afc = (function (jspsych) {
  "use strict";

  const P = jspsych.ParameterType;

  const info = {
    name: "assay-2afc",
    version: "1.0.0",
    parameters: {
      ...window.AssayTrialKit.parameters(P),
      /** URLs of the maximally activating reference images. */
      ref_max: { type: P.IMAGE, default: undefined, array: true },
      /** URLs of the minimally activating reference images. */
      ref_min: { type: P.IMAGE, default: undefined, array: true },
      /** [n max, n min] references per group (one group per method), in order; null: one. */
      ref_groups: { type: P.COMPLEX, default: null },
      /** URL of query image A (shown first, on the left of the pair). */
      query_a: { type: P.IMAGE, default: undefined },
      /** URL of query image B. */
      query_b: { type: P.IMAGE, default: undefined },
      /** Side of the maximally activating references: "left" or "right". */
      max_side: { type: P.STRING, default: "right" },
      /** Correct answer ("a" or "b"); when given, feedback is shown after the response. */
      correct: { type: P.STRING, default: null },
    },
    /** answer: {choice: "a" or "b", confidence: 1 (unsure), 2 (sure) or 3 (very sure)}. */
    data: window.AssayTrialKit.data(P),
  };

  // Button order, left to right: A very sure ... B very sure.
  const BUTTONS = [
    ["a", 3, "very sure"],
    ["a", 2, "sure"],
    ["a", 1, "unsure"],
    ["b", 1, "unsure"],
    ["b", 2, "sure"],
    ["b", 3, "very sure"],
  ];
  const { el, image, eventLog, onset, response, feedback } = window.AssayTrialKit;

  function referenceColumn(kind, urls, heading, sizes) {
    const section = el("section", "afc-refs afc-" + kind);
    section.appendChild(el("h2", "afc-heading", heading));
    let start = 0;
    for (const n of sizes) {
      const grid = el("div", "afc-grid");
      const offset = start;
      urls.slice(offset, offset + n).forEach((url, i) =>
        grid.appendChild(image(url, heading + " example " + (offset + i + 1)))
      );
      section.appendChild(grid);
      start += n;
    }
    return section;
  }

  /** [[n max, n min], ...] from the trial; one group of all when absent or inconsistent. */
  function referenceGroups(trial) {
    const groups = trial.ref_groups;
    const sum = (i) => (groups || []).reduce((total, g) => total + g[i], 0);
    if (
      Array.isArray(groups) && groups.length > 0 &&
      sum(0) === trial.ref_max.length && sum(1) === trial.ref_min.length
    ) {
      return groups;
    }
    return [[trial.ref_max.length, trial.ref_min.length]];
  }

  /** Columns and rows of a side: g groups of up to k images, as near square as it goes. */
  function gridShape(k, g) {
    const cols = Math.max(1, Math.ceil(Math.sqrt(k * g)));
    return { cols: cols, rows: Math.max(1, Math.ceil(k / cols) * g) };
  }

  class TwoAFCPlugin {
    static info = info;

    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      const side = trial.max_side === "left" ? "left" : "right";
      const groups = referenceGroups(trial);
      const largest = Math.max(...groups.map((g) => Math.max(g[0], g[1])));
      const shape = gridShape(largest, groups.length);

      const root = el("div", "assay-trial afc");
      root.dataset.trialIndex = String(trial.trial_index);
      root.style.setProperty("--cols", String(shape.cols));
      root.style.setProperty("--rows", String(shape.rows));
      root.style.setProperty("--groups", String(groups.length));

      const header = el("div", "afc-header");
      if (trial.progress_text) header.appendChild(el("div", "trial-progress", trial.progress_text));
      // Without references (a "none" condition) there is nothing to match: the question
      // is then which query drives the unit more, and the empty panels are left out.
      const bare = trial.ref_max.length === 0 && trial.ref_min.length === 0;
      header.appendChild(
        el(
          "p",
          "afc-question",
          bare
            ? "Which of the two images makes the unit respond more strongly?"
            : "Which image in the middle belongs with the strongly activating examples " +
                "(the " + side + " side)?"
        )
      );
      root.appendChild(header);

      const stage = el("div", "afc-stage");
      const minCol = referenceColumn("min", trial.ref_min, "Weakly activating",
                                     groups.map((g) => g[1]));
      const maxCol = referenceColumn("max", trial.ref_max, "Strongly activating",
                                     groups.map((g) => g[0]));
      const queries = el("section", "afc-queries");
      queries.appendChild(el("h2", "afc-heading",
                             bare ? "Which responds more strongly?"
                                  : "Which belongs on the " + side + "?"));
      const pair = el("div", "afc-pair");
      const figures = {};
      for (const [key, url] of [["a", trial.query_a], ["b", trial.query_b]]) {
        const fig = el("figure", "afc-query");
        fig.dataset.query = key;
        fig.appendChild(image(url, "query " + key.toUpperCase()));
        fig.appendChild(el("figcaption", null, key.toUpperCase()));
        pair.appendChild(fig);
        figures[key] = fig;
      }
      queries.appendChild(pair);
      const columns = bare ? [queries]
        : side === "right" ? [minCol, queries, maxCol] : [maxCol, queries, minCol];
      columns.forEach((c) => stage.appendChild(c));
      root.appendChild(stage);

      const footer = el("div", "afc-footer");
      const buttons = el("div", "trial-buttons");
      const buttonEls = BUTTONS.map(([choice, confidence, label]) => {
        const b = el("button", "jspsych-btn trial-btn afc-" + choice);
        b.type = "button";
        b.disabled = true;
        b.dataset.choice = choice;
        b.dataset.confidence = String(confidence);
        b.appendChild(el("strong", null, choice.toUpperCase()));
        b.appendChild(el("span", null, label));
        b.setAttribute("aria-label", choice.toUpperCase() + ", " + label);
        buttons.appendChild(b);
        return b;
      });
      footer.appendChild(buttons);
      root.appendChild(footer);

      display_element.replaceChildren(root);

      const log = eventLog();
      let shown = null; // {t0, presentedAt} once the images are on screen

      // --- response ------------------------------------------------------------------------
      let data = null;
      const respond = (button) => {
        if (data !== null || shown === null) return;
        const answer = { choice: button.dataset.choice, confidence: Number(button.dataset.confidence) };
        data = response(trial, shown, answer, log);
        buttonEls.forEach((b) => (b.disabled = true));
        button.classList.add("trial-chosen");
        if (trial.correct === "a" || trial.correct === "b") {
          data.answered_correctly = data.answer.choice === trial.correct;
        }
        if (typeof trial.on_response === "function") trial.on_response(data);
        if (data.answered_correctly === undefined) {
          finish();
        } else {
          showFeedback();
        }
      };
      buttonEls.forEach((b) => b.addEventListener("click", () => respond(b)));

      const finish = () => {
        log.stop();
        this.jsPsych.finishTrial(data);
      };

      const showFeedback = () => {
        root.classList.add("afc-feedback");
        figures[trial.correct].classList.add("afc-target");
        figures[data.answer.choice].classList.add("afc-picked");
        feedback(root, footer, data.answered_correctly,
                 "Image " + trial.correct.toUpperCase() +
                   " belongs with the strongly activating examples (outlined in green).",
                 trial.continue_label, finish);
      };

      // --- onset: show the images once decoded, start the clock in the frame they appear ----
      onset(this.jsPsych, root, stage, trial.response_lock_ms, () => {
        buttonEls.forEach((b) => (b.disabled = false));
      }).then((at) => {
        shown = at;
        log.start(at.t0);
      });
    }
  }

  return TwoAFCPlugin;
})(jsPsychModule);

window.AssayParadigms = window.AssayParadigms || {};
window.AssayParadigms["2afc_exemplar"] = {
  plugin: jsPsych2afc,
  /** Every image URL of a trial's view, for preloading. */
  images: (view) => [...view.ref_max, ...view.ref_min, view.query_a, view.query_b],
  /** The plugin's own parameters from a trial's view and the study's options. */
  params: (view, options) => ({
    ref_max: view.ref_max,
    ref_min: view.ref_min,
    ref_groups: view.ref_groups || null,
    query_a: view.query_a,
    query_b: view.query_b,
    max_side: options.max_side,
  }),
  /** Whether an answer matches a trial's key (practice feedback and its repetition). */
  isCorrect: (answer, key) => answer.choice === key,
  /** The elements a participant clicks, in order, to give `answer` (CSS selectors). */
  controls: (answer) => [
    '.trial-btn[data-choice="' + answer.choice + '"][data-confidence="' + answer.confidence + '"]',
  ],
};
