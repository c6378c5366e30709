// Modelworks UI: small progressive enhancements. Data only ever reaches the page through
// textContent and element properties, never innerHTML.
"use strict";

document.documentElement.classList.replace("no-js", "js");

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// Call the REST API with the session cookie; unsafe methods carry the CSRF token.
// Resolves to the parsed JSON body (or null); rejects with an Error whose message is the
// server's problem detail.
async function api(path, options = {}) {
  const method = (options.method || "GET").toUpperCase();
  const headers = new Headers(options.headers || {});
  headers.set("Accept", "application/json");
  if (!["GET", "HEAD", "OPTIONS"].includes(method)) {
    headers.set("X-CSRF-Token", csrfToken());
  }
  let body = options.body;
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { method, headers, body, credentials: "same-origin" });
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const error = new Error((data && (data.detail || data.title)) || `HTTP ${response.status}`);
    error.status = response.status;
    error.problem = data;
    throw error;
  }
  return data;
}

window.modelworks = Object.freeze({ api, csrfToken });

function setUpAutosubmit() {
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.requestSubmit());
  }
}

// Runs table: pick runs with checkboxes, then Compare opens /compare?runs=ID1,ID2.
function setUpCompare() {
  const form = document.getElementById("compare-form");
  if (!form) return;
  const boxes = () => Array.from(form.querySelectorAll('input[type="checkbox"][name="runs"]'));
  const button = form.querySelector("[data-compare]");
  const count = form.querySelector("[data-selected-count]");
  const all = form.querySelector("[data-select-all]");
  const chosen = () => boxes().filter((b) => b.checked).map((b) => b.value);
  function update() {
    const n = chosen().length;
    button.disabled = n < 2;
    button.title = n < 2 ? "Select two or more runs to compare" : "";
    count.textContent = n ? `${n} selected` : "Select two or more runs to compare";
    if (all) {
      all.checked = n > 0 && n === boxes().length;
      all.indeterminate = n > 0 && n < boxes().length;
    }
  }
  form.addEventListener("change", (event) => {
    if (event.target === all) {
      for (const box of boxes()) box.checked = all.checked;
    }
    update();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const ids = chosen();
    if (ids.length < 2) return;
    window.location.assign("/compare?runs=" + ids.map(encodeURIComponent).join(","));
  });
  update();
}

// Experiments page: create an experiment through the REST API.
function setUpNewExperiment() {
  const form = document.getElementById("new-experiment");
  if (!form) return;
  const error = form.querySelector(".form-error");
  const project = form.dataset.project;
  form.hidden = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const name = form.elements.name.value.trim();
    const description = form.elements.description.value;
    try {
      const experiment = await api(
        `/api/v1/projects/${encodeURIComponent(project)}/experiments`,
        { method: "POST", json: { name, description } },
      );
      window.location.assign(
        `/projects/${encodeURIComponent(project)}/experiments/${encodeURIComponent(experiment.name)}`,
      );
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpAutosubmit();
  setUpCompare();
  setUpNewExperiment();
});
