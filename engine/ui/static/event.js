"use strict";
// Event inspector: facts, the whole snapshot as a tree, HTTP exchange, copy as JSON.
(function () {
  const { $, el, api, status, onReady, outcome, duration, time, money, link, enc, tree } = window.LF;
  const eventId = document.getElementById("main").dataset.eventId;
  let snapshot = null;

  function facts(e) {
    const rows = [
      ["Type", e.type], ["Outcome", outcome(e.outcome)], ["Reason", e.reason],
      ["Step", (e.step_name || "") + " (" + e.step_id + ")"], ["Time", time(e.timestamp)],
      ["Duration", duration(e.ms)], ["Waiting on others", duration(e.wait_ms)],
      ["Since submission", duration(e.total_ms)], ["Attempt", e.attempt],
      ["Cost", money(e.cost)], ["Revenue", money(e.revenue)], ["Flow", e.flow_id + " v" + e.flow_version],
    ];
    $("facts").classList.toggle("bad", e.outcome !== "success");
    $("facts").replaceChildren(el("dl", { class: "facts" },
      rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "" : v)])));
  }

  function exchange(label, value) {
    if (!value) return null;
    const body = typeof value.body === "string" ? value.body : JSON.stringify(value.body);
    let pretty = body;
    try { pretty = JSON.stringify(JSON.parse(body), null, 2); } catch (e) { /* not JSON: as sent */ }
    return el("div", { class: "exchange" }, el("h3", {}, label),
      tree(Object.assign({}, value, { body: undefined }), label.toLowerCase(), true),
      body ? el("pre", { class: "body", tabindex: "0", "aria-label": label + " body" }, pretty) : null);
  }

  async function copy() {
    const text = JSON.stringify(snapshot, null, 2);
    try { await navigator.clipboard.writeText(text); status("Copied the snapshot as JSON"); }
    catch (e) {
      const area = el("textarea", { class: "copy-area", "aria-label": "Snapshot JSON" });
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
      status("Copied the snapshot as JSON");
    }
  }

  function setAll(open) { for (const d of $("tree").querySelectorAll("details")) d.open = open; }

  onReady(async () => {
    const answer = await api("/events/" + enc(eventId));
    const e = answer.event;
    snapshot = e;
    facts(e);
    $("event-nav").replaceChildren(
      link("/ui/leads/" + enc(e.lead_id), "← Lead timeline"),
      answer.previous_id ? link("/ui/leads/" + enc(e.lead_id) + "/diff?from=" + enc(answer.previous_id) + "&to=" + enc(e.id), "What changed since the previous event") : "",
    );
    const top = Object.assign({}, e);
    $("tree").replaceChildren(tree(top, "event", true));
    for (const d of $("tree").querySelectorAll("details details")) {
      const key = d.querySelector("summary .key").textContent;
      d.open = key === "vars" || key === "appended";
    }
    const parts = [exchange("Request", e.request), exchange("Response", e.response)].filter(Boolean);
    $("http-body").replaceChildren(...(parts.length ? parts : [el("p", {}, "This step made no HTTP call.")]));
    $("copy").addEventListener("click", () => copy());
    $("expand").addEventListener("click", () => setAll(true));
    $("collapse").addEventListener("click", () => setAll(false));
    const objects = await api("/events/" + enc(eventId) + "/objects").catch((x) => ({ error: x.message }));
    renderObjects(objects);
  });

  function renderObjects(answer) {
    if (answer.error) { $("objects").replaceChildren(el("p", { class: "error" }, answer.error)); return; }
    if (!answer.objects.length) { $("objects").replaceChildren(el("p", {}, answer.note || "No destination of this flow keeps one object per event.")); return; }
    $("objects").replaceChildren(el("ul", {}, answer.objects.map((o) => el("li", {},
      el("code", {}, o.uri), " ", o.present ? el("span", { class: "outcome success" }, "✓ stored") : el("span", { class: "outcome failure" }, "✕ not (yet) stored"),
      o.url ? [" ", el("a", { href: o.url, rel: "noreferrer", target: "_blank" }, "open in the store")] : ""))));
  }
})();
