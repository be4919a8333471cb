"use strict";
// Find a lead: search by id/email/phone, or browse a flow's recent leads by one of their events.
(function () {
  const { $, el, api, status, onReady, outcome, time, link, enc, table, utcInput, fromInput } = window.LF;
  const url = new URL(location.href);
  let next = null;

  function who(row) {
    const name = [row.first_name, row.last_name].filter(Boolean).join(" ");
    return [name, row.email, row.phone].filter(Boolean).join(" · ");
  }

  async function search(event) {
    if (event) event.preventDefault();
    const q = $("q").value.trim();
    if (!q) return;
    status("Searching…");
    const answer = await api("/leads/search", null, { q: q, flow_id: $("flow").value || null });
    const rows = answer.leads;
    status(rows.length ? rows.length + " lead(s) found" :
      answer.kind === "unknown" ? "Enter a 26-character lead id, an email or a 10-digit phone" : "No lead found");
    $("search-results").replaceChildren(rows.length ? table([
      { label: "Lead", render: (r) => link("/ui/leads/" + enc(r.lead_id), r.lead_id) },
      { label: "Who", render: who },
      { label: "Flow", key: "flow_id" },
      { label: "Status", render: (r) => outcome(r.status) },
      { label: "Last event", key: "last_event_type" },
      { label: "Submitted", render: (r) => time(r.submitted_at) },
    ], rows) : "");
  }

  function browseRows(rows, append) {
    const t = table([
      { label: "Lead", render: (r) => link("/ui/leads/" + enc(r.lead_id), r.lead_id) },
      { label: "Who", render: who },
      { label: "Event", render: (r) => link("/ui/events/" + enc(r.event_id), r.type) },
      { label: "Outcome", render: (r) => outcome(r.outcome) },
      { label: "Reason", key: "reason" },
      { label: "At", render: (r) => time(r.timestamp) },
      { label: "Lead status", render: (r) => outcome(r.status) },
    ], rows.map((r) => Object.assign({ _class: r.outcome !== "success" ? "bad" : null }, r)));
    if (append) $("browse-results").append(t); else $("browse-results").replaceChildren(t);
  }

  async function browse(append) {
    const flow = $("flow").value;
    if (!flow) return;
    const params = {
      type: $("type").value, outcome: $("outcome").value,
      start: fromInput($("start")), end: fromInput($("end")), before_id: append ? next : null,
    };
    status("Loading leads…");
    const answer = await api("/flows/" + enc(flow) + "/leads", params);
    next = answer.next;
    $("more").hidden = !next;
    status(answer.rows.length ? "" : "No leads match");
    browseRows(answer.rows, append);
  }

  function remember() {
    const params = new URLSearchParams();
    for (const id of ["flow", "type", "outcome"]) if ($(id).value) params.set(id, $(id).value);
    if ($("start").value) params.set("start", fromInput($("start")));
    if ($("end").value) params.set("end", fromInput($("end")));
    history.replaceState(null, "", "/ui/?" + params);
    $("dashboard-link").href = "/ui/flows/" + enc($("flow").value);
  }

  onReady(async () => {
    $("search-form").addEventListener("submit", (e) => search(e).catch((x) => status(x.message, true)));
    $("browse-form").addEventListener("submit", (e) => {
      e.preventDefault(); remember(); browse(false).catch((x) => status(x.message, true));
    });
    $("more").addEventListener("click", () => browse(true).catch((x) => status(x.message, true)));
    const flows = await api("/flows");
    $("flow").replaceChildren(el("option", { value: "" }, "(any flow)"), ...flows.map((f) => el("option", { value: f }, f)));
    for (const id of ["flow", "type", "outcome"]) if (url.searchParams.get(id)) $(id).value = url.searchParams.get(id);
    utcInput($("start"), url.searchParams.get("start"));
    utcInput($("end"), url.searchParams.get("end"));
    $("dashboard-link").href = "/ui/flows/" + enc($("flow").value);
    if ($("flow").value) await browse(false);
  });
})();
