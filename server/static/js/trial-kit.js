/* What every Assay trial plugin shares, as `window.AssayTrialKit`:
 *
 * - `el(tag, className, text)`, `image(src, alt)`: DOM builders (no HTML strings, so
 *   nothing for CSP to object to, and researcher text is never markup);
 * - `eventLog()`: focus, visibility, fullscreen and network events during a trial, as
 *   {type, t} with t in ms since onset (`log.start(t0)`, `log.events()`, `log.stop()`);
 * - `onset(jsPsych, root, stage, lockMs, onUnlock)`: shows `stage` once its images are
 *   decoded (or after 5 s), starts the clock in the frame they appear, and unlocks the
 *   response after `lockMs`; resolves {t0, presentedAt} at onset. Marks `root` with
 *   data-shown / data-unlocked for tests;
 * - `response(trial, shown, answer, log)`: the data a plugin reports to `on_response`:
 *   {trial_index, answer, rt_ms, presented_at, responded_at, events};
 * - `parameters(P)` / `data(P)`: the jsPsych parameters study.js gives every plugin, and
 *   the data every plugin reports, to spread into a plugin's `info`;
 * - `feedback(root, footer, right, text, label, onContinue)`: the feedback line and its
 *   Continue button, in place of the response buttons;
 * - `imageTile(url, className, position, alt, caption, captionClass)` and
 *   `chooseOne(jsPsych, trial, parts, prefix, explain)`: a trial answered by clicking one
 *   of a row of image buttons, {choice: position}, with feedback naming the right one.
 */
