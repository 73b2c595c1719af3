// corec console: live fragments, the action form, dead-letter replay and delete.
// Plain JavaScript, no build step; every request that changes state carries the page's
// CSRF value (meta csrf-token), and the session cookie is sent by the browser.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (answer.error && answer.error.message) || response.statusText;
    throw new Error(message);
  }
  return answer;
}

// Wait for a command's result envelope (null after `seconds`).
async function awaitResult(id, after, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const url = `/api/result?${new URLSearchParams({ id, after, wait: "5" })}`;
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`result: ${response.status} ${response.statusText}`);
    const answer = await response.json();
    if (answer.result) return answer.result;
  }
  return null;
}

// Cells with data-time (Unix seconds, or ISO 8601) show it in the browser's local time.
function showTimes(root) {
  for (const cell of root.querySelectorAll(".time[data-time]")) {
    const raw = cell.dataset.time;
    const when = /^[0-9]+(\.[0-9]+)?$/.test(raw) ? new Date(parseFloat(raw) * 1000) : new Date(raw);
    if (raw && !Number.isNaN(when.getTime())) cell.textContent = when.toLocaleString();
  }
}

// Elements with data-live="URL" reload their content from URL (plus the page's query).
function startLive() {
  for (const element of document.querySelectorAll("[data-live]")) {
    const every = parseInt(element.dataset.every || "1000", 10);
    const refresh = async () => {
      if (!document.hidden) {
        try {
          const response = await fetch(element.dataset.live + window.location.search,
            { credentials: "same-origin" });
          if (response.ok) {
            element.innerHTML = await response.text();
            element.classList.remove("stale");
            showTimes(element);
          } else {
            element.classList.add("stale");
          }
        } catch (error) {
          element.classList.add("stale");
        }
      }
      setTimeout(refresh, every);
    };
    setTimeout(refresh, every);
  }
}

function fieldValue(input) {
  const raw = input.value.trim();
  if (raw === "") return undefined;
  switch (input.dataset.kind) {
    case "integer": {
      const value = Number(raw);
      if (!Number.isInteger(value)) throw new Error(`${input.dataset.field}: not a whole number`);
      return value;
    }
    case "number": {
      const value = Number(raw);
      if (Number.isNaN(value)) throw new Error(`${input.dataset.field}: not a number`);
      return value;
    }
    case "boolean":
      return raw === "true";
    case "json":
      try {
        return JSON.parse(raw);
      } catch (error) {
        throw new Error(`${input.dataset.field}: not valid JSON (${error.message})`);
      }
    default:
      return raw;
  }
}

function startSendForm() {
  const form = document.getElementById("send-form");
  if (!form) return;
  const status = document.getElementById("send-status");
  const out = document.getElementById("send-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    out.textContent = "";
    const params = {};
    try {
      for (const input of form.querySelectorAll("[data-field]")) {
        const value = fieldValue(input);
        if (value !== undefined) params[input.dataset.field] = value;
      }
      const sent = await post("/api/send", { action: form.dataset.action, params });
      status.textContent = `sent ${sent.id} (entry ${sent.entry_id}), waiting for the answer...`;
      const result = await awaitResult(sent.id, sent.entry_id);
      if (result === null) {
        status.textContent = `no answer to ${sent.id} yet: is a worker running? (see Workers)`;
        return;
      }
      status.innerHTML = "";
      const badge = document.createElement("span");
      badge.className = `badge ${result.status === "ok" ? "ok" : "bad"}`;
      badge.id = "send-outcome";
      badge.textContent = result.status;
      status.append(`answer to ${sent.id}: `, badge);
      out.textContent = JSON.stringify(result, null, 2);
    } catch (error) {
      status.textContent = `not sent: ${error.message}`;
    }
  });
}

function selectedBoxes() {
  return [...document.querySelectorAll('input[name="ref"]:checked')];
}

// The command id of each dead letter the page shows, by ref (the rows' and buttons' data-key).
function keysByRef() {
  const keys = {};
  for (const element of document.querySelectorAll("[data-ref][data-key]")) {
    if (element.dataset.key) keys[element.dataset.ref] = element.dataset.key;
  }
  for (const box of document.querySelectorAll('input[name="ref"][data-key]')) {
    if (box.dataset.key) keys[box.value] = box.dataset.key;
  }
  return keys;
}

