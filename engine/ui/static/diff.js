"use strict";
// Snapshot diff between two events of a lead (default: an event and the one before it).
(function () {
  const { $, el, api, status, onReady, time, enc, table } = window.LF;
  const leadId = document.getElementById("main").dataset.leadId;
  const url = new URL(location.href);

  const show = (v) => (v === undefined ? "" : JSON.stringify(v));

  function section(title, rows, columns, cls) {
    return el("section", { class: "changes " + cls, "aria-label": title },
      el("h2", {}, title + " (" + rows.length + ")"),
      rows.length ? table(columns, rows) : el("p", { class: "hint" }, "none"));
  }

  function render(d) {
    const entries = (o) => Object.entries(o || {}).map(([k, v]) => ({ field: k, value: v }));
    const changes = (o) => Object.entries(o || {}).map(([k, v]) => ({ field: k, before: v.before, after: v.after }));
    const field = { label: "Field", render: (r) => el("code", {}, r.field) };
    $("diff").replaceChildren(
      el("p", {}, "From ", el("strong", {}, d.from.type), " (" + time(d.from.timestamp) + ") to ",
        el("strong", {}, d.to.type), " (" + time(d.to.timestamp) + ")"),
      section("Event fields changed", changes(d.event_fields), [field,
        { label: "Before", render: (r) => el("span", { class: "del" }, show(r.before)) },
        { label: "After", render: (r) => el("span", { class: "ins" }, show(r.after)) }], "changed"),
      section("Added", entries(d.added), [field, { label: "Value", render: (r) => el("span", { class: "ins" }, "+ " + show(r.value)) }], "added"),
      section("Removed", entries(d.removed), [field, { label: "Value", render: (r) => el("span", { class: "del" }, "− " + show(r.value)) }], "removed"),
      section("Changed", changes(d.changed), [field,
        { label: "Before", render: (r) => el("span", { class: "del" }, "− " + show(r.before)) },
        { label: "After", render: (r) => el("span", { class: "ins" }, "+ " + show(r.after)) }], "changed"),
      section("Appended by the later step", entries(d.appended), [field, { label: "Value", render: (r) => show(r.value) }], "appended"),
    );
  }

  async function compare(from, to) {
    status("Comparing…");
    const d = await api("/leads/" + enc(leadId) + "/diff", { from: from, to: to });
    $("from").value = d.from.id;
    $("to").value = d.to.id;
    render(d);
    status("");
  }

  onReady(async () => {
    const lead = await api("/leads/" + enc(leadId), { limit: 1000 });
    const options = (lead.events || []).map((e, i) =>
      el("option", { value: e.id }, "#" + (i + 1) + " " + e.type + " · " + time(e.timestamp)));
    $("from").replaceChildren(...options.map((o) => o.cloneNode(true)));
    $("to").replaceChildren(...options);
    if (lead.events.length < 2) { status("This lead has one event: nothing to compare"); return; }
    const to = url.searchParams.get("to") || lead.events[1].id;
    $("pick").addEventListener("submit", (e) => {
      e.preventDefault();
      const params = new URLSearchParams({ from: $("from").value, to: $("to").value });
      history.replaceState(null, "", location.pathname + "?" + params);
      compare($("from").value, $("to").value).catch((x) => status(x.message, true));
    });
    await compare(url.searchParams.get("from"), to);
  });
})();
