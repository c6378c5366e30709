// Profile charts of a dataset version with the vendored Chart.js: a histogram for each
// binned (numeric or temporal) column, a bar chart of the most common values for each text
// column. The page puts {"charts": [{"column", "kind": "histogram" | "top_values",
// "labels": [...], "titles": [...], "counts": [...]}]} in
// <script type="application/json" id="profile-data">, and one <canvas data-profile-chart="i">
// per chart. Labels (short, for the axis) and titles (longer, for tooltips) were made on the
// server; the canvas draws them as text, so nothing from the data becomes markup.
"use strict";

const HISTOGRAM_COLOR = "#1f77b4";
const TOP_VALUES_COLOR = "#2ca02c";

function tooltip(chart) {
  return {
    callbacks: {
      title: (items) => (items.length ? chart.titles[items[0].dataIndex] ?? items[0].label : ""),
    },
  };
}

function histogram(canvas, chart) {
  return new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: chart.labels,
      datasets: [{
        label: "rows",
        data: chart.counts,
        backgroundColor: HISTOGRAM_COLOR,
        // Bars that touch read as a histogram, not as separate categories.
        barPercentage: 1.0,
        categoryPercentage: 1.0,
        borderWidth: 0,
      }],
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      scales: {
        x: { ticks: { maxRotation: 45, autoSkip: true, font: { size: 10 } } },
        y: { beginAtZero: true, ticks: { precision: 0 } },
      },
      plugins: { legend: { display: false }, tooltip: tooltip(chart) },
    },
  });
}

function topValues(canvas, chart) {
  return new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: chart.labels,
      datasets: [{ label: "rows", data: chart.counts, backgroundColor: TOP_VALUES_COLOR }],
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      indexAxis: "y", // long category names stay readable on the vertical axis
      scales: {
        x: { beginAtZero: true, ticks: { precision: 0 } },
        y: { ticks: { autoSkip: false, font: { size: 11 } } },
      },
      plugins: { legend: { display: false }, tooltip: tooltip(chart) },
    },
  });
}

function drawProfileCharts() {
  const source = document.getElementById("profile-data");
  if (!source || !window.Chart) return;
  const { charts } = JSON.parse(source.textContent);
  for (const canvas of document.querySelectorAll("canvas[data-profile-chart]")) {
    const chart = charts[Number(canvas.dataset.profileChart)];
    if (!chart) continue;
    if (chart.kind === "histogram") histogram(canvas, chart);
    else topValues(canvas, chart);
    canvas.dataset.rendered = "true";
  }
}

document.addEventListener("DOMContentLoaded", drawProfileCharts);