async function showAnswers(replayed) {
  const list = document.getElementById("answers");
  const keys = keysByRef();
  for (const done of replayed.slice(0, 50)) {
    done.key = keys[done.ref];
    if (!done.key) continue;
    const item = document.createElement("li");
    item.dataset.key = done.key;
    item.textContent = `${done.key}: waiting for the answer...`;
    list.append(item);
    awaitResult(done.key, done.new_entry_id).then((result) => {
      if (result === null) {
        item.textContent = `${done.key}: no answer yet (is a worker running?)`;
        return;
      }
      item.textContent = `${done.key}: `;
      const badge = document.createElement("span");
      badge.className = `badge answer ${result.status === "ok" ? "ok" : "bad"}`;
      badge.textContent = result.status;
      const body = document.createElement("pre");
      body.textContent = JSON.stringify(result, null, 2);
      item.append(badge, body);
    }, (error) => { item.textContent = `${done.key}: ${error.message}`; });
  }
}

function removeRows(refs) {
  for (const ref of refs) {
    const row = document.querySelector(`tr[data-ref="${CSS.escape(ref)}"]`);
    if (row) row.remove();
  }
}

async function deadLetterOp(kind, body, confirmText) {
  const outcome = document.getElementById("dlq-outcome");
  if (confirmText && !window.confirm(confirmText)) return;
  try {
    const answer = await post(`/api/dlq/${kind}`, body);
    if (kind === "replay") {
      outcome.textContent = `replayed ${answer.replayed.length} onto ${answer.stream_in}`;
      await showAnswers(answer.replayed);
      removeRows(answer.replayed.map((d) => d.ref));
    } else {
      outcome.textContent = `deleted ${answer.count} from ${answer.stream}`;
      // `all` deletes every entry up to the newest present when it started: all rows shown.
      removeRows(answer.deleted || [...document.querySelectorAll("tr[data-ref]")]
        .map((row) => row.dataset.ref));
    }
    if (answer.missing && answer.missing.length) {
      outcome.textContent += `; not found (replayed or deleted meanwhile): ${answer.missing.join(", ")}`;
    }
    outcome.className = "done";
  } catch (error) {
    outcome.textContent = `refused: ${error.message}`;
    outcome.className = "error";
  }
}

function startDeadLetters() {
  const on = (id, handler) => {
    const element = document.getElementById(id);
    if (element) element.addEventListener("click", handler);
  };
  on("select-all", (event) => {
    for (const box of document.querySelectorAll('input[name="ref"]')) box.checked = event.target.checked;
  });
  on("replay-selected", () => {
    const refs = selectedBoxes().map((box) => box.value);
    if (refs.length) deadLetterOp("replay", { ids: refs });
  });
  on("replay-all", (event) => deadLetterOp("replay", { all: true },
    `Replay all ${event.target.dataset.total} dead letters (those present now)?`));
  on("delete-selected", () => {
    const refs = selectedBoxes().map((box) => box.value);
    if (refs.length) deadLetterOp("delete", { ids: refs }, `Delete ${refs.length} dead letters? This cannot be undone.`);
  });
  on("delete-all", (event) => deadLetterOp("delete", { all: true },
    `Delete all ${event.target.dataset.total} dead letters? This cannot be undone.`));
  for (const button of document.querySelectorAll(".replay-one")) {
    button.addEventListener("click", () => deadLetterOp("replay", { ids: [button.dataset.ref] }));
  }
  for (const button of document.querySelectorAll(".delete-one")) {
    button.addEventListener("click", () => deadLetterOp("delete", { ids: [button.dataset.ref] },
      `Delete dead letter ${button.dataset.ref}? This cannot be undone.`));
  }
}

// History: datetime-local inputs are the browser's local time; the server gets UTC.
function pad(n) { return String(n).padStart(2, "0"); }
function startHistory() {
  const form = document.getElementById("history-form");
  if (!form) return;
  for (const input of form.querySelectorAll("[data-utc]")) {
    const iso = input.dataset.iso;
    const when = iso ? new Date(iso) : null;
    if (when && !Number.isNaN(when.getTime())) {
      input.value = `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())}T` +
        `${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}`;
    }
  }
  form.addEventListener("submit", () => {
    for (const input of form.querySelectorAll("[data-utc]")) {
      if (!input.value) { input.disabled = true; continue; }
      const hidden = document.createElement("input");
      hidden.type = "hidden";
      hidden.name = input.name;
      hidden.value = new Date(input.value).toISOString();
      input.removeAttribute("name");
      form.append(hidden);
    }
    for (const input of form.querySelectorAll("input:not([type=hidden]), select")) {
      if (!input.value) input.disabled = true; // leave empty filters out of the URL
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
  showTimes(document);
  startLive();
  startSendForm();
  startDeadLetters();
  startHistory();
});
