/* Assay's jsPsych 8 plugin for category recognition of drawings, and its registration as
 * the browser side of the `category_recognition` paradigm (see study.js).
 *
 * One drawing on top and a row (or two) of category exemplars below: the participant clicks
 * the exemplar whose category the drawing shows, which sends the answer
 * {choice: position (0-based)}. The exemplars unlock after `response_lock_ms`. RT runs
 * from the frame in which the images appear to the click. When `correct` (the position of
 * the drawing's own exemplar) is given, feedback follows.
 */
/* global jsPsychModule */
var jsPsychCategoryRecognition = (function (jspsych) {
  "use strict";

  const P = jspsych.ParameterType;
  const { el, image, imageTile, chooseOne } = window.AssayTrialKit;

  const info = {
    name: "assay-category-recognition",
    version: "1.0.0",
    parameters: {
      ...window.AssayTrialKit.parameters(P),
      /** URL of the drawing. */
      drawing: { type: P.IMAGE, default: undefined },
      /** URLs of the category exemplars, in the order shown. */
      choices: { type: P.IMAGE, default: undefined, array: true },
      /** Position of the drawing's own exemplar (0-based); when given, feedback follows. */
      correct: { type: P.INT, default: null },
    },
    /** answer: {choice: position of the exemplar chosen (0-based)}. */
    data: window.AssayTrialKit.data(P),
  };

  class CategoryRecognitionPlugin {
    static info = info;

    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      const n = trial.choices.length;
      const root = el("div", "assay-trial crec");
      root.dataset.trialIndex = String(trial.trial_index);
      root.style.setProperty("--cols", String(n <= 5 ? n : Math.ceil(n / 2)));
      root.style.setProperty("--rows", String(n <= 5 ? 1 : 2));

      const header = el("div", "crec-header");
      if (trial.progress_text) header.appendChild(el("div", "trial-progress", trial.progress_text));
      header.appendChild(
        el("p", "crec-question", "Which character does this drawing show? Click it below.")
      );
      root.appendChild(header);

      const stage = el("div", "crec-stage");
      const target = el("div", "crec-drawing");
      target.appendChild(image(trial.drawing, "the drawing"));
      stage.appendChild(target);
      const row = el("div", "crec-choices");
      const tiles = trial.choices.map((url, i) =>
        imageTile(url, "crec-choice", i, "character " + (i + 1), String(i + 1), "crec-number"));
      tiles.forEach((tile) => row.appendChild(tile));
      stage.appendChild(row);
      root.appendChild(stage);

      const footer = el("div", "crec-footer");
      root.appendChild(footer);
      display_element.replaceChildren(root);

      chooseOne(this.jsPsych, trial, { root, stage, footer, tiles }, "crec",
                (correct) => "The drawing shows character " + (correct + 1) + " (outlined in green).");
    }
  }

  return CategoryRecognitionPlugin;
})(jsPsychModule);

window.AssayParadigms = window.AssayParadigms || {};
window.AssayParadigms.category_recognition = {
  plugin: jsPsychCategoryRecognition,
  images: (view) => [view.drawing, ...view.choices],
  params: (view) => ({ drawing: view.drawing, choices: view.choices }),
  isCorrect: (answer, key) => answer.choice === key,
  controls: (answer) => ['.crec-choice[data-position="' + answer.choice + '"]'],
};
