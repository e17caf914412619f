/* The detection page: video, score timeline (threshold, intervals shaded, playhead), interval list, keys.
   With D.live the page has no video and polls data.json (served by `pivad detect --stream --html`). */
(function () {
  "use strict";
  let D = PV.data();
  const video = document.getElementById("video");
  const plotBox = document.getElementById("timeline");
  const snippetSeconds = function () { return D.snippet / D.fps; };

  function bands() {
    return D.intervals.map(function (iv) { return [iv.start_time, iv.end_time]; });
  }

  const cfg = {
    xs: D.times, xLabel: "time (s)", yLabel: "anomaly score", xMax: D.duration, threshold: D.threshold,
    bands: bands(), height: 240,
    series: [{ label: "score", values: D.scores, stroke: "#1f77b4", width: 2, stepped: true,
               fill: "rgba(31, 119, 180, 0.08)" }],
  };
  Object.entries(D.activations || {}).forEach(function ([name, values], i) {
    cfg.series.push({ label: name + " (late PI)", values: values, stroke: PV.PALETTE[(i + 3) % PV.PALETTE.length],
                      width: 1, stepped: true, show: false });
  });
  const plot = PV.chart(plotBox, cfg);

  /* playhead: a line over the plot at the video's current time */
  const playhead = PV.el("div", { class: "playhead", id: "playhead" });
  plot.over.appendChild(playhead);
  function placePlayhead() {
    const t = video ? video.currentTime : 0;
    playhead.style.left = plot.valToPos(t, "x") + "px";
    playhead.dataset.time = t.toFixed(4);
  }
  let ticking = false;
  function tick() {
    placePlayhead();
    if (video && !video.paused && !video.ended) requestAnimationFrame(tick); else ticking = false;
  }
  if (video) {
    ["timeupdate", "seeked", "loadedmetadata"].forEach(function (e) { video.addEventListener(e, placePlayhead); });
    video.addEventListener("play", function () { if (!ticking) { ticking = true; requestAnimationFrame(tick); } });
    plot.over.addEventListener("click", function (e) {
      seek(plot.posToVal(e.offsetX, "x"));
    });
    plot.over.style.cursor = "pointer";
  } else {
    playhead.style.display = "none";
  }
  placePlayhead();

  function seek(t) {
    if (!video) return;
    const end = Number.isFinite(video.duration) ? video.duration : D.duration;
    video.currentTime = Math.max(0, Math.min(t, end));
    placePlayhead();
  }

  /* interval list */
  const table = document.getElementById("intervals");
  function fillIntervals() {
    const body = table.tBodies[0];
    body.textContent = "";
    D.intervals.forEach(function (iv, i) {
      const row = PV.el("tr", { class: "clickable", "data-index": i, onclick: function () { seek(iv.start_time); } }, [
        PV.el("td", { text: String(i + 1) }),
        PV.el("td", { text: PV.num(iv.start_time, 2) + " s (f" + iv.start + ")" }),
        PV.el("td", { text: PV.num(iv.end_time, 2) + " s (f" + iv.end + ")" }),
        PV.el("td", { text: PV.num(iv.peak_score, 3) }),
      ]);
      body.appendChild(row);
    });
    document.getElementById("no-intervals").style.display = D.intervals.length ? "none" : "";
  }
  fillIntervals();
  PV.factsTable(document.getElementById("facts"), D.facts);

  /* keyboard: space play/pause, left/right one snippet, n/p next/previous interval */
  window.addEventListener("keydown", function (e) {
    if (!video || e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    const t = video.currentTime, eps = 1e-3;
    let handled = true;
    if (e.key === " ") { if (video.paused) video.play(); else video.pause(); }
    else if (e.key === "ArrowRight") seek(t + snippetSeconds());
    else if (e.key === "ArrowLeft") seek(t - snippetSeconds());
    else if (e.key === "n") {
      const next = D.intervals.find(function (iv) { return iv.start_time > t + eps; });
      if (next) seek(next.start_time);
    } else if (e.key === "p") {
      const prev = D.intervals.filter(function (iv) { return iv.start_time < t - eps; }).pop();
      if (prev) seek(prev.start_time);
    } else handled = false;
    if (handled) { e.preventDefault(); e.stopPropagation(); }
  }, true);

  /* live mode: poll data.json until the stream is done */
  const status = document.getElementById("live-status");
  function refresh(next) {
    D = next;
    cfg.bands = bands();
    cfg.xMax = D.duration;
    cfg.threshold = D.threshold;
    plot.setData([D.times, D.scores]);
    fillIntervals();
    PV.factsTable(document.getElementById("facts"), D.facts);
    if (status) {
      status.textContent = D.done ? "stream ended" : "live: " + D.scores.length + " snippets";
      status.className = "live-status" + (D.done ? "" : " running");
    }
  }
  function poll() {
    fetch("data.json", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (next) {
      refresh(next);
      if (!next.done) setTimeout(poll, D.poll_ms || 1000);
    }).catch(function () { if (status) status.textContent = "server gone (stream ended)"; });
  }
  if (D.live) poll();

  window.pivad = { plot: plot, video: video, data: function () { return D; }, seek: seek };
})();
