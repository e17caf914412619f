/* pivad report helpers shared by the detection and evaluation pages (needs uPlot). */
var PV = (function () {
  "use strict";

  function data() {
    return JSON.parse(document.getElementById("pivad-data").textContent);
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function ([k, v]) {
      if (v === undefined || v === null) return;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function num(v, digits) {
    return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits === undefined ? 3 : digits);
  }

  function pct(v) {
    return v === null || v === undefined ? "–" : (100 * v).toFixed(2);
  }

  /* Shaded x-ranges drawn under the series: cfg.bands = [[x0, x1], ...]. */
  function drawBands(u, cfg) {
    if (!cfg.bands || !cfg.bands.length) return;
    const ctx = u.ctx, b = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(b.left, b.top, b.width, b.height);
    ctx.clip();
    ctx.fillStyle = cfg.bandColor || "rgba(214, 39, 40, 0.16)";
    cfg.bands.forEach(function ([x0, x1]) {
      const p0 = u.valToPos(x0, "x", true), p1 = u.valToPos(x1, "x", true);
      ctx.fillRect(p0, b.top, Math.max(1, p1 - p0), b.height);
    });
    ctx.restore();
  }

  /* Stepped series end at their last point; carry the last step on to the end of the x range. */
  function drawLastSteps(u, cfg) {
    const xs = u.data[0], n = xs.length, xMax = u.scales.x.max;
    if (!n || !(xMax > xs[n - 1])) return;
    const ctx = u.ctx;
    ctx.save();
    cfg.series.forEach(function (s, i) {
      const y = u.data[i + 1][n - 1];
      if (!s.stepped || !u.series[i + 1].show || y === null || y === undefined) return;
      ctx.strokeStyle = s.stroke;
      ctx.lineWidth = (s.width || 1.5) * uPlot.pxRatio;
      const py = Math.round(u.valToPos(y, "y", true));
      ctx.beginPath();
      ctx.moveTo(u.valToPos(xs[n - 1], "x", true), py);
      ctx.lineTo(u.valToPos(xMax, "x", true), py);
      ctx.stroke();
    });
    ctx.restore();
  }

  function drawThreshold(u, cfg) {
    if (cfg.threshold === null || cfg.threshold === undefined) return;
    const ctx = u.ctx, b = u.bbox, y = Math.round(u.valToPos(cfg.threshold, "y", true)) + 0.5;
    ctx.save();
    ctx.strokeStyle = "#d62728";
    ctx.lineWidth = 1.5 * uPlot.pxRatio;
    ctx.setLineDash([6 * uPlot.pxRatio, 4 * uPlot.pxRatio]);
    ctx.beginPath();
    ctx.moveTo(b.left, y);
    ctx.lineTo(b.left + b.width, y);
    ctx.stroke();
    ctx.restore();
  }

  /* A line chart. cfg: {xs, series: [{label, values, stroke, show, stepped, width, dash, fill, points}], xLabel,
     yLabel, xMax, yRange, threshold, bands, bandColor, height}. Returns the uPlot instance. */
  function chart(target, cfg) {
    const width = Math.max(320, target.clientWidth || 800);
    const series = [{ label: cfg.xLabel || "x", value: function (u, v) { return num(v, 2); } }];
    cfg.series.forEach(function (s) {
      series.push({
        label: s.label, stroke: s.stroke, width: s.width || 1.5, show: s.show !== false, dash: s.dash,
        fill: s.fill, spanGaps: s.spanGaps !== false, points: s.points ? {} : { show: false },
        paths: s.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
        value: function (u, v) { return num(v); },
      });
    });
    const opts = {
      width: width, height: cfg.height || 230,
      scales: {
        x: { time: false, range: function (u, lo, hi) {
          return [cfg.xMin === undefined ? Math.min(0, lo) : cfg.xMin, Math.max(cfg.xMax || 0, hi, 1e-9)]; } },
        y: { range: cfg.yRange ? function () { return cfg.yRange; }
                                : function (u, lo, hi) { return [Math.min(0, lo), Math.max(1, hi || 0)]; } },
      },
      cursor: { drag: { x: false, y: false } },
      series: series,
      axes: [{ label: cfg.xLabel }, { label: cfg.yLabel || "score" }],
      hooks: {
        drawClear: [function (u) { drawBands(u, cfg); }],
        draw: [function (u) { drawLastSteps(u, cfg); drawThreshold(u, cfg); }],
      },
    };
    const u = new uPlot(opts, [cfg.xs].concat(cfg.series.map(function (s) { return s.values; })), target);
    window.addEventListener("resize", function () {
      u.setSize({ width: Math.max(320, target.clientWidth || 800), height: cfg.height || 230 });
    });
    return u;
  }

  /* Rows of [label, value] as a two-column table. */
  function factsTable(table, rows) {
    table.textContent = "";
    rows.forEach(function ([k, v]) {
      table.appendChild(el("tr", {}, [el("td", { text: k }), el("td", { text: String(v) })]));
    });
  }

  const PALETTE = ["#1f77b4", "#d62728", "#7f7f7f", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22"];

  return { data: data, el: el, num: num, pct: pct, chart: chart, factsTable: factsTable, PALETTE: PALETTE };
})();
