"use strict";
// Scheduled exports: the recent task runs, with their status, attempts, last error and file.
(function () {
  const { $, el, api, status, onReady, time, table } = window.LF;
  const LABELS = { queued: "queued", running: "running", completed: "✓ completed", failed: "✕ failed", canceled: "canceled" };
  // A queued run with attempts behind it failed and waits for its retry.
  const label = (r) => r.status === "queued" && r.attempts > 0 ? "↻ retry pending" : (LABELS[r.status] || r.status);

  onReady(async () => {
    status("Loading…");
    const runs = await api("/task-runs", { limit: 100 });
    status(runs.length ? runs.length + " run(s)" : "No scheduled export has run yet");
    $("runs").replaceChildren(runs.length ? table([
      { label: "Scheduled for", render: (r) => time(r.scheduled_for) },
      { label: "Schedule", key: "schedule_id" },
      { label: "Status", render: (r) => el("span", { class: "run-status" }, label(r)) },
      { label: "Attempts", key: "attempts", num: true },
      { label: "Next attempt", render: (r) => time(r.next_attempt_at) },
      { label: "Finished", render: (r) => time(r.finished_at) },
      { label: "Error", key: "error" },
      { label: "Rows", key: "rows", num: true },
      { label: "Output", render: (r) => r.output_deleted_at ? [r.output_location, " (deleted: keep_files)"] : r.output_location },
    ], runs.map((r) => Object.assign({ _class: "run run-row-" + r.status }, r)), "Scheduled export runs") : "");
  });
})();
