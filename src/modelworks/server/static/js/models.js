// Model version charts with the vendored Chart.js: evaluation curves (ROC, precision-recall,
// calibration, threshold sweep), regression residuals (histogram, predicted vs actual),
// global importance (horizontal bars) and one prediction's waterfall (floating bars from the
// base value to the prediction).
//
// The page puts {"charts": [{"id", "kind", "title", ...}]} in
// <script type="application/json" id="model-charts">, and a <canvas data-model-chart="ID">
// per chart it shows. Every label was made on the server; the canvas draws them as text, so
// nothing from the data becomes markup.
"use strict";

const COLORS = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
const UP = "#2ca02c";
const DOWN = "#d62728";
const GUIDE = "#8a96a5";

function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toPrecision(4).replace(/\.?0+(e|$)/, "$1");
}

function axis(text, extra = {}) {
  return { type: "linear", title: { display: Boolean(text), text: text || "" }, ...extra };
}

function baseOptions(extra = {}) {
  return {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    ...extra,
  };
}

// ROC, PR, calibration, threshold sweep: x/y curves, optionally with dashed guides.
function lineChart(canvas, chart) {
  let color = 0;
  const datasets = chart.series.map((series) => {
    const guide = Boolean(series.dashed);
    const c = guide ? GUIDE : COLORS[color++ % COLORS.length];
    return {
      label: series.label,
      data: series.points.map(([x, y]) => ({ x, y })),
      borderColor: c,
      backgroundColor: c,
      borderWidth: guide ? 1 : 2,
      borderDash: guide ? [5, 4] : [],
      pointRadius: series.points.length <= 20 && !guide ? 3 : 0,
      pointHoverRadius: guide ? 0 : 4,
      showLine: true,
      tension: 0,
      counts: series.counts || null,
    };
  });
  if (typeof chart.marker === "number") {
    datasets.push({
      label: `threshold ${fmt(chart.marker)}`,
      data: [{ x: chart.marker, y: 0 }, { x: chart.marker, y: 1 }],
      borderColor: GUIDE,
      backgroundColor: GUIDE,
      borderWidth: 1,
      borderDash: [5, 4],
      pointRadius: 0,
      pointHoverRadius: 0,
      showLine: true,
    });
  }
  const range = chart.unit ? { min: 0, max: 1 } : {};
  return new window.Chart(canvas, {
    type: "scatter",
    data: { datasets },
    options: baseOptions({
      parsing: false,
      interaction: { mode: "nearest", intersect: false },
      scales: { x: axis(chart.x_label, range), y: axis(chart.y_label, range) },
      plugins: {
        legend: { display: datasets.length > 1, position: "bottom" },
        tooltip: {
          callbacks: {
            label: (item) => {
              const counts = item.dataset.counts;
              const n = counts ? ` (${fmt(counts[item.dataIndex])} rows)` : "";
              return `${item.dataset.label}: (${fmt(item.parsed.x)}, ${fmt(item.parsed.y)})${n}`;
            },
          },
        },
      },
    }),
  });
}

function histogram(canvas, chart) {
  return new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: chart.labels,
      datasets: [{
        label: chart.y_label || "rows",
        data: chart.counts,
        backgroundColor: COLORS[0],
        barPercentage: 1.0,
        categoryPercentage: 1.0,
        borderWidth: 0,
      }],
    },
    options: baseOptions({
      scales: {
        x: { title: { display: true, text: chart.x_label }, ticks: { maxRotation: 45, autoSkip: true, font: { size: 10 } } },
        y: { beginAtZero: true, grace: "5%", ticks: { precision: 0 }, title: { display: true, text: chart.y_label } },
      },
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { title: (items) => (items.length ? chart.titles[items[0].dataIndex] : "") } },
      },
    }),
  });
}

