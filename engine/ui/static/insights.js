"use strict";
// The dashboard's analytics panels (seed 002), from /ui/api/flows/{id}/insights: the
// analytics projection's hourly and per-lead rows. Each panel is a chart and its table.
(function () {
  const { $, el, api, onReady, duration, money, time, enc, table, fromInput, hbars, hourColumns, timeColumns, focusable } = window.LF;
  const flowId = document.getElementById("main").dataset.flowId;
  const pc = (v) => (v === null || v === undefined ? "" : Number(v).toFixed(2) + "%");
  const countPct = (n, p) => n + " (" + pc(p) + ")";

  function steps(rows, hours) {
    const series = rows.map((s) => ({ label: s.step_id + ": p95 per hour", points: hours.filter((h) => h.step_id === s.step_id).map((h) => ({ at: h.hour, value: h.ms_p95, title: time(h.hour) + ": p95 " + duration(h.ms_p95) + " of " + h.count + " decisions" })) }));
    return [
      timeColumns(series, duration, "Duration p95 per step and hour"),
      hbars(rows.map((s) => ({ label: s.step_id, values: [{ name: "p50", value: s.ms_p50, cls: "p50" }, { name: "p95", value: s.ms_p95, cls: "p95" }] })), duration, "Duration p50 and p95 per step"),
      focusable(table([{ label: "Step", key: "step_id" }, { label: "Decisions", key: "count", num: true },
        { label: "Success", render: (s) => countPct(s.success, s.success_pct), num: true },
        { label: "Failure", render: (s) => countPct(s.failure, s.failure_pct), num: true },
        { label: "Error", render: (s) => countPct(s.error, s.error_pct), num: true },
        { label: "Mean", render: (s) => duration(s.ms_mean), num: true }, { label: "p50", render: (s) => duration(s.ms_p50), num: true },
        { label: "p95", render: (s) => duration(s.ms_p95), num: true }, { label: "Max", render: (s) => duration(s.ms_max), num: true }], rows), "Step performance table"),
    ];
  }

  function rejections(rows) {
    return [
      hbars(rows.map((r) => ({ label: (r.source_id || "no source") + ": " + r.reason + " (" + r.step_id + ")", values: [{ value: r.pct, cls: "failure" }] })), pc, "Rejection reasons by source, as a percentage of all"),
      focusable(table([{ label: "Source", key: "source_id" }, { label: "Step", key: "step_id" }, { label: "Reason", key: "reason" },
        { label: "Count", key: "count", num: true }, { label: "Of all", render: (r) => pc(r.pct), num: true },
        { label: "Of the source's", render: (r) => pc(r.pct_of_source), num: true }], rows), "Rejections by source table"),
    ];
  }

  function enhancements(rows) {
    return [
      hbars(rows.map((e) => ({ label: e.step_id, values: [{ name: "with", value: e.delivery_pct_with, cls: "success" }, { name: "without", value: e.delivery_pct_without, cls: "failure" }] })), pc, "Delivery rate of leads with and without each enhancement"),
      focusable(table([{ label: "Enhancement", key: "step_id" },
        { label: "With: leads", key: "leads_with", num: true }, { label: "delivered", render: (e) => countPct(e.delivered_with, e.delivery_pct_with), num: true },
        { label: "Without: leads", key: "leads_without", num: true }, { label: "delivered", render: (e) => countPct(e.delivered_without, e.delivery_pct_without), num: true },
        { label: "Cost", render: (e) => money(e.cost), num: true }, { label: "Revenue/lead with", render: (e) => money(e.revenue_per_lead_with), num: true },
        { label: "without", render: (e) => money(e.revenue_per_lead_without), num: true }, { label: "Difference", render: (e) => money(e.revenue_difference), num: true }], rows), "Enhancement value table"),
    ];
  }

  function sources(rows) {
    return [
      hbars(rows.map((s) => ({ label: s.source_id || "no source", values: [{ name: "revenue", value: s.revenue, cls: "success" }, { name: "cost", value: s.cost, cls: "failure" }, { name: "profit", value: s.profit, cls: "p95" }] })), money, "Revenue, cost and profit per source"),
      focusable(table([{ label: "Source", key: "source_id" }, { label: "Submitted", key: "submitted", num: true },
        { label: "Accepted", render: (s) => countPct(s.accepted, s.acceptance_pct), num: true }, { label: "Enhancement cost", render: (s) => money(s.enhancement_cost), num: true },
        { label: "Delivered", render: (s) => countPct(s.delivered, s.delivery_pct), num: true }, { label: "Cost", render: (s) => money(s.cost), num: true },
        { label: "Revenue", render: (s) => money(s.revenue), num: true }, { label: "Profit", render: (s) => money(s.profit), num: true }], rows), "Source performance table"),
    ];
  }

  function buyers(rows, hours) {
    const series = rows.map((b) => ({ label: b.step_id, points: hours.filter((h) => h.step_id === b.step_id).map((h) => ({ hour: h.hour_of_day, value: h.acceptance_pct, title: h.hour_of_day + ":00 UTC: " + h.accepted + " of " + h.offered + " accepted" })) }));
    return [
      hourColumns(series, "Acceptance rate by hour of day (UTC) per buyer"),
      focusable(table([{ label: "Buyer", key: "step_id" }, { label: "Offered", key: "offered", num: true },
        { label: "Accepted", render: (b) => countPct(b.accepted, b.acceptance_pct), num: true }, { label: "Failed", render: (b) => countPct(b.failed, b.failed_pct), num: true },
        { label: "Errors", render: (b) => countPct(b.errors, b.error_pct), num: true }, { label: "Response mean", render: (b) => duration(b.response_ms_mean), num: true },
        { label: "p95", render: (b) => duration(b.response_ms_p95), num: true }, { label: "Revenue/lead", render: (b) => money(b.revenue_per_lead), num: true },
        { label: "Returns", render: (b) => countPct(b.returned, b.returns_pct), num: true }, { label: "Conversions", render: (b) => countPct(b.converted, b.conversions_pct), num: true },
        { label: "Days to convert", key: "days_to_convert", num: true }], rows), "Buyer behaviour table"),
    ];
  }

  async function load() {
    const d = await api("/flows/" + enc(flowId) + "/insights", { start: fromInput($("start")), end: fromInput($("end")) });
    $("in-steps").replaceChildren(...steps(d.steps, d.step_hours));
    $("in-rejections").replaceChildren(...rejections(d.rejections));
    $("in-enhancements").replaceChildren(...enhancements(d.enhancements));
    $("in-sources").replaceChildren(...sources(d.sources));
    $("in-buyers").replaceChildren(...buyers(d.buyers, d.buyer_hours));
  }

  function failed(x) {
    for (const id of ["in-steps", "in-rejections", "in-enhancements", "in-sources", "in-buyers"]) $(id).replaceChildren(el("p", { class: "error" }, x.message));
  }

  onReady(async () => {
    $("range").addEventListener("submit", () => { load().catch(failed); });
    await load().catch(failed);
  });
})();
