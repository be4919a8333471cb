"use strict";
// Lead timeline: the lead's events in time order, paged; pick two to compare.
(function () {
  const { $, el, api, status, onReady, outcome, duration, time, money, link, enc, table } = window.LF;
  const leadId = document.getElementById("main").dataset.leadId;
  const picked = [];
  let next = null;
  let count = 0;

  function summary(lead) {
    const name = [lead.first_name, lead.last_name].filter(Boolean).join(" ");
    const facts = [
      ["Name", name], ["Email", lead.email], ["Phone", lead.phone],
      ["Flow", link("/ui/flows/" + enc(lead.flow_id), lead.flow_id)],
      ["Status", outcome(lead.status)], ["Last event", lead.last_event_type],
      ["Completed", lead.completed ? "yes" : "no"],
      ["Submitted", time(lead.submitted_at)], ["Updated", time(lead.updated_at)],
      ["Cost", money(lead.cost)], ["Revenue", money(lead.revenue)],
    ];
    $("summary").replaceChildren(el("dl", { class: "facts" },
      facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "" : v)])));
  }

  function updateDiffLink() {
    const a = $("diff-link");
    if (picked.length === 2) {
      const [from, to] = picked.slice().sort((x, y) => x.index - y.index);
      a.href = "/ui/leads/" + enc(leadId) + "/diff?from=" + enc(from.id) + "&to=" + enc(to.id);
      a.setAttribute("aria-disabled", "false");
      a.textContent = "Compare #" + from.index + " → #" + to.index;
    } else {
      a.href = "#";
      a.setAttribute("aria-disabled", "true");
      a.textContent = "Compare selected (pick two)";
    }
  }

  function pick(row, box) {
    if (box.checked) {
      picked.push(row);
      if (picked.length > 2) {
        const dropped = picked.shift();
        const other = document.getElementById("pick-" + dropped.index);
        if (other) other.checked = false;
      }
    } else {
      const i = picked.findIndex((p) => p.id === row.id);
      if (i >= 0) picked.splice(i, 1);
    }
    updateDiffLink();
  }

  function render(events) {
    const rows = events.map((e) => Object.assign({}, e, {
      index: ++count,
      _class: e.outcome === "error" ? "err" : e.outcome === "failure" ? "bad" : null,
    }));
    const t = table([
      { label: "Pick", render: (r) => {
          const box = el("input", { type: "checkbox", id: "pick-" + r.index, "aria-label": "Select event " + r.index + " to compare" });
          box.addEventListener("change", () => pick(r, box));
          return box;
        } },
      { label: "#", key: "index", num: true },
      { label: "Time", render: (r) => time(r.timestamp) },
      { label: "Gap", render: (r) => (r.gap_ms === null ? "" : "+" + duration(r.gap_ms)), num: true },
      { label: "Type", render: (r) => link("/ui/events/" + enc(r.id), r.type) },
      { label: "Outcome", render: (r) => outcome(r.outcome) },
      { label: "Reason", render: (r) => el("span", { class: "reason" }, r.reason || "") },
      { label: "Step", render: (r) => r.step_name || r.step_id },
      { label: "Duration", render: (r) => duration(r.ms), num: true },
      { label: "Attempt", render: (r) => (r.attempt && r.attempt > 1 ? "retry " + r.attempt : ""), num: true },
      { label: "Changes", render: (r) => (r.index > 1 ? link("/ui/leads/" + enc(leadId) + "/diff?to=" + enc(r.id), "vs previous") : "") },
    ], rows);
    $("timeline").append(t);
  }

  async function load() {
    const answer = await api("/leads/" + enc(leadId), { after_id: next });
    if (!next) summary(answer.lead);
    render(answer.events);
    next = answer.next;
    $("more").hidden = !next;
    const bad = $("timeline").querySelectorAll("tr.bad, tr.err").length;
    status(count + " events" + (bad ? ", " + bad + " failed or error" : "") + (next ? " (more below)" : ""));
  }

  onReady(async () => {
    updateDiffLink();
    $("more").addEventListener("click", () => load().catch((x) => status(x.message, true)));
    await load();
  });
})();