(function () {
  "use strict";

  const MAX_EVENTS = 200;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function image(src, alt) {
    const img = el("img");
    img.src = src;
    img.alt = alt;
    img.draggable = false;
    return img;
  }

  function eventLog() {
    let t0 = null;
    const events = [];
    const log = (type) => {
      if (events.length >= MAX_EVENTS) return;
      const t = t0 === null ? 0 : performance.now() - t0;
      events.push({ type: type, t: Math.round(Math.max(0, t) * 10) / 10 });
    };
    const listeners = [
      [window, "focus", () => log("focus")],
      [window, "blur", () => log("blur")],
      [window, "online", () => log("online")],
      [window, "offline", () => log("offline")],
      [
        document,
        "visibilitychange",
        () => log(document.visibilityState === "hidden" ? "visibilityhidden" : "visibilityvisible"),
      ],
      [
        document,
        "fullscreenchange",
        () => log(document.fullscreenElement ? "fullscreenenter" : "fullscreenexit"),
      ],
    ];
    listeners.forEach(([target, type, fn]) => target.addEventListener(type, fn));
    return {
      start: (t) => {
        t0 = t;
      },
      events: () => events.slice(),
      stop: () => listeners.forEach(([target, type, fn]) => target.removeEventListener(type, fn)),
    };
  }

  function onset(jsPsych, root, stage, lockMs, onUnlock) {
    stage.style.visibility = "hidden"; // until every image is decoded
    const imgs = Array.from(stage.querySelectorAll("img"));
    const decoded = Promise.all(imgs.map((img) => img.decode().catch(() => undefined)));
    const timeout = new Promise((resolve) => setTimeout(resolve, 5000));
    return Promise.race([decoded, timeout]).then(
      () =>
        new Promise((resolve) => {
          if (!root.isConnected) return;
          stage.style.visibility = "visible";
          requestAnimationFrame(() => {
            const shown = { t0: performance.now(), presentedAt: new Date().toISOString() };
            root.dataset.shown = "1";
            const unlock = () => {
              onUnlock();
              root.dataset.unlocked = "1";
            };
            if (lockMs > 0) {
              jsPsych.pluginAPI.setTimeout(unlock, lockMs);
            } else {
              unlock();
            }
            resolve(shown);
          });
        })
    );
  }

  function response(trial, shown, answer, log) {
    return {
      trial_index: trial.trial_index,
      answer: answer,
      rt_ms: Math.round((performance.now() - shown.t0) * 10) / 10,
      presented_at: shown.presentedAt,
      responded_at: new Date().toISOString(),
      events: log.events(),
    };
  }

  function parameters(P) {
    return {
      /** Index of this trial in the participant's plan (sent back with the answer). */
      trial_index: { type: P.INT, default: undefined },
      /** Milliseconds from the images' onset during which no answer can be given. */
      response_lock_ms: { type: P.INT, default: 1500 },
      /** Text of the progress indicator, e.g. "Trial 7 of 40"; null hides it. */
      progress_text: { type: P.STRING, default: null },
      /** Called with {trial_index, answer, rt_ms, presented_at, responded_at, events} the
       * moment the participant responds. */
      on_response: { type: P.FUNCTION, default: null },
      /** Label of the button that ends the feedback screen. */
      continue_label: { type: P.STRING, default: "Continue" },
    };
  }

  function data(P) {
    return {
      trial_index: { type: P.INT },
      /** The paradigm's answer, as the server's Answer model takes it. */
      answer: { type: P.OBJECT },
      /** Response time in ms from image onset, performance.now() resolution. */
      rt_ms: { type: P.FLOAT },
      /** ISO 8601 wall-clock time of image onset and of the response. */
      presented_at: { type: P.STRING },
      responded_at: { type: P.STRING },
      /** [{type, t}] focus/blur/visibility/fullscreen/network events during the trial. */
      events: { type: P.COMPLEX, array: true },
      /** Whether the answer was right, when `correct` was given (feedback trials). */
      answered_correctly: { type: P.BOOL },
    };
  }

  function feedback(root, footer, right, text, label, onContinue) {
    root.classList.add(right ? "trial-right" : "trial-wrong");
    const box = el("div", "trial-feedback-box");
    box.setAttribute("role", "status");
    box.appendChild(el("p", "trial-feedback-text", (right ? "Correct! " : "Not quite. ") + text));
    const next = el("button", "jspsych-btn trial-continue", label);
    next.type = "button";
    next.addEventListener("click", onContinue);
    box.appendChild(next);
    footer.replaceChildren(box);
    next.focus();
  }

  /* A button showing one image, disabled until the response lock lifts. */
  function imageTile(url, className, position, alt, caption, captionClass) {
    const tile = el("button", className);
    tile.type = "button";
    tile.disabled = true;
    tile.dataset.position = String(position);
    tile.appendChild(image(url, alt));
    tile.appendChild(el("span", captionClass, caption));
    return tile;
  }

  /* Runs a trial whose answer is one click on one of `parts.tiles` (image buttons in
   * `parts.stage`, already on the page): {choice: position}. With `trial.correct` given, the
   * click is scored and feedback follows in `parts.footer`, the right tile marked
   * `<prefix>-target` and named by `explain(correct)`; the clicked one is `<prefix>-chosen`. */
  function chooseOne(jsPsych, trial, parts, prefix, explain) {
    const { root, stage, footer, tiles } = parts;
    const log = eventLog();
    let shown = null;
    let data = null;

    const finish = () => {
      log.stop();
      jsPsych.finishTrial(data);
    };

    tiles.forEach((tile) =>
      tile.addEventListener("click", () => {
        if (data !== null || shown === null) return;
        const chosen = Number(tile.dataset.position);
        data = response(trial, shown, { choice: chosen }, log);
        tiles.forEach((t) => (t.disabled = true));
        tile.classList.add(prefix + "-chosen");
        if (typeof trial.correct === "number") {
          data.answered_correctly = chosen === trial.correct;
        }
        if (typeof trial.on_response === "function") trial.on_response(data);
        if (data.answered_correctly === undefined) {
          finish();
          return;
        }
        tiles[trial.correct].classList.add(prefix + "-target");
        feedback(root, footer, data.answered_correctly, explain(trial.correct),
                 trial.continue_label, finish);
      })
    );

    onset(jsPsych, root, stage, trial.response_lock_ms, () => {
      tiles.forEach((t) => (t.disabled = false));
    }).then((at) => {
      shown = at;
      log.start(at.t0);
    });
  }

  window.AssayTrialKit = {
    el, image, eventLog, onset, response, parameters, data, feedback, imageTile, chooseOne,
  };
})();
