// The stpr device page: no build step, no library, no external URL (devices are offline).
// Everything it shows comes from the JSON API documented in docs/web.md.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: null, frameSeq: 0, frames: 0, eventSeq: 0, job: null, lastLabel: null, classes: [] };

// --- the token: from the one-time login link's fragment, kept in this browser -------------
(function takeToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    localStorage.setItem("stpr-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);  // the token leaves the address bar
  }
  state.token = localStorage.getItem("stpr-token");
})();

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  if (response.status === 401) {
    $("login").hidden = false;
    throw new Error("this device needs its token");
  }
  return response;
}

async function apiJSON(path, options) {
  const r = await api(path, options);
  const body = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

function showError(message) {
  const e = $("error");
  e.textContent = message;
  e.hidden = !message;
  if (message) timeline("⚠ " + message);
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// --- the live view: one request per new frame, so a slow link sees fewer frames, never old ones
async function frameLoop() {
  const img = $("view");
  for (;;) {
    try {
      const t0 = performance.now();
      const r = await api(`/api/frame.jpg?after=${state.frameSeq}`);
      if (r.status === 204) continue;  // no newer frame within the wait: ask again
      if (!r.ok) { await sleep(1000); continue; }
      const seq = Number(r.headers.get("X-Frame-Seq"));
      const age = Number(r.headers.get("X-Frame-Age-Ms"));
      const blob = await r.blob();
      if (seq === state.frameSeq) continue;  // no newer frame within the wait
      const url = URL.createObjectURL(blob);
      await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = url; });
      if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
      img.dataset.url = url;
      state.frameSeq = seq;
      state.frames += 1;
      img.dataset.frames = String(state.frames);
      // capture -> device ready -> sent (age) plus the request's round trip and decoding: an upper bound
      const lag = age + (performance.now() - t0);
      img.dataset.lag = lag.toFixed(1);
      $("lag").textContent = `lag ${Math.round(lag)} ms (capture to this page)`;
    } catch (err) {
      await sleep(1000);
    }
  }
}

// --- events: a server-sent stream read with fetch (EventSource cannot send the token) -------
async function eventLoop() {
  for (;;) {
    try {
      const r = await api(`/api/events/stream?after=${state.eventSeq}`);
      if (!r.ok || !r.body) throw new Error("no event stream");
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (data) onEvent(JSON.parse(data));
        }
      }
    } catch (err) { /* the device restarted or the link dropped: try again */ }
    await sleep(1000);
  }
}

function onEvent(e) {
  if (e.seq) state.eventSeq = Math.max(state.eventSeq, e.seq);
  if (e.top) return showPrediction(e);
  if (e.event === "job") return showJob(e);
  if (e.event === "swap") { timeline(`now serving ${e.classes} classes`); refreshStatus(); return; }
  if (e.event === "refused") { timeline(`new bundle refused: ${e.reason}`); return; }
  if (e.event === "source") { showSource(e); timeline(`source ${e.state}${e.error ? ": " + e.error : ""}`); return; }
  if (e.event === "gap") timeline(`${e.missed} events skipped (this page fell behind)`);
}

function showPrediction(e) {
  const [label, score] = e.top[0];
  const verdict = $("verdict");
  const text = e.unknown ? "unknown" : label;
  verdict.textContent = text;
  verdict.classList.toggle("unknown", Boolean(e.unknown));
  const list = $("top");
  list.replaceChildren(...e.top.map(([name, p], i) => {
    const li = document.createElement("li");
    const zs = e.zero_shot && e.zero_shot[i] ? " (by name)" : "";
    li.innerHTML = `<span class="label"></span><span class="score">${p.toFixed(2)}</span><span class="bar"></span>`;
    li.querySelector(".label").textContent = name + zs;
    li.querySelector(".bar").style.width = `${Math.max(1, Math.round(100 * p))}%`;
    return li;
  }));
  const routing = e.routing ? Object.entries(e.routing) : [];
  $("routing").hidden = routing.length === 0;
  $("routing-bars").replaceChildren(...routing.map(([k, w]) => {
    const div = document.createElement("div");
    div.className = "bar-row";
    div.innerHTML = `<span></span><span>${w.toFixed(2)}</span><span class="bar"></span>`;
    div.firstChild.textContent = k.replace("expert_", "task ");
    div.lastChild.style.width = `${Math.max(1, Math.round(100 * w))}%`;
    return div;
  }));
  if (text !== state.lastLabel) {
    state.lastLabel = text;
    timeline(e.unknown ? `unknown (nearest: ${label})` : `${label} (${score.toFixed(2)})`);
  }
}