// Predicted vs actual: the rows as points, the diagonal as a dashed line.
function scatter(canvas, chart) {
  const [rows, diagonal] = chart.series;
  const datasets = [{
    label: rows.label,
    data: rows.points.map(([x, y]) => ({ x, y })),
    backgroundColor: "rgba(31, 119, 180, 0.45)",
    borderColor: "rgba(31, 119, 180, 0.45)",
    pointRadius: 2,
  }];
  if (diagonal) {
    datasets.push({
      label: diagonal.label,
      data: diagonal.points.map(([x, y]) => ({ x, y })),
      borderColor: GUIDE,
      borderDash: [5, 4],
      borderWidth: 1,
      pointRadius: 0,
      showLine: true,
    });
  }
  return new window.Chart(canvas, {
    type: "scatter",
    data: { datasets },
    options: baseOptions({
      parsing: false,
      scales: { x: axis(chart.x_label), y: axis(chart.y_label) },
      plugins: { legend: { display: true, position: "bottom" } },
    }),
  });
}

// Global importance: one horizontal bar per feature and method.
function horizontalBars(canvas, chart) {
  const datasets = chart.series.map((series, i) => ({
    label: series.label,
    data: series.values,
    errors: series.errors || null,
    backgroundColor: COLORS[i % COLORS.length],
  }));
  return new window.Chart(canvas, {
    type: "bar",
    data: { labels: chart.labels, datasets },
    options: baseOptions({
      indexAxis: "y",
      scales: {
        x: { beginAtZero: true, title: { display: true, text: chart.x_label } },
        y: { ticks: { autoSkip: false, font: { size: 11 } } },
      },
      plugins: {
        legend: { display: datasets.length > 1, position: "bottom" },
        tooltip: {
          callbacks: {
            label: (item) => {
              const errors = item.dataset.errors;
              const sd = errors && errors[item.dataIndex] !== null ? ` ± ${fmt(errors[item.dataIndex])}` : "";
              return `${item.dataset.label}: ${fmt(item.parsed.x)}${sd}`;
            },
          },
        },
      },
    }),
  });
}

// One prediction: floating bars [before, after] per feature, from the base value to the
// prediction, green where a feature raises the output and red where it lowers it.
function waterfall(canvas, chart) {
  const colors = chart.deltas.map((d) => (d >= 0 ? UP : DOWN));
  const guides = [];
  for (const [label, value] of [["base value", chart.base_value], ["prediction", chart.prediction]]) {
    if (typeof value !== "number") continue;
    guides.push({
      type: "scatter",
      label: `${label} ${fmt(value)}`,
      data: [{ x: value, y: chart.labels[0] }, { x: value, y: chart.labels[chart.labels.length - 1] }],
      borderColor: label === "base value" ? GUIDE : "#111827",
      backgroundColor: label === "base value" ? GUIDE : "#111827",
      borderDash: [5, 4],
      borderWidth: 1,
      pointRadius: 0,
      showLine: true,
    });
  }
  return new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: chart.labels,
      datasets: [
        {
          type: "bar",
          label: "contribution",
          data: chart.bars,
          backgroundColor: colors,
          borderColor: colors,
          borderSkipped: false,
          minBarLength: 2,
        },
        ...guides,
      ],
    },
    options: baseOptions({
      indexAxis: "y",
      scales: {
        x: { type: "linear", title: { display: true, text: chart.x_label } },
        y: { type: "category", ticks: { autoSkip: false, font: { size: 11 } } },
      },
      plugins: {
        legend: { display: true, position: "bottom", labels: { filter: (item) => item.datasetIndex > 0 } },
        tooltip: {
          filter: (item) => item.datasetIndex === 0,
          callbacks: {
            label: (item) => {
              const d = chart.deltas[item.dataIndex];
              const [, after] = chart.bars[item.dataIndex];
              return `${d >= 0 ? "+" : ""}${fmt(d)} → ${fmt(after)}`;
            },
          },
        },
      },
    }),
  });
}

const DRAW = { line: lineChart, histogram, scatter, hbar: horizontalBars, waterfall };

function drawModelCharts() {
  const source = document.getElementById("model-charts");
  if (!source || !window.Chart) return;
  const { charts } = JSON.parse(source.textContent);
  const byId = new Map(charts.map((c) => [c.id, c]));
  for (const canvas of document.querySelectorAll("canvas[data-model-chart]")) {
    const chart = byId.get(canvas.dataset.modelChart);
    const draw = chart && DRAW[chart.kind];
    if (!draw) continue;
    draw(canvas, chart);
    canvas.dataset.rendered = "true";
  }
}

document.addEventListener("DOMContentLoaded", drawModelCharts);
