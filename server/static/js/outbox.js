/* The network layer of the participant page, shared as one global: `window.AssayNet`.
 *
 * - `requestUntilAnswered(token, method, path, body, onWait)`: one request, retried with
 *   exponential backoff (cut short by an 'online' event) until the server gives an answer
 *   that is not worth retrying (anything but a network failure, a timeout, 408, 429 or 5xx).
 * - `Outbox(token, onChange)`: answers kept in localStorage (per token) and POSTed in order
 *   in the background, retried while offline or while the server fails; a journal of this
 *   browser's trial answers lets a reload resume and lets a 409 `missing` be resent.
 * - `statusIndicator(element)`: an `onChange` for the outbox that tells the participant
 *   when answers are waiting (offline, or the server is failing).
 *
 * Loaded (deferred) before study.js, which builds the timeline on top of it.
 */
window.AssayNet = (function () {
  "use strict";

  const HEADER = "X-Assay-Session";
  const REQUEST_TIMEOUT_MS = 15000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;

  function backoff(tries) {
    const ms = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.max(0, tries - 1));
    return ms * (0.75 + Math.random() * 0.5);
  }

  const store = {
    memory: {},
    get(key) {
      try {
        const raw = window.localStorage.getItem(key);
        return raw === null ? null : JSON.parse(raw);
      } catch (e) {
        return key in this.memory ? this.memory[key] : null;
      }
    },
    set(key, value) {
      this.memory[key] = value;
      try {
        window.localStorage.setItem(key, JSON.stringify(value));
      } catch (e) {
        /* storage full or disabled: the in-memory copy still serves this page */
      }
    },
    remove(key) {
      delete this.memory[key];
      try {
        window.localStorage.removeItem(key);
      } catch (e) {
        /* nothing to do */
      }
    },
  };

  /** One HTTP exchange; resolves {status, data}, rejects on a network failure or timeout. */
  async function request(token, method, path, body) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const init = { method: method, headers: { [HEADER]: token }, signal: controller.signal };
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      const response = await fetch(path, init);
      let data = null;
      try {
        data = await response.json();
      } catch (e) {
        data = null;
      }
      return { status: response.status, data: data };
    } finally {
      clearTimeout(timer);
    }
  }

  const retryable = (status) => status >= 500 || status === 408 || status === 429;

  /** Sleep that an 'online' event cuts short. */
  function pause(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        window.removeEventListener("online", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      window.addEventListener("online", done);
    });
  }

  /** A request retried (with backoff) until the server gives a non-retryable answer. */
  async function requestUntilAnswered(token, method, path, body, onWait) {
    for (let tries = 1; ; tries++) {
      if (navigator.onLine) {
        try {
          const res = await request(token, method, path, body);
          if (!retryable(res.status)) return res;
        } catch (e) {
          /* network failure: retry below */
        }
      }
      if (onWait) onWait(tries);
      await pause(navigator.onLine ? backoff(tries) : 5000);
    }
  }

  // --- the outbox ----------------------------------------------------------------------------

  class Outbox {
    constructor(token, onChange) {
      this.token = token;
      this.key = "assay.outbox." + token;
      this.journalKey = "assay.answers." + token;
      this.items = store.get(this.key) || []; // [{path, body}], sent in order
      this.journal = store.get(this.journalKey) || {}; // trial index -> body, this browser's
      this.onChange = onChange;
      this.tries = 0;
      this.running = false;
      this.waiters = [];
      window.addEventListener("online", () => this.changed());
      window.addEventListener("offline", () => this.changed());
    }

    get size() {
      return this.items.length;
    }

    get retrying() {
      return this.tries > 0;
    }

    answered(index) {
      return Object.prototype.hasOwnProperty.call(this.journal, String(index));
    }

    answer(index) {
      return this.answered(index) ? this.journal[String(index)] : null;
    }

    save() {
      store.set(this.key, this.items);
      store.set(this.journalKey, this.journal);
    }

    changed() {
      if (this.onChange) this.onChange(this);
    }

    push(path, body) {
      this.items.push({ path: path, body: body });
      this.save();
      this.changed();
      this.kick();
    }

    addTrial(body) {
      this.journal[String(body.trial_index)] = body;
      this.push("/api/trials", body);
    }

    /** Queue again the journalled trials the server says it lacks; returns how many. */
    resend(indices) {
      let n = 0;
      for (const index of indices) {
        const body = this.answer(index);
        if (body === null) continue;
        const queued = this.items.some(
          (it) => it.path === "/api/trials" && it.body.trial_index === body.trial_index
        );
        if (!queued) this.items.push({ path: "/api/trials", body: body });
        n += 1;
      }
      this.save();
      this.changed();
      this.kick();
      return n;
    }

    /** Resolves once every item has been delivered (or dropped). */
    whenEmpty() {
      if (this.items.length === 0 && !this.running) return Promise.resolve();
      this.kick();
      return new Promise((resolve) => this.waiters.push(resolve));
    }

    clear() {
      this.items = [];
      this.journal = {};
      store.remove(this.key);
      store.remove(this.journalKey);
    }

    async kick() {
      if (this.running) return;
      this.running = true;
      try {
        while (this.items.length > 0) {
          if (!navigator.onLine) {
            this.changed();
            await pause(5000);
            continue;
          }
          const item = this.items[0];
          let outcome;
          try {
            const res = await request(this.token, "POST", item.path, item.body);
            if (res.status >= 200 && res.status < 300) outcome = "done";
            else if (retryable(res.status)) outcome = "retry";
            else outcome = this.drop(item, res);
          } catch (e) {
            outcome = "retry";
          }
          if (outcome === "retry") {
            this.tries += 1;
            this.changed();
            await pause(backoff(this.tries));
            continue;
          }
          this.tries = 0;
          this.items.shift();
          this.save();
          this.changed();
        }
      } finally {
        this.running = false;
        this.changed();
        const waiters = this.waiters;
        this.waiters = [];
        waiters.forEach((resolve) => resolve());
      }
    }

    /** A refused item (409 conflict, 400 ...): reported and dropped, never retried. */
    drop(item, res) {
      const why = (res.data && res.data.error) || "HTTP " + res.status;
      console.error("Assay: the server refused " + item.path + " (" + res.status + "): " + why);
      if (item.path === "/api/trials" && res.status !== 409) {
        // Not stored at all: forget it, so a reload asks this trial again.
        delete this.journal[String(item.body.trial_index)];
      }
      return "drop";
    }
  }

  // --- network status indicator --------------------------------------------------------------

  function statusIndicator(element) {
    return (outbox) => {
      if (!element) return;
      let text = "";
      const n = outbox.size;
      if (!navigator.onLine) {
        text = "Offline: " + n + " answer" + (n === 1 ? "" : "s") + " waiting to be sent";
      } else if (n > 0 && outbox.retrying) {
        text = "Connection problem: retrying (" + n + " waiting)";
      }
      element.textContent = text;
      element.hidden = text === "";
      element.dataset.pending = String(n);
      element.dataset.state = !navigator.onLine ? "offline" : n > 0 ? "saving" : "idle";
    };
  }

  return Object.freeze({
    Outbox: Outbox,
    statusIndicator: statusIndicator,
    requestUntilAnswered: requestUntilAnswered,
  });
})();
