/* Assay's jsPsych 8 plugin for intruder detection (odd one out), and its registration as
 * the browser side of the `intruder` paradigm (see study.js).
 *
 * A row (or grid) of images: all but one are exemplars of one unit, one is an intruder.
 * The participant clicks the image that does not belong (it is outlined; another click
 * changes the choice), then one of three confidence buttons, which sends the answer
 * {choice: position (0-based), confidence: 1-3}. Everything unlocks after
 * `response_lock_ms`. RT runs from the frame in which the images appear to the confidence
 * click. When `correct` (the intruder's position) is given, feedback follows.
 */
/* global jsPsychModule */
var jsPsychIntruder = (function (jspsych) {
  "use strict";

  const P = jspsych.ParameterType;
  const { el, image, eventLog, onset, response, feedback } = window.AssayTrialKit;

  const info = {
    name: "assay-intruder",
    version: "1.0.0",
    parameters: {
      ...window.AssayTrialKit.parameters(P),
      /** URLs of the images, in the order shown. */
      items: { type: P.IMAGE, default: undefined, array: true },
      /** Position of the intruder (0-based); when given, feedback follows the response. */
      correct: { type: P.INT, default: null },
    },
    /** answer: {choice: position of the image chosen (0-based), confidence: 1, 2 or 3}. */
    data: window.AssayTrialKit.data(P),
  };

  const CONFIDENCE = [
    [1, "unsure"],
    [2, "sure"],
    [3, "very sure"],
  ];

  class IntruderPlugin {
    static info = info;

    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      const n = trial.items.length;
      const root = el("div", "assay-trial intr");
      root.dataset.trialIndex = String(trial.trial_index);
      root.style.setProperty("--cols", String(n <= 5 ? n : Math.ceil(n / 2)));
      root.style.setProperty("--rows", String(n <= 5 ? 1 : 2));

      const header = el("div", "intr-header");
      if (trial.progress_text) header.appendChild(el("div", "trial-progress", trial.progress_text));
      header.appendChild(
        el("p", "intr-question", "Which image does not belong with the others? Click it.")
      );
      root.appendChild(header);

      const stage = el("div", "intr-stage");
      const tiles = trial.items.map((url, i) => {
        const tile = el("button", "intr-item");
        tile.type = "button";
        tile.disabled = true;
        tile.dataset.position = String(i);
        tile.setAttribute("aria-pressed", "false");
        tile.appendChild(image(url, "image " + (i + 1)));
        tile.appendChild(el("span", "intr-number", String(i + 1)));
        stage.appendChild(tile);
        return tile;
      });
      root.appendChild(stage);

      const footer = el("div", "intr-footer");
      const prompt = el("p", "intr-prompt", "How sure are you?");
      const buttons = el("div", "trial-buttons");
      const confidenceEls = CONFIDENCE.map(([value, label]) => {
        const b = el("button", "jspsych-btn trial-btn intr-confidence", label);
        b.type = "button";
        b.disabled = true;
        b.dataset.confidence = String(value);
        buttons.appendChild(b);
        return b;
      });
      footer.appendChild(prompt);
      footer.appendChild(buttons);
      root.appendChild(footer);
      display_element.replaceChildren(root);

      const log = eventLog();
      let shown = null;
      let unlocked = false;
      let chosen = null;
      let data = null;

      tiles.forEach((tile) =>
        tile.addEventListener("click", () => {
          if (data !== null || !unlocked) return;
          chosen = Number(tile.dataset.position);
          tiles.forEach((t) => {
            const on = t === tile;
            t.classList.toggle("intr-chosen", on);
            t.setAttribute("aria-pressed", on ? "true" : "false");
          });
          confidenceEls.forEach((b) => (b.disabled = false));
          root.dataset.chosen = String(chosen);
        })
      );

      const finish = () => {
        log.stop();
        this.jsPsych.finishTrial(data);
      };

      const showFeedback = () => {
        tiles[trial.correct].classList.add("intr-target");
        feedback(root, footer, data.answered_correctly,
                 "Image " + (trial.correct + 1) + " is the one that does not belong " +
                   "(outlined in green).",
                 trial.continue_label, finish);
      };

      confidenceEls.forEach((b) =>
        b.addEventListener("click", () => {
          if (data !== null || shown === null || chosen === null) return;
          const answer = { choice: chosen, confidence: Number(b.dataset.confidence) };
          data = response(trial, shown, answer, log);
          tiles.forEach((t) => (t.disabled = true));
          confidenceEls.forEach((c) => (c.disabled = true));
          b.classList.add("trial-chosen");
          if (typeof trial.correct === "number") {
            data.answered_correctly = chosen === trial.correct;
          }
          if (typeof trial.on_response === "function") trial.on_response(data);
          if (data.answered_correctly === undefined) {
            finish();
          } else {
            showFeedback();
          }
        })
      );

      onset(this.jsPsych, root, stage, trial.response_lock_ms, () => {
        unlocked = true;
        tiles.forEach((t) => (t.disabled = false));
      }).then((at) => {
        shown = at;
        log.start(at.t0);
      });
    }
  }

  return IntruderPlugin;
})(jsPsychModule);

window.AssayParadigms = window.AssayParadigms || {};
window.AssayParadigms.intruder = {
  plugin: jsPsychIntruder,
  images: (view) => view.items.slice(),
  params: (view) => ({ items: view.items }),
  isCorrect: (answer, key) => answer.choice === key,
  controls: (answer) => [
    '.intr-item[data-position="' + answer.choice + '"]',
    '.intr-confidence[data-confidence="' + answer.confidence + '"]',
  ],
};
