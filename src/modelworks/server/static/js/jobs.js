// The job page: follows a queued or running job through the REST API. It polls the job
// (its status and progress) and its log from the byte offset it has read so far, appends
// new log text with textContent, and reloads the page when the status changes, so that
// the server renders the result, the error and the run link. It stops once the job has
// ended and its whole log was read. Editors get a Cancel button while the job is active.
"use strict";

const POLL_MS = 1000;
const MAX_LOG_CHARS = 500000; // the page keeps the log's tail; the API has all of it
const FINAL = new Set(["succeeded", "failed", "cancelled"]);

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let size = bytes / 1024;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size.toFixed(1)} ${units[unit]}`;
}

// As the server's |seconds filter writes a duration.
function formatSeconds(value) {
  const whole = Math.round(value);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const secs = whole % 60;
  if (hours) return `${hours}h ${minutes}m`;
  if (minutes) return `${minutes}m ${secs}s`;
  return value < 10 ? `${value.toFixed(1)}s` : `${secs}s`;
}

function setUpJobPage() {
  const root = document.getElementById("job-page");
  if (!root) return;
  const { api } = window.modelworks;
  const jobPath = `/api/v1/jobs/${encodeURIComponent(root.dataset.jobId)}`;
  const shownStatus = root.dataset.status;
  const log = document.getElementById("job-log");
  const logText = root.querySelector("[data-log-text]");
  const logState = root.querySelector("[data-log-state]");
  let offset = Number(root.dataset.logOffset) || 0;
  let failures = 0;

  setUpCancel(root, jobPath);
  log.scrollTop = log.scrollHeight;
  if (root.dataset.logComplete === "true" && FINAL.has(shownStatus)) return;

  function append(text) {
    if (!text) return;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    let all = logText.textContent + text;
    if (all.length > MAX_LOG_CHARS) all = all.slice(all.length - MAX_LOG_CHARS);
    logText.textContent = all;
    const empty = root.querySelector("[data-log-empty]");
    if (empty) empty.hidden = true;
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function showState(words) {
    logState.textContent = `${words} · ${formatSize(offset)}`;
  }

  function showDuration() {
    const duration = root.querySelector("[data-job-duration][data-started]");
    if (!duration) return;
    const started = Date.parse(duration.dataset.started);
    if (Number.isNaN(started)) return;
    duration.textContent = formatSeconds(Math.max(0, Date.now() - started) / 1000);
  }

  function showProgress(job) {
    const bar = root.querySelector("[data-job-progress]");
    const message = root.querySelector("[data-job-progress-message]");
    if (!bar || job.progress === null) return;
    bar.value = job.progress;
    const percent = Math.round(job.progress * 100);
    message.textContent = job.progress_message ? `${percent}% · ${job.progress_message}` : `${percent}%`;
  }

  async function tick() {
    try {
      if (!FINAL.has(shownStatus)) {
        const job = await api(jobPath);
        if (job.status !== shownStatus) {
          window.location.reload(); // the server renders the new state
          return;
        }
        showProgress(job);
        showDuration();
      }
      const chunk = await api(`${jobPath}/logs?offset=${offset}`);
      append(chunk.text);
      offset = chunk.next_offset;
      failures = 0;
      if (chunk.complete) {
        showState("complete");
        root.dataset.logComplete = "true";
        return;
      }
      showState(FINAL.has(shownStatus) ? "settling" : "following");
    } catch (err) {
      failures += 1;
      logState.textContent = `could not follow the job: ${err.message}; retrying`;
    }
    window.setTimeout(tick, POLL_MS * Math.min(10, 1 + failures));
  }

  window.setTimeout(tick, POLL_MS);
}

function setUpCancel(root, jobPath) {
  const button = root.querySelector("[data-cancel]");
  if (!button) return;
  const error = root.querySelector(".job-actions .form-error");
  button.addEventListener("click", async () => {
    button.disabled = true;
    error.hidden = true;
    try {
      const job = await window.modelworks.api(`${jobPath}/cancel`, { method: "POST" });
      if (FINAL.has(job.status)) {
        window.location.reload();
        return;
      }
      button.textContent = "Cancelling…"; // the runner stops it; the poll sees the end
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", setUpJobPage);
