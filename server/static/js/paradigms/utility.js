/* Assay's jsPsych 8 plugin for the utility benchmark, and its registration as the browser
 * side of the `utility` paradigm (see study.js).
 *
 * Learning trials show an image, the model's decision on it and, by condition, the
 * explanation of that decision beside it; "Next" unlocks after `view_ms` and sends the
 * answer {choice: null}. Evaluation trials show a new image alone and one button per class:
 * the participant predicts the model's decision, which sends {choice: class (0-based)}; the
 * buttons unlock after `response_lock_ms`. RT runs from the frame in which the images
 * appear. When `correct` is given (feedback), it follows the prediction.
 */
/* global jsPsychModule */
var jsPsychUtility = (function (jspsych) {
  "use strict";

  const P = jspsych.ParameterType;
  const kit = window.AssayTrialKit;
  const { el, image } = kit;

  const info = {
    name: "assay-utility",
    version: "1.0.0",
    parameters: {
      ...kit.parameters(P),
      /** "learning" or "evaluation". */
      phase: { type: P.STRING, default: undefined },
      /** Session number (1-based) and the number of sessions. */
      session: { type: P.INT, default: 1 },
      sessions: { type: P.INT, default: 1 },
      /** URL of the image the model decided on. */
      image: { type: P.IMAGE, default: undefined },
      /** The model's classes, in button order. */
      classes: { type: P.STRING, default: undefined, array: true },
      /** Learning: the model's decision (index into classes) and its explanation's URL. */
      decision: { type: P.INT, default: null },
      explanation: { type: P.IMAGE, default: null },
      /** Learning: ms before "Next" unlocks. */
      view_ms: { type: P.INT, default: 2500 },
      /** Evaluation: the model's decision, when feedback is given. */
      correct: { type: P.INT, default: null },
    },
    /** answer: {choice: the class predicted (0-based), or null on learning trials}. */
    data: kit.data(P),
  };

  class UtilityPlugin {
    static info = info;

    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      const learning = trial.phase === "learning";
      const root = el("div", "assay-trial util " + (learning ? "util-learning" : "util-evaluation"));
      root.dataset.trialIndex = String(trial.trial_index);

      const header = el("div", "util-header");
      header.appendChild(el("div", "util-session",
        "Session " + trial.session + " of " + trial.sessions + ": " +
        (learning ? "learn how the model decides" : "predict the model")));
      if (trial.progress_text) header.appendChild(el("div", "trial-progress", trial.progress_text));
      const question = el("p", "util-question");
      if (learning) {
        question.appendChild(document.createTextNode("The model decided: "));
        question.appendChild(el("strong", "util-decision", trial.classes[trial.decision]));
      } else {
        question.textContent = "What will the model decide for this image?";
      }
      header.appendChild(question);
      root.appendChild(header);

      const stage = el("div", "util-stage");
      const figure = (url, alt, caption) => {
        const f = el("figure", "util-figure");
        f.appendChild(image(url, alt));
        f.appendChild(el("figcaption", "util-caption", caption));
        return f;
      };
      stage.appendChild(figure(trial.image, "the image", "image"));
      if (learning && trial.explanation) {
        stage.appendChild(figure(trial.explanation, "the explanation",
                                 "what drove the decision (red: most)"));
      }
      root.appendChild(stage);

      const footer = el("div", "util-footer");
      const buttons = learning
        ? [Object.assign(el("button", "jspsych-btn util-next", "Next"), { type: "button" })]
        : trial.classes.map((name, i) => {
            const b = el("button", "jspsych-btn util-class", name);
            b.type = "button";
            b.dataset.position = String(i);
            return b;
          });
      buttons.forEach((b) => {
        b.disabled = true;
        footer.appendChild(b);
      });
      root.appendChild(footer);
      display_element.replaceChildren(root);

      const log = kit.eventLog();
      let shown = null;
      let data = null;
      const finish = () => {
        log.stop();
        this.jsPsych.finishTrial(data);
      };
      buttons.forEach((b) =>
        b.addEventListener("click", () => {
          if (data !== null || shown === null) return;
          const choice = learning ? null : Number(b.dataset.position);
          data = kit.response(trial, shown, { choice: choice }, log);
          buttons.forEach((other) => (other.disabled = true));
          b.classList.add("util-chosen");
          const scored = !learning && typeof trial.correct === "number";
          if (scored) data.answered_correctly = choice === trial.correct;
          if (typeof trial.on_response === "function") trial.on_response(data);
          if (!scored) {
            finish();
            return;
          }
          kit.feedback(root, footer, data.answered_correctly,
                       "The model decided: " + trial.classes[trial.correct] + ".",
                       trial.continue_label, finish);
        })
      );
      kit.onset(this.jsPsych, root, stage, learning ? trial.view_ms : trial.response_lock_ms, () =>
        buttons.forEach((b) => (b.disabled = false))
      ).then((s) => {
        shown = s;
        log.start(s.t0);
      });
    }
  }

  return UtilityPlugin;
})(jsPsychModule);

window.AssayParadigms = window.AssayParadigms || {};
window.AssayParadigms.utility = {
  plugin: jsPsychUtility,
  images: (view) => [view.image, ...(view.explanation ? [view.explanation] : [])],
  params: (view, opts) => ({
    phase: view.phase,
    session: view.session,
    sessions: opts.sessions,
    image: view.image,
    classes: view.classes,
    decision: view.decision === undefined ? null : view.decision,
    explanation: view.explanation || null,
    view_ms: opts.learning_view_ms,
  }),
  isCorrect: (answer, key) => key === null || key === undefined || answer.choice === key,
  controls: (answer) =>
    answer.choice === null ? [".util-next"] : ['.util-class[data-position="' + answer.choice + '"]'],
};
