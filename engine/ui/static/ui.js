// leadflow operator UI: shared helpers. Data only ever reaches the DOM as text nodes
// (el() and textContent); nothing here assigns innerHTML.
"use strict";
(function () {
  const KEY = "leadflow.ui.key";
  const readyCallbacks = [];
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function status(message, isError) {
    const node = $("status");
    node.textContent = message || "";
    node.classList.toggle("error", Boolean(isError));
  }

  function showKeyPanel(message) {
    $("key-panel").hidden = false;
    $("key-error").textContent = message || "";
    $("key-input").focus();
  }

  // GET with query parameters, or POST with a JSON body (for what must stay out of
  // access logs: a searched email or phone).
  async function api(path, params, postBody) {
    const key = sessionStorage.getItem(KEY);
    if (!key) { showKeyPanel(); throw new Error("no key"); }
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== "") query.append(k, v);
    }
    const url = "/ui/api" + path + (query.toString() ? "?" + query : "");
    const init = { headers: { Authorization: "Bearer " + key } };
    if (postBody !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(postBody);
    }
    const response = await fetch(url, init);
    if (response.status === 401) {
      sessionStorage.removeItem(KEY);
      showKeyPanel("That key was refused; enter a valid read key.");
      throw new Error("unauthorized");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const detail = body && body.detail;
      const text = typeof detail === "string" ? detail : JSON.stringify(detail);
      throw new Error(response.status + ": " + (text || response.statusText));
    }
    return body;
  }

  async function signIn() {
    const who = await api("/whoami");
    $("key-panel").hidden = true;
    $("who").replaceChildren(
      el("span", { text: "Key " + who.name + (who.scopes.includes("pii:read") ? " (PII visible)" : " (PII masked)") }),
      " ",
      el("button", { type: "button", class: "link", onclick: () => { sessionStorage.removeItem(KEY); location.reload(); } }, "Forget key"),
    );
    for (const callback of readyCallbacks) {
      try { await callback(); } catch (e) { if (e.message !== "unauthorized") status(e.message, true); }
    }
  }

  function onReady(callback) { readyCallbacks.push(callback); }

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("key-input");
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = "";
      signIn().catch((e) => { if (e.message !== "unauthorized") status(e.message, true); });
    });
    if (sessionStorage.getItem(KEY)) signIn().catch((e) => { if (e.message !== "unauthorized") status(e.message, true); });
    else showKeyPanel();
  });

  const ICONS = { success: "✓", failure: "✕", error: "⚠" };
  function outcome(value) {
    const known = Object.prototype.hasOwnProperty.call(ICONS, value);
    return el("span", { class: "outcome " + (known ? value : "other") },
      el("span", { class: "icon", "aria-hidden": "true" }, known ? ICONS[value] : "•"), " ", String(value));
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "";
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 3600000) return (ms / 60000).toFixed(1) + " min";
    if (ms < 86400000) return (ms / 3600000).toFixed(1) + " h";
    return (ms / 86400000).toFixed(1) + " d";
  }

  function time(iso) { return iso ? iso.replace("T", " ").replace("Z", " UTC") : ""; }
  function money(v) { return v === null || v === undefined ? "" : Number(v).toFixed(2); }
  function pct(v) { return v === null || v === undefined ? "" : (100 * v).toFixed(1) + "%"; }

  function link(href, text) { return el("a", { href: href }, text); }
  const enc = encodeURIComponent;

  function table(columns, rows, caption) {
    const head = el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c.label)));
    const body = rows.map((row) => {
      const tr = el("tr", { class: row._class || null });
      for (const c of columns) {
        const value = c.render ? c.render(row) : row[c.key];
        tr.append(el("td", { class: c.num ? "num" : null }, value === null || value === undefined ? "" : value));
      }
      return tr;
    });
    return el("div", { class: "scroll" }, el("table", {},
      caption ? el("caption", {}, caption) : null, el("thead", {}, head), el("tbody", {}, body)));
  }

  // A JSON value as nested <details>: keyboard-operable by the browser itself.
  function tree(value, name, open) {
    if (value !== null && typeof value === "object") {
      const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
      const summary = el("summary", {}, el("span", { class: "key" }, name),
        el("span", { class: "meta" }, Array.isArray(value) ? " [" + entries.length + "]" : " {" + entries.length + "}"));
      const list = el("ul", {}, entries.map(([k, v]) => el("li", {}, tree(v, k, false))));
      return el("details", { open: open || null }, summary, list);
    }
    const kind = value === null ? "null" : typeof value;
    return el("div", { class: "leaf" }, el("span", { class: "key" }, name), ": ",
      el("span", { class: "v " + kind }, kind === "string" ? JSON.stringify(value) : String(value)));
  }

  function utcInput(input, iso) { if (iso) input.value = iso.slice(0, 16); }
  function fromInput(input) { return input.value ? input.value + ":00Z" : ""; }

  window.LF = { $, el, api, status, onReady, outcome, duration, time, money, pct, link, enc, table, tree, utcInput, fromInput };
})();
