"use strict";
// SVG charts shared by the dashboard's panels, built with createElementNS and textContent
// only (no markup from data), each with a text alternative.
(function () {
  const { el } = window.LF;
  const NS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Horizontal bars, labelled with text: for ranked values (reasons, durations, money).
  function hbars(items, unit, label) {
    if (!items.length) return el("p", { class: "hint" }, "Nothing in this range.");
    const max = Math.max(...items.map((i) => Math.max(...i.values.map((v) => Math.abs(v.value || 0))))) || 1;
    const rowH = 22 * Math.max(...items.map((i) => i.values.length)) + 8;
    const W = 600, L = 0;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + (items.length * (rowH + 18)), class: "chart hbars", role: "img", "aria-label": label || "bar chart" });
    items.forEach((item, i) => {
      const y0 = i * (rowH + 18);
      chart.append(svg("text", { x: L, y: y0 + 12, class: "label" }, item.label));
      item.values.forEach((v, j) => {
        const w = (Math.abs(v.value || 0) / max) * (W - 160);
        const y = y0 + 16 + j * 22;
        chart.append(svg("rect", { x: L, y: y, width: Math.max(1, w), height: 16, class: "bar " + (v.cls || "") }));
        chart.append(svg("text", { x: L + w + 6, y: y + 12, class: "axis" }, (v.name ? v.name + " " : "") + unit(v.value)));
      });
    });
    return chart;
  }

  // One row of 24 columns per series (hours of the day), heights 0-100 (percentages).
  function hourColumns(series, label) {
    if (!series.length) return el("p", { class: "hint" }, "Nothing in this range.");
    const W = 600, H = 90, L = 46, gap = 26, slot = (W - L) / 24;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + series.length * (H + gap + 14), class: "chart hbars", role: "img", "aria-label": label });
    series.forEach((s, i) => {
      const y0 = i * (H + gap + 14);
      chart.append(svg("text", { x: 0, y: y0 + 12, class: "label" }, s.label));
      const base = y0 + 16 + H;
      chart.append(svg("line", { x1: L, x2: W, y1: base, y2: base, class: "grid" }));
      chart.append(svg("text", { x: L - 4, y: y0 + 26, "text-anchor": "end", class: "axis" }, "100%"));
      for (const p of s.points) {
        const h = (p.value / 100) * H;
        const bar = svg("rect", { x: L + p.hour * slot + 2, y: base - h, width: slot - 4, height: Math.max(1, h), class: "bar success" });
        bar.append(svg("title", {}, p.title));
        chart.append(bar);
      }
      for (const hour of [0, 6, 12, 18, 23]) {
        chart.append(svg("text", { x: L + hour * slot + slot / 2, y: base + 13, "text-anchor": "middle", class: "axis" }, String(hour)));
      }
    });
    return chart;
  }

  // One row of columns per series over time buckets (ISO instants), each scaled to its
  // series' largest value: how a figure moved hour by hour.
  function timeColumns(series, unit, label) {
    if (!series.length) return el("p", { class: "hint" }, "Nothing in this range.");
    const buckets = [...new Set(series.flatMap((s) => s.points.map((p) => p.at)))].sort();
    const W = 600, H = 60, L = 0, gap = 34, slot = (W - L) / buckets.length;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + series.length * (H + gap), class: "chart hbars", role: "img", "aria-label": label });
    series.forEach((s, i) => {
      const y0 = i * (H + gap);
      const max = Math.max(...s.points.map((p) => p.value || 0)) || 1;
      chart.append(svg("text", { x: 0, y: y0 + 12, class: "label" }, s.label + " (up to " + unit(max) + ")"));
      const base = y0 + 16 + H;
      chart.append(svg("line", { x1: L, x2: W, y1: base, y2: base, class: "grid" }));
      for (const p of s.points) {
        const h = ((p.value || 0) / max) * H;
        const bar = svg("rect", { x: L + buckets.indexOf(p.at) * slot, y: base - h, width: Math.max(1, slot - 1), height: Math.max(1, h), class: "bar p95" });
        bar.append(svg("title", {}, p.title));
        chart.append(bar);
      }
    });
    return chart;
  }

  // A table wider than its card scrolls: keyboard users reach it (Tab, then arrow keys).
  function focusable(scroll, label) {
    scroll.tabIndex = 0;
    scroll.setAttribute("role", "region");
    scroll.setAttribute("aria-label", label);
    return scroll;
  }

  Object.assign(window.LF, { svg, hbars, hourColumns, timeColumns, focusable });
})();
