/* The evaluation page: headline and class-wise tables, ROC/PR, a sortable browser of the test videos
   (each model's score curve against the ground truth), training curves. */
(function () {
  "use strict";
  const D = PV.data();
  const models = D.models;
  const SHORT = { urdmu: "UR-DMU", best: "π-VAD", last: "π-VAD last", model: "model" };
  const short = function (m) { return SHORT[m.key] || m.key; };

  /* headline */
  const head = document.getElementById("headline");
  head.appendChild(PV.el("thead", {}, [PV.el("tr", {}, ["model", "AUC", "AUC_A", "AP", "AP_A", "video AUC", "videos"]
    .map(function (h) { return PV.el("th", { text: h }); }))]));
  const hb = PV.el("tbody");
  models.forEach(function (m) {
    hb.appendChild(PV.el("tr", { "data-key": m.key }, [PV.el("td", { text: m.name })].concat(
      ["auc", "auc_a", "ap", "ap_a", "video_auc"].map(function (k) { return PV.el("td", { text: PV.pct(m[k]) }); }),
      [PV.el("td", { text: m.n_videos === null || m.n_videos === undefined ? "–" : String(m.n_videos) })])));
  });
  head.appendChild(hb);
  document.getElementById("note").textContent = D.note + (D.ap_form ? " · AP form: " + D.ap_form : "") +
    " · numbers from metrics.json, in %";

  /* class-wise */
  const classes = Array.from(new Set([].concat.apply([], models.map(function (m) { return Object.keys(m.classwise); })))).sort();
  const cw = document.getElementById("classwise");
  if (classes.length) {
    cw.appendChild(PV.el("thead", {}, [PV.el("tr", {}, [PV.el("th", { text: "model" })].concat(
      classes.map(function (c) { return PV.el("th", { text: c }); })))]));
    const cb = PV.el("tbody");
    models.forEach(function (m) {
      cb.appendChild(PV.el("tr", {}, [PV.el("td", { text: m.name })].concat(
        classes.map(function (c) { return PV.el("td", { text: PV.pct(m.classwise[c]) }); }))));
    });
    cw.appendChild(cb);
  } else {
    cw.replaceWith(PV.el("p", { class: "note", text: "no class-wise AUC (one class, or no abnormal classes)" }));
  }

  /* ROC and PR */
  const C = D.curves;
  function curveChart(id, field, xLabel, yLabel, chance) {
    const series = models.filter(function (m) { return C[field][m.key]; }).map(function (m) {
      return { label: short(m), values: C[field][m.key], stroke: m.colour, width: 2 };
    });
    if (chance) series.push({ label: "chance", values: C.grid, stroke: "#bbbbbb", width: 1, dash: [4, 4] });
    return PV.chart(document.getElementById(id), { xs: C.grid, series: series, xLabel: xLabel, yLabel: yLabel,
                                                     xMin: 0, xMax: 1, yRange: [0, 1], height: 280 });
  }
  const roc = curveChart("roc", "tpr", "false-positive rate", "true-positive rate", true);
  const pr = curveChart("pr", "precision", "recall", "precision", false);

  /* video browser */
  const table = document.getElementById("videos");
  const cols = [{ id: "name", label: "video", get: function (v) { return v.name; }, text: true },
                { id: "cls", label: "class", get: function (v) { return v.cls; }, text: true },
                { id: "T", label: "snippets", get: function (v) { return v.T; } }];
  models.forEach(function (m) {
    cols.push({ id: "auc:" + m.key, label: "AUC " + short(m), get: function (v) { return v.auc[m.key]; }, worst: "asc",
                fmt: function (x) { return PV.pct(x); } });
  });
  models.forEach(function (m) {
    cols.push({ id: "fa:" + m.key, label: "false alarm " + short(m), get: function (v) { return v.fa[m.key]; },
                worst: "desc", fmt: function (x) { return PV.num(x, 1); } });
  });
  const state = { col: "auc:" + D.main, dir: "asc", selected: null };
  const headRow = PV.el("tr");
  cols.forEach(function (c) {
    headRow.appendChild(PV.el("th", { class: "sortable", "data-sort": c.id, text: c.label, onclick: function () {
      if (state.col === c.id) state.dir = state.dir === "asc" ? "desc" : "asc";
      else { state.col = c.id; state.dir = c.text ? "asc" : (c.worst || "desc"); }
      render();
    } }));
  });
  table.tHead.appendChild(headRow);

  function order() {
    const col = cols.find(function (c) { return c.id === state.col; });
    const sign = state.dir === "asc" ? 1 : -1;
    return D.videos.map(function (v, i) { return i; }).sort(function (a, b) {
      const x = col.get(D.videos[a]), y = col.get(D.videos[b]);
      const nx = x === null || x === undefined, ny = y === null || y === undefined;
      if (nx || ny) return nx === ny ? a - b : (nx ? 1 : -1);  /* undefined values last, either way */
      if (x < y) return -sign;
      if (x > y) return sign;
      return a - b;
    });
  }

  function render() {
    Array.from(headRow.children).forEach(function (th) {
      th.classList.remove("sorted-asc", "sorted-desc");
      if (th.dataset.sort === state.col) th.classList.add("sorted-" + state.dir);
    });
    const body = table.tBodies[0];
    body.textContent = "";
    order().forEach(function (i) {
      const v = D.videos[i];
      body.appendChild(PV.el("tr", { class: "clickable" + (state.selected === i ? " active" : ""), "data-index": i,
                                     "data-name": v.name, onclick: function () { show(i); } },
        cols.map(function (c) { const x = c.get(v); return PV.el("td", { text: c.fmt ? c.fmt(x) : String(x) }); })));
    });
  }

  let videoChart = null;
  function show(i) {
    const v = D.videos[i];
    state.selected = i;
    Array.from(table.tBodies[0].rows).forEach(function (r) { r.classList.toggle("active", Number(r.dataset.index) === i); });
    document.getElementById("video-title").textContent = v.name;
    document.getElementById("video-facts").textContent = v.cls + " · " + (v.label ? "abnormal" : "normal") + " · " +
      v.T + " snippets (" + v.n_frames + " frames)" + (v.x.length < v.T ? " · drawn as " + v.x.length +
      " bucket maxima" : "") + " · " + models.map(function (m) {
        return short(m) + ": AUC " + PV.pct(v.auc[m.key]) + ", false alarm " + PV.num(v.fa[m.key], 1); }).join(" · ");
    if (videoChart) videoChart.destroy();
    const box = document.getElementById("video-chart");
    videoChart = PV.chart(box, {
      xs: v.x, xLabel: "frame", yLabel: "anomaly score", xMax: v.n_frames, bands: v.gt,
      bandColor: "rgba(44, 160, 44, 0.22)", height: 260,
      series: models.map(function (m) { return { label: short(m), values: v.curves[m.key], stroke: m.colour,
                                                 width: m.key === D.main ? 2 : 1.3, stepped: true }; }),
    });
    window.pivad.videoChart = videoChart;
    window.pivad.shown = v.name;
  }

  /* training */
  function trainingChart(id, part, yLabel) {
    const t = D.training && D.training[part];
    if (!t || !t.steps.length || !Object.keys(t.series).length) {
      document.getElementById(id).replaceWith(PV.el("p", { class: "note", text: "not logged" }));
      return null;
    }
    const names = Object.keys(t.series);
    return PV.chart(document.getElementById(id), { xs: t.steps, xLabel: "step", yLabel: yLabel, height: 220,
      xMin: t.steps[0], yRange: null,
      series: names.map(function (p, k) { return { label: p, values: t.series[p], stroke: PV.PALETTE[k % PV.PALETTE.length],
                                              points: true }; }) });
  }
  let loss = null, sel = null;
  if (D.training) {
    loss = trainingChart("train-loss", "loss", "loss");
    sel = trainingChart("train-selection", "selection", "selection score");
  } else {
    document.getElementById("training-section").replaceWith(PV.el("p", { class: "note",
      text: "no training log (log.jsonl) beside these results" }));
  }

  window.pivad = { roc: roc, pr: pr, loss: loss, selection: sel, videoChart: null, shown: null, show: show,
                   state: state, data: D };
  render();
  const firstRow = table.tBodies[0].rows[0];
  if (firstRow) show(Number(firstRow.dataset.index));
})();
