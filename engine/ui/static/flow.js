"use strict";
// Flow dashboard: outcomes over time as a stacked SVG bar chart, reasons and steps as bars,
// sources and recipients as tables. SVG is built with createElementNS and textContent.
(function () {
  const { $, el, api, status, onReady, duration, money, pct, time, enc, table, utcInput, fromInput, svg, hbars, focusable } = window.LF;
  const flowId = document.getElementById("main").dataset.flowId;
  const url = new URL(location.href);
  const OUTCOMES = ["success", "failure", "error"];

  function outcomeChart(rows) {
    const buckets = [...new Set(rows.map((r) => r.bucket))].sort();
    if (!buckets.length) return el("p", { class: "hint" }, "No completed leads in this range.");
    const by = {};
    for (const r of rows) (by[r.bucket] = by[r.bucket] || {})[r.outcome] = r.count;
    const max = Math.max(...buckets.map((b) => OUTCOMES.reduce((s, o) => s + ((by[b] || {})[o] || 0), 0)));
    const W = 900, H = 240, L = 48, B = 28, bw = Math.min(48, Math.max(2, (W - L) / buckets.length - 2));
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + (H + B), class: "chart", role: "img", "aria-labelledby": "oc-desc" });
    chart.append(svg("desc", { id: "oc-desc" }, "Completed leads per bucket by outcome; up to " + max + " per bucket."));
    for (const f of [0, 0.5, 1]) {
      const y = H - f * H;
      chart.append(svg("line", { x1: L, x2: W, y1: y, y2: y, class: "grid" }));
      chart.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end", class: "axis" }, String(Math.round(f * max))));
    }
    buckets.forEach((b, i) => {
      let y = H;
      const x = L + i * ((W - L) / buckets.length) + 1;
      for (const o of OUTCOMES) {
        const n = (by[b] || {})[o] || 0;
        if (!n) continue;
        const h = (n / max) * H;
        y -= h;
        const bar = svg("rect", { x: x, y: y, width: bw, height: h, class: "bar " + o });
        bar.append(svg("title", {}, time(b) + ": " + n + " " + o));
        chart.append(bar);
      }
    });
    chart.append(svg("text", { x: L, y: H + 20, class: "axis" }, time(buckets[0])));
    chart.append(svg("text", { x: W, y: H + 20, "text-anchor": "end", class: "axis" }, time(buckets[buckets.length - 1])));
    const legend = el("ul", { class: "legend" }, OUTCOMES.map((o) =>
      el("li", {}, el("span", { class: "swatch " + o, "aria-hidden": "true" }), o + " (" + rows.filter((r) => r.outcome === o).reduce((s, r) => s + r.count, 0) + ")")));
    const data = table([{ label: "Bucket", render: (r) => time(r.bucket) }, { label: "Outcome", key: "outcome" }, { label: "Leads", key: "count", num: true }], rows);
    return el("div", {}, chart, legend, el("details", {}, el("summary", {}, "As a table"), data));
  }

  async function load() {
    const d = await api("/flows/" + enc(flowId) + "/dashboard", { start: fromInput($("start")), end: fromInput($("end")) });
    utcInput($("start"), d.start);
    utcInput($("end"), d.end);
    status(time(d.start) + " to " + time(d.end) + ", per " + d.interval + (d.days.count ? "; " + d.days.count + " whole UTC days from the daily totals" : ""));
    $("outcomes").replaceChildren(outcomeChart(d.outcomes));
    $("reasons").replaceChildren(hbars(d.reasons.map((r) => ({ label: r.reason + " (" + r.step_id + ")", values: [{ value: r.count, cls: "failure" }] })), (v) => v + " leads"),
      d.reasons.length ? table([{ label: "Reason", key: "reason" }, { label: "Step", key: "step_id" }, { label: "Leads", key: "count", num: true }, { label: "Share", render: (r) => pct(r.share), num: true }], d.reasons) : "");
    $("steps").replaceChildren(hbars(d.steps.map((s) => ({ label: s.step_name || s.step_id, values: [{ name: "p50", value: s.ms_p50, cls: "p50" }, { name: "p95", value: s.ms_p95, cls: "p95" }] })), duration),
      focusable(table([{ label: "Step", render: (s) => s.step_name || s.step_id }, { label: "Count", key: "count", num: true }, { label: "Success", render: (s) => pct(s.success_rate), num: true }, { label: "Failure", render: (s) => pct(s.failure_rate), num: true }, { label: "Error", render: (s) => pct(s.error_rate), num: true }, { label: "Mean", render: (s) => duration(s.ms_mean), num: true }, { label: "p50", render: (s) => duration(s.ms_p50), num: true }, { label: "p95", render: (s) => duration(s.ms_p95), num: true }, { label: "Sampled", key: "sampled", num: true }], d.steps), "Step durations table"),
      el("p", { class: "hint" }, "Counts and mean: every decision in the range. p50/p95: the latest " + d.duration_sample.rows + " decisions (at most " + d.duration_sample.limit + ")."));
    $("sources").replaceChildren(table([{ label: "Source", render: (s) => s.source_name || s.source_id }, { label: "Submitted", key: "submitted", num: true }, { label: "Accepted", render: (s) => pct(s.acceptance_rate), num: true }, { label: "Delivered", key: "delivered", num: true }, { label: "Cost", render: (s) => money(s.cost), num: true }, { label: "Revenue", render: (s) => money(s.revenue), num: true }, { label: "Profit", render: (s) => money(s.profit), num: true }], d.sources));
    $("recipients").replaceChildren(table([{ label: "Recipient", render: (r) => r.step_name || r.step_id }, { label: "Leads", key: "leads", num: true }, { label: "Accepted", render: (r) => pct(r.acceptance_rate), num: true }, { label: "Failed", key: "failed", num: true }, { label: "Errors", key: "errors", num: true }, { label: "Response p50", render: (r) => duration(r.response_ms_p50), num: true }, { label: "p95", render: (r) => duration(r.response_ms_p95), num: true }, { label: "Returned", key: "returned", num: true }, { label: "Revenue", render: (r) => money(r.revenue), num: true }], d.recipients));
  }

  // Live, from the calling workers' metrics (leadflow calls status): not the range above.
  async function loadCalls() {
    const c = await api("/calls");
    if (!c.configured) {
      $("calls").replaceChildren(el("p", { class: "hint" }, "No workers' metrics to read: run the workers with LEADFLOW_METRICS_PORT (or set LEADFLOW_CALLS_METRICS_URLS) for the server."));
      return;
    }
    const rows = [];
    for (const s of c.sources) {
      if (s.error) rows.push({ destination: s.url, breaker: [s.error], _class: "error" });
      for (const d of s.destinations) rows.push(Object.assign({}, d, d.breaker.includes("open") ? { _class: "error" } : {}));
    }
    if (!rows.length) {
      $("calls").replaceChildren(el("p", { class: "hint" }, "No calls made by the running workers yet."));
      return;
    }
    $("calls").replaceChildren(focusable(table([{ label: "Destination", key: "destination" }, { label: "Breaker", render: (r) => r.breaker.join(" + ").replace("_", "-") || "-" }, { label: "In flight", key: "in_flight", num: true }, { label: "Answered", key: "answered", num: true }, { label: "Failed", key: "failed", num: true }, { label: "Refused", key: "refused", num: true }, { label: "p50", render: (r) => duration(r.p50_ms), num: true }, { label: "p95", render: (r) => duration(r.p95_ms), num: true }], rows), "Buyers and services table"),
      el("p", { class: "hint" }, "Breaker: open means calls fail at once until a probe succeeds; the counts are since the workers started."));
  }

  onReady(async () => {
    utcInput($("start"), url.searchParams.get("start"));
    utcInput($("end"), url.searchParams.get("end"));
    $("range").addEventListener("submit", (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      if ($("start").value) p.set("start", fromInput($("start")));
      if ($("end").value) p.set("end", fromInput($("end")));
      history.replaceState(null, "", location.pathname + "?" + p);
      load().catch((x) => status(x.message, true));
    });
    await load();
    await loadCalls().catch((x) => $("calls").replaceChildren(el("p", { class: "hint" }, x.message)));
  });
})();
