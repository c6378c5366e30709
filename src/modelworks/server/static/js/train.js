// The "Train a model" form of a dataset version's page: submits an automl or a train job
// on the version through the REST API, then opens the job's page. An error (the server's
// problem detail) is shown in the form.
"use strict";

function setUpTrainForm() {
  const form = document.getElementById("train-form");
  if (!form) return;
  const error = form.querySelector(".form-error");
  const button = form.querySelector("button[type=submit]");
  const { project, datasetRef } = form.dataset;
  form.hidden = false;

  function showMode() {
    const mode = form.elements.mode.value;
    for (const fields of form.querySelectorAll("fieldset[data-mode]")) {
      const active = fields.dataset.mode === mode;
      fields.hidden = !active;
      fields.disabled = !active;
    }
  }

  function request() {
    const mode = form.elements.mode.value;
    const target = form.elements.target.value;
    const spec = { dataset: datasetRef, target };
    const runName = form.elements.run_name.value.trim();
    if (runName) spec.run_name = runName;
    let what;
    if (mode === "automl") {
      spec.time_budget = Number(form.elements.time_budget.value);
      if (form.elements.metric.value) spec.metric = form.elements.metric.value;
      what = "automl";
    } else {
      spec.model = form.elements.model.value;
      what = spec.model;
    }
    return {
      kind: mode,
      spec,
      name: `${what} on ${datasetRef} → ${target}`.slice(0, 200),
      resources: { cpus: Number(form.elements.cpus.value) },
    };
  }

  form.addEventListener("change", (event) => {
    if (event.target.name === "mode") showMode();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    button.disabled = true;
    const projectPath = encodeURIComponent(project);
    try {
      const job = await window.modelworks.api(`/api/v1/projects/${projectPath}/jobs`, {
        method: "POST",
        json: request(),
      });
      window.location.assign(`/projects/${projectPath}/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      button.disabled = false;
    }
  });
  showMode();
}

document.addEventListener("DOMContentLoaded", setUpTrainForm);
