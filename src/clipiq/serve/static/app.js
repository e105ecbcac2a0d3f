// The clipiq service's page: drop or pick images; each is explained by POST /v1/explain (score, attributes,
// heatmap, worst regions) and can be restored by POST /v1/restore. Offline: only this server is contacted.
"use strict";
(() => {
  const KEY_STORE = "clipiq.apiKey";
  const CONCURRENCY = 2;      // uploads in flight at once (the server queues and batches the rest)
  const MAX_TRIES = 4;        // a 503 (queue full) is retried after its Retry-After, this many tries in all
  const $ = (sel, root = document) => root.querySelector(sel);

  const keyBox = $("#api-key");
  const configLine = $("#config");
  const cards = $("#cards");
  const template = $("#card-template");
  const opacity = $("#opacity");
  let config = null;          // GET /v1/config, once it answered
  const finished = [];        // {card, file} of explained images, for restore buttons added later

  try { keyBox.value = sessionStorage.getItem(KEY_STORE) || ""; } catch (e) { /* storage disabled */ }

  function authHeaders() {
    const key = keyBox.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function fmt(x, digits = 4) {
    const v = typeof x === "number" ? x : parseFloat(x);
    return Number.isFinite(v) ? v.toFixed(digits) : "n/a";
  }

  function fmtBytes(n) {
    return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`;
  }

  // The message of a non-2xx answer: the service's {"error": {"code", "message"}}, else the body or status.
  async function errorText(resp) {
    let body = "";
    try { body = await resp.text(); } catch (e) { /* no body */ }
    try {
      const err = JSON.parse(body).error;
      if (err && err.message) return err.code ? `${err.message} (${err.code})` : String(err.message);
    } catch (e) { /* not JSON */ }
    const hint = resp.status === 401 ? ": enter the API key above" : "";
    return `HTTP ${resp.status} ${resp.statusText}${hint}${body && body.length < 300 && !hint ? `: ${body}` : ""}`;
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // POST a form; a 503 with Retry-After (the queue is full) is retried. Resolves to the Response, or throws
  // an Error whose message is the service's.
  async function post(url, makeForm, onRetry) {
    for (let attempt = 1; ; attempt++) {
      let resp;
      try {
        resp = await fetch(url, { method: "POST", body: makeForm(), headers: authHeaders() });
      } catch (e) {
        throw new Error(`the server could not be reached (${e.message})`);
      }
      if (resp.ok) return resp;
      if (resp.status === 503 && attempt < MAX_TRIES) {
        const wait = Math.min(parseFloat(resp.headers.get("Retry-After")) || 1, 10);
        if (onRetry) onRetry(wait);
        await sleep(wait * 1000);
        continue;
      }
      throw new Error(await errorText(resp));
    }
  }

  async function loadConfig() {
    try {
      const resp = await fetch("v1/config", { headers: authHeaders() });
      if (!resp.ok) {
        configLine.textContent = `settings not available: ${await errorText(resp)}`;
        configLine.classList.add("error");
        return;
      }
      config = await resp.json();
      configLine.classList.remove("error");
      const restorers = (config.restorers || []).join(", ") || "none";
      configLine.textContent = `metric ${config.metric}` + (config.model ? ` on ${config.model}` : "") +
        ` · restorers: ${restorers} · up to ${fmtBytes(config.max_upload_bytes)} per file`;
      for (const { card, file } of finished) addRestoreButtons(card, file, config.restorers || []);
    } catch (e) {
      configLine.textContent = `settings not available: ${e.message}`;
      configLine.classList.add("error");
    }
  }

  keyBox.addEventListener("change", () => {
    try { sessionStorage.setItem(KEY_STORE, keyBox.value.trim()); } catch (e) { /* storage disabled */ }
    loadConfig();
  });

  opacity.addEventListener("input", () => {
    for (const img of cards.querySelectorAll(".heatmap")) img.style.opacity = opacity.value / 100;
  });

  function newCard(file) {
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.name = file.name;
    $(".name", card).textContent = file.name;
    cards.appendChild(card);
    return card;
  }

  function showError(card, file, message) {
    card.classList.add("failed");
    $(".status", card).hidden = true;
    const box = $(".error", card);
    box.textContent = message.startsWith(file.name) ? message : `${file.name}: ${message}`;
    box.hidden = false;
  }

  // The service's heatmap is grey (0 = fine, 255 = worst): coloured here, blue to yellow to red, and more opaque
  // where worse, so that the photo stays visible where it is fine. A colour PNG is kept as it is.
  const STOPS = [[0, [49, 54, 149]], [0.25, [116, 173, 209]], [0.5, [255, 255, 191]], [0.75, [244, 109, 67]],
    [1, [165, 0, 38]]];
  function colourOf(v) {
    for (let i = 1; i < STOPS.length; i++) {
      const [t1, c1] = STOPS[i];
      if (v <= t1) {
        const [t0, c0] = STOPS[i - 1];
        const f = (v - t0) / (t1 - t0);
        return c0.map((c, k) => Math.round(c + f * (c1[k] - c)));
      }
    }
    return STOPS[STOPS.length - 1][1];
  }
  const LUT = Array.from({ length: 256 }, (_, i) => colourOf(i / 255));

  function colourHeatmap(src) {
    return new Promise((resolve) => {
      const grey = new Image();
      grey.onload = () => {
        try {
          const canvas = document.createElement("canvas");
          canvas.width = grey.naturalWidth;
          canvas.height = grey.naturalHeight;
          const ctx = canvas.getContext("2d");
          ctx.drawImage(grey, 0, 0);
          const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
          const px = data.data;
          for (let i = 0; i < px.length; i += 4) {
            if (px[i] !== px[i + 1] || px[i] !== px[i + 2]) { resolve(src); return; }  // already in colour
          }
          for (let i = 0; i < px.length; i += 4) {
            const v = px[i];
            const [r, g, b] = LUT[v];
            px[i] = r; px[i + 1] = g; px[i + 2] = b; px[i + 3] = Math.round(60 + 195 * v / 255);
          }
          ctx.putImageData(data, 0, 0);
          resolve(canvas.toDataURL("image/png"));
        } catch (e) {
          resolve(src);
        }
      };
      grey.onerror = () => resolve(src);
      grey.src = src;
    });
  }

  function render(card, file, result) {
    $(".status", card).hidden = true;
    $(".error", card).hidden = true;
    card.classList.remove("failed");
    card.dataset.score = result.score;
    const photo = $(".photo", card);
    const heat = $(".heatmap", card);
    photo.onerror = () => {  // a format the browser cannot show (the server decoded it): the heatmap alone
      photo.hidden = true;
      heat.style.position = "static";
      heat.style.opacity = 1;
    };
    photo.src = URL.createObjectURL(file);
    heat.style.opacity = opacity.value / 100;
    colourHeatmap(`data:image/png;base64,${result.heatmap_png}`).then((url) => { heat.src = url; });
    $(".metric", card).textContent = result.metric;
    $(".score", card).textContent = fmt(result.score);

    const attrs = $(".attributes", card);
    attrs.replaceChildren();
    for (const [name, value] of Object.entries(result.attributes || {})) {
      const li = document.createElement("li");
      li.dataset.attribute = name;
      const label = document.createElement("span");
      label.textContent = name;
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
      bar.appendChild(fill);
      const num = document.createElement("span");
      num.textContent = fmt(value, 2);
      li.append(label, bar, num);
      attrs.appendChild(li);
    }

    const regions = $(".regions", card);
    regions.replaceChildren();
    for (const r of (result.regions || []).slice(0, 3)) {
      const li = document.createElement("li");
      li.dataset.score = r.score;
      const strong = document.createElement("strong");
      strong.textContent = fmt(r.score, 3);
      const area = r.area <= 1 ? `${(r.area * 100).toFixed(0)}% of the image` : `${r.area} px`;
      const dims = Object.entries(r.dimensions || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
      li.append(strong, ` region ${r.label}, ${area}: ${r.description || "no description"}`);
      if (dims) li.title = dims;
      regions.appendChild(li);
    }
    if (!regions.children.length) {
      const li = document.createElement("li");
      li.textContent = "no regions";
      regions.appendChild(li);
    }
    $(".body", card).hidden = false;
    finished.push({ card, file });
    addRestoreButtons(card, file, (config && config.restorers) || result.restorers || []);
  }

  function addRestoreButtons(card, file, names) {
    const box = $(".restorers", card);
    for (const name of names) {
      if (box.querySelector(`button[data-method="${CSS.escape(name)}"]`)) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "restore-button";
      button.dataset.method = name;
      button.textContent = `Restore with ${name}`;
      button.addEventListener("click", () => restore(card, file, name, button));
      box.appendChild(button);
    }
  }

  async function restore(card, file, method, button) {
    const status = $(".status", card);
    for (const b of card.querySelectorAll(".restore-button")) b.disabled = true;
    status.textContent = `restoring with ${method}…`;
    status.hidden = false;
    $(".error", card).hidden = true;
    try {
      const resp = await post("v1/restore", () => {
        const form = new FormData();
        form.append("file", file, file.name);
        form.append("method", method);
        return form;
      }, (wait) => { status.textContent = `server busy, retrying in ${wait} s…`; });
      const blob = await resp.blob();
      const box = $(".restored", card);
      $(".before", box).src = $(".photo", card).src || URL.createObjectURL(file);
      const after = $(".after", box);
      if (after.src.startsWith("blob:")) URL.revokeObjectURL(after.src);
      after.src = URL.createObjectURL(blob);
      $(".method", box).textContent = method;
      $(".score-before", box).textContent = fmt(resp.headers.get("X-Clipiq-Score-Before"));
      $(".score-after", box).textContent = fmt(resp.headers.get("X-Clipiq-Score-After"));
      box.hidden = false;
      status.hidden = true;
    } catch (e) {
      status.hidden = true;
      const err = $(".error", card);
      err.textContent = `${file.name}: restore with ${method} failed: ${e.message}`;
      err.hidden = false;
    } finally {
      for (const b of card.querySelectorAll(".restore-button")) b.disabled = false;
    }
  }

  async function explain(card, file) {
    const status = $(".status", card);
    if (config && config.max_upload_bytes && file.size > config.max_upload_bytes) {
      showError(card, file, `the file is ${fmtBytes(file.size)}, over this server's limit of ` +
        `${fmtBytes(config.max_upload_bytes)} (too_large)`);
      return;
    }
    status.textContent = "scoring…";
    try {
      const resp = await post("v1/explain", () => {
        const form = new FormData();
        form.append("file", file, file.name);
        return form;
      }, (wait) => { status.textContent = `server busy, retrying in ${wait} s…`; });
      render(card, file, await resp.json());
    } catch (e) {
      showError(card, file, e.message);
    }
  }

  // A small pool: CONCURRENCY uploads at a time, in the order the files came.
  const pending = [];
  let running = 0;
  function pump() {
    while (running < CONCURRENCY && pending.length) {
      const { card, file } = pending.shift();
      running++;
      explain(card, file).finally(() => { running--; pump(); });
    }
  }

  function addFiles(fileList) {
    for (const file of fileList) pending.push({ card: newCard(file), file });
    pump();
  }

  const input = $("#files");
  input.addEventListener("change", () => {
    addFiles(Array.from(input.files));
    input.value = "";  // the same file may be picked again
  });

  const drop = $("#drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles(Array.from(e.dataTransfer.files));
  });
  // A file dropped beside the zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  loadConfig();
})();