function showJob(job) {
  state.job = job;
  $("job").hidden = false;
  const what = job.kind === "learn" ? `'${job.name}'` : job.kind === "clips" ? `'${job.name}' from clips`
    : job.kind === "remove" ? `removing '${job.name}'` : "undo";
  const words = {
    recording: `recording ${what}: ${job.recorded}/${job.of} windows`,
    learning: job.kind === "clips" ? `learning ${what}: ${job.recorded}/${job.of} clips through the tower`
      : `learning ${what}…`,
    done: `done: ${what}`,
    failed: `failed: ${job.error}`,
  };
  $("job-state").textContent = words[job.state] || job.state;
  const p = $("job-progress");
  p.max = Math.max(1, job.of);
  p.value = job.state === "done" ? p.max : job.recorded;
  $("job").dataset.state = job.state;
  const busy = job.state === "recording" || job.state === "learning";
  $("record").disabled = busy;
  if (job.state === "failed") showError(job.error);
  if (job.state === "done" || job.state === "failed") {
    timeline(words[job.state] + (job.note ? ` (${job.note})` : ""));
    refreshStatus();
  }
}

function showSource(s) {
  const pill = $("source");
  pill.textContent = s.state === "live" ? "live" : s.state === "lost" ? "source lost: retrying" : s.state;
  pill.className = "pill " + s.state;
  pill.title = s.error || "";
}

function timeline(text) {
  const li = document.createElement("li");
  const t = document.createElement("time");
  t.textContent = new Date().toLocaleTimeString();
  li.append(t, document.createTextNode(text));
  const list = $("timeline");
  list.prepend(li);
  while (list.children.length > 60) list.lastChild.remove();
}

// --- status: the bundle, its classes, the source, fps and lag ------------------------------
async function refreshStatus() {
  try {
    const s = await apiJSON("/api/status");
    $("login").hidden = true;
    const b = s.bundle;
    if (b) {
      $("bundle").textContent = `${b.path.split("/").pop()} · ${b.mode} · ${b.sha256.slice(0, 10)}`;
      showClasses(b.classes);
    }
    showSource(s.source);
    $("rate").textContent = `${s.fps.toFixed(1)} fps · device lag ${s.lag_ms ?? "–"} ms`;
    $("undo").disabled = !s.undo || Boolean(s.job && ["recording", "learning"].includes(s.job.state));
    if (s.job && s.job.id !== (state.job && state.job.id)) showJob(s.job);
  } catch (err) {
    if (!$("login").hidden) return;
  }
}

function showClasses(classes) {
  if (JSON.stringify(classes) === JSON.stringify(state.classes)) return;  // keep the buttons under the finger
  state.classes = classes;
  $("class-count").textContent = `(${classes.length})`;
  const origin = { trained: "workstation", device: "learned here", name: "by name" };
  $("classes").replaceChildren(...classes.map((c) => {
    const li = document.createElement("li");
    li.dataset.name = c.name;
    li.dataset.origin = c.origin;
    li.innerHTML = `<span class="name"></span><span class="origin ${c.origin}"></span><span class="muted"></span>`;
    li.querySelector(".name").textContent = c.name;
    li.querySelector(".origin").textContent = origin[c.origin] || c.origin;
    li.querySelector(".muted").textContent = c.examples === null ? "" : `${c.examples} clips`;
    if (c.origin !== "name") {
      const remove = document.createElement("button");
      remove.className = "small";
      remove.type = "button";
      remove.textContent = "remove";
      remove.title = c.origin === "device" ? "removed exactly, as if never learned"
        : "stops predicting it; the other classes keep the fit that saw its clips";
      remove.addEventListener("click", () => removeClass(c.name));
      li.append(remove);
    }
    return li;
  }));
  $("class-names").replaceChildren(...classes.filter((c) => c.origin !== "name").map((c) => {
    const o = document.createElement("option");
    o.value = c.name;
    return o;
  }));
}

// --- teaching ------------------------------------------------------------------------------
async function submitJob(path, body, isForm = false) {
  showError("");
  try {
    const options = { method: "POST", body: isForm ? body : JSON.stringify(body) };
    if (!isForm) options.headers = { "Content-Type": "application/json" };
    const job = await apiJSON(path, options);
    showJob(job);
  } catch (err) {
    showError(err.message);
  }
}

$("teach-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("teach-name").value.trim();
  const windows = Number($("teach-windows").value);
  const button = $("record");
  button.disabled = true;
  button.classList.add("counting");
  for (let n = 3; n > 0; n--) {  // time to step in front of the camera
    button.textContent = `starting in ${n}…`;
    await sleep(1000);
  }
  button.classList.remove("counting");
  button.textContent = "● Record";
  button.disabled = false;
  await submitJob("/api/learn", { name, windows, replace: !$("teach-more").checked });
});

$("upload-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const data = new FormData();
  data.append("name", $("upload-name").value.trim());
  for (const f of $("upload-files").files) data.append("files", f, f.name);
  await submitJob("/api/clips", data, true);
});

async function removeClass(name) {
  if (!confirm(`Remove '${name}'?`)) return;
  await submitJob("/api/remove", { name });
}

$("undo").addEventListener("click", () => submitJob("/api/undo", {}));

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem("stpr-token", $("token").value.trim());
  state.token = localStorage.getItem("stpr-token");
  $("login").hidden = true;
  refreshStatus();
});

refreshStatus();
setInterval(refreshStatus, 2000);
frameLoop();
eventLoop();
