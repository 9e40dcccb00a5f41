/* Assay's jsPsych 8 plugin for the human-vs-machine test of drawings, and its registration
 * as the browser side of the `human_vs_machine` paradigm (see study.js).
 *
 * A character's exemplar on top and two drawings of it below, one by a person and one by a
 * model: the participant clicks the drawing they think a person made, which sends the
 * answer {choice: position (0-based)}. The drawings unlock after `response_lock_ms`. RT
 * runs from the frame in which the images appear to the click. When `correct` (the human
 * drawing's position) is given, feedback follows.
 */
/* global jsPsychModule */
var jsPsychHumanVsMachine = (function (jspsych) {
  "use strict";

  const P = jspsych.ParameterType;
  const { el, image, imageTile, chooseOne } = window.AssayTrialKit;

  const info = {
    name: "assay-human-vs-machine",
    version: "1.0.0",
    parameters: {
      ...window.AssayTrialKit.parameters(P),
      /** URL of the exemplar both drawings copy. */
      exemplar: { type: P.IMAGE, default: undefined },
      /** URLs of the two drawings, in the order shown. */
      drawings: { type: P.IMAGE, default: undefined, array: true },
      /** Position of the human drawing (0-based); when given, feedback follows. */
      correct: { type: P.INT, default: null },
    },
    /** answer: {choice: position of the drawing chosen as the person's (0-based)}. */
    data: window.AssayTrialKit.data(P),
  };

  class HumanVsMachinePlugin {
    static info = info;

    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      const root = el("div", "assay-trial hvm");
      root.dataset.trialIndex = String(trial.trial_index);

      const header = el("div", "hvm-header");
      if (trial.progress_text) header.appendChild(el("div", "trial-progress", trial.progress_text));
      header.appendChild(
        el("p", "hvm-question", "Both drawings copy this character. Which one did a person draw?")
      );
      root.appendChild(header);

      const stage = el("div", "hvm-stage");
      const exemplar = el("figure", "hvm-exemplar");
      exemplar.appendChild(image(trial.exemplar, "the character"));
      exemplar.appendChild(el("figcaption", "hvm-caption", "character"));
      stage.appendChild(exemplar);
      const row = el("div", "hvm-drawings");
      const tiles = trial.drawings.map((url, i) =>
        imageTile(url, "hvm-drawing", i, "drawing " + (i + 1), "drawing " + (i + 1), "hvm-label"));
      tiles.forEach((tile) => row.appendChild(tile));
      stage.appendChild(row);
      root.appendChild(stage);

      const footer = el("div", "hvm-footer");
      root.appendChild(footer);
      display_element.replaceChildren(root);

      chooseOne(this.jsPsych, trial, { root, stage, footer, tiles }, "hvm",
                (correct) => "A person drew drawing " + (correct + 1) + " (outlined in green).");
    }
  }

  return HumanVsMachinePlugin;
})(jsPsychModule);

window.AssayParadigms = window.AssayParadigms || {};
window.AssayParadigms.human_vs_machine = {
  plugin: jsPsychHumanVsMachine,
  images: (view) => [view.exemplar, ...view.drawings],
  params: (view) => ({ exemplar: view.exemplar, drawings: view.drawings }),
  isCorrect: (answer, key) => answer.choice === key,
  controls: (answer) => ['.hvm-drawing[data-position="' + answer.choice + '"]'],
};
