// Line charts of metric histories (x: step, y: value) with the vendored Chart.js.
// The page puts {"charts": [{"key", "series": [{"label", "color", "points": [[step, value]]}]}]}
// in <script type="application/json" id="chart-data">, and one <canvas data-chart="i"> per chart.
"use strict";

const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];

function drawChart(canvas, chart) {
  const datasets = chart.series.map((series) => {
    const color = PALETTE[series.color % PALETTE.length];
    return {
      label: series.label,
      data: series.points.map(([x, y]) => ({ x, y })),
      borderColor: color,
      backgroundColor: color,
      borderWidth: 2,
      pointRadius: series.points.length <= 30 ? 2.5 : 0,
      pointHoverRadius: 4,
      spanGaps: false,
      tension: 0,
    };
  });
  return new window.Chart(canvas, {
    type: "line",
    data: { datasets },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      parsing: false,
      normalized: true,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      scales: {
        x: { type: "linear", title: { display: true, text: "step" }, ticks: { precision: 0 } },
        y: { type: "linear", grace: "5%" },
      },
      plugins: {
        legend: { display: datasets.length > 1, position: "bottom" },
        tooltip: { callbacks: { title: (items) => (items.length ? `step ${items[0].parsed.x}` : "") } },
      },
    },
  });
}

function drawCharts() {
  const source = document.getElementById("chart-data");
  if (!source || !window.Chart) return;
  const { charts } = JSON.parse(source.textContent);
  for (const canvas of document.querySelectorAll("canvas[data-chart]")) {
    const chart = charts[Number(canvas.dataset.chart)];
    if (!chart) continue;
    drawChart(canvas, chart);
    canvas.dataset.rendered = "true";
  }
}

document.addEventListener("DOMContentLoaded", drawCharts);
