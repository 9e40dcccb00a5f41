/* Device and window screening before consent (a study file's [screening] table).
 *
 * Two steps of jsPsych's browser check (@jspsych/plugin-browser-check): first whether this
 * is a phone or tablet, so that a phone is never asked to enlarge its window; then the
 * window's size, with the plugin's prompt to enlarge it until it fits or the participant
 * says that it cannot. A failed check ends the timeline (the plugin aborts it); study.js
 * then reports it (POST /api/screening, which screens the session out) and shows this
 * file's page: why, and the way back to Prolific, without a code.
 *
 * Loaded before study.js as `window.AssayScreening`.
 */
/* global jsPsychBrowserCheck */
(function () {
  "use strict";

  const BEFORE_CONSENT = ["mobile", "window_too_small"]; // server.flow.BEFORE_CONSENT

  /** A phone or tablet: the plugin's user-agent test, or a touch screen as main pointer
   * (tablets often say nothing in their user agent). */
  function isMobile(data) {
    return Boolean(data.mobile) || window.matchMedia("(hover: none) and (pointer: coarse)").matches;
  }

  /** The browser-check steps for requirements `need` ({min_width, min_height,
   * allow_mobile}); a failure is written into `failed` ({reason, width, height, mobile}). */
  function steps(need, failed) {
    const record = (reason, data) =>
      Object.assign(failed, {
        reason: reason,
        width: Math.round(data.width === undefined ? window.innerWidth : data.width),
        height: Math.round(data.height === undefined ? window.innerHeight : data.height),
        mobile: isMobile(data),
      });
    const out = [];
    if (!need.allow_mobile) {
      out.push({
        type: jsPsychBrowserCheck,
        features: ["mobile"],
        inclusion_function: (data) => !isMobile(data),
        exclusion_message: (data) => {
          record("mobile", data);
          return "";
        },
      });
    }
    if (need.min_width > 0 || need.min_height > 0) {
      out.push({
        type: jsPsychBrowserCheck,
        features: ["width", "height"],
        minimum_width: need.min_width,
        minimum_height: need.min_height,
        allow_window_resize: true,
        window_resize_message:
          '<div class="assay-resize"><h1>Please make this window larger</h1>' +
          "<p>This study needs a browser window of at least " +
          '<span id="browser-check-min-width"></span> × <span id="browser-check-min-height"></span> ' +
          "pixels. It is now " +
          '<span id="browser-check-actual-width"></span> × <span id="browser-check-actual-height"></span>.</p>' +
          "<p>Maximise the window, or close other panels; the study goes on by itself once the window is large enough.</p></div>",
        resize_fail_button_text: "I cannot make the window larger",
        inclusion_function: (data) => data.width >= need.min_width && data.height >= need.min_height,
        exclusion_message: (data) => {
          record("window_too_small", data);
          return "";
        },
      });
    }
    return out;
  }

  /** Why the participant cannot take part, as a sentence. */
  function why(reason, need, failed) {
    if (reason === "mobile") {
      return "This study needs a computer with a mouse or trackpad: it cannot be done on a phone or tablet.";
    }
    const now = failed && failed.width ? " Your window was " + failed.width + " × " + failed.height + "." : "";
    return (
      "This study needs a browser window of at least " + need.min_width + " × " + need.min_height +
      " pixels, so that every image of a trial fits on the screen." + now
    );
  }

  /** The screened-out page, in `box`; `back` is the way back to Prolific (null in previews). */
  function show(box, reason, need, back, failed) {
    const add = (tag, text, className) => {
      const el = document.createElement(tag);
      el.textContent = text;
      if (className) el.className = className;
      box.appendChild(el);
      return el;
    };
    box.replaceChildren();
    box.classList.add("assay-screened-out");
    box.dataset.screenReason = reason;
    add("h1", "Sorry: this study cannot be done here");
    add("p", why(reason, need, failed));
    add("p", "Please return the study on Prolific. You have not started it, so there is no completion code.");
    if (back) {
      const link = add("a", "Back to Prolific", "jspsych-btn");
      link.href = back;
    }
  }

  /** Report a failed check to the server, then show the page. */
  async function report(request, box, state, failed) {
    const body = { reason: failed.reason, width: failed.width, height: failed.height, mobile: failed.mobile };
    const res = await request("POST", "/api/screening", body);
    if (res.status !== 200) {
      console.error("Assay: the screening was refused: " + ((res.data && res.data.error) || "HTTP " + res.status));
    }
    show(box, failed.reason, state.screening, state.return_url, failed);
  }

  window.AssayScreening = {
    steps: steps,
    show: show,
    report: report,
    beforeConsent: (reason) => BEFORE_CONSENT.includes(reason),
  };
})();
