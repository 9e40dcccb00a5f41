/**
 * The dashboard's live progress plots: for each study, cumulative arrivals, completions
 * and screen-outs per condition over time (Chart.js, served locally from node_modules,
 * which needs no eval under the Content-Security-Policy), refreshed every 30 s.
 */
(function () {
  "use strict";
  const SERIES = [
    ["arrivals", "arrived", []],
    ["completed", "completed", [6, 3]],
    ["screened_out", "screened out", [2, 2]],
  ];
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
  const REFRESH_MS = 30000;

  function datasets(data) {
    const out = [];
    Object.keys(data.conditions).forEach((condition, i) => {
      SERIES.forEach(([key, label, dash]) => {
        const points = data.conditions[condition][key].map(([x, y]) => ({ x: x, y: y }));
        if (points.length === 0) return;
        out.push({
          label: condition + " " + label,
          data: points,
          stepped: true,
          borderColor: COLORS[i % COLORS.length],
          backgroundColor: COLORS[i % COLORS.length],
          borderDash: dash,
          pointRadius: 2,
        });
      });
    });
    return out;
  }

  function summary(data) {
    const s = data.sessions;
    const parts = [
      "live " + (s.live || 0) + ", pilot " + (s.pilot || 0) + ", preview " + (s.preview || 0),
    ];
    if (data.median_minutes !== null) {
      parts.push("median duration " + data.median_minutes.toFixed(1) + " min");
    }
    const acc = Object.entries(data.accuracy).map(([c, a]) => c + " " + (100 * a).toFixed(0) + "%");
    if (acc.length) parts.push("accuracy so far: " + acc.join(", "));
    return parts.join(" · ");
  }

  async function draw(box) {
    const note = box.querySelector(".progress-note");
    let data;
    try {
      const res = await fetch(box.dataset.url, { headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error("HTTP " + res.status);
      data = await res.json();
    } catch (err) {
      note.textContent = "Progress unavailable (" + err.message + ").";
      return;
    }
    const canvas = box.querySelector("canvas");
    const old = window.Chart.getChart(canvas);
    if (old) old.destroy();
    new window.Chart(canvas, {
      type: "line",
      data: { datasets: datasets(data) },
      options: {
        animation: false,
        scales: {
          x: { type: "linear", title: { display: true, text: "minutes since launch" } },
          y: { beginAtZero: true, title: { display: true, text: "participants" } },
        },
      },
    });
    note.textContent = summary(data);
    box.dataset.drawn = "1";
  }

  document.querySelectorAll(".progress[data-url]").forEach((box) => {
    draw(box);
    window.setInterval(() => draw(box), REFRESH_MS);
  });
})();
