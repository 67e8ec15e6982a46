// The page of `ovml serve`: sends the image and labels to POST /api/predict and draws the answer.
// Scores come from the server (the same code path as `ovml predict`); this file only presents them.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, vocabulary: [], attention: false, sequence: 0, timer: null };
const SUGGESTIONS = 14;
const TOKEN_KEY = "ovml-serve-token";  // kept for this tab only (sessionStorage)

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = kind || "";
  document.body.dataset.state = kind || "ready";
}

function typedNames() {
  const names = $("labels").value.split(",").map((n) => n.trim()).filter((n) => n);
  return [...new Set(names)];
}

function later(delay) {
  clearTimeout(state.timer);
  state.timer = setTimeout(tag, delay);
}

// --- the image -------------------------------------------------------------------------------
function useFile(file) {
  if (!file) return;
  state.file = file;
  const preview = $("preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-hint").hidden = true;
  later(0);
}

function setUpDrop() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => useFile(event.target.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    useFile(event.dataTransfer.files[0]);
  });
}

// --- the vocabulary offered ------------------------------------------------------------------
function showSuggestions() {
  const box = $("suggestions");
  box.replaceChildren();
  if (!state.vocabulary.length) return;
  const parts = $("labels").value.split(",");
  const fragment = parts[parts.length - 1].trim().toLowerCase();
  const typed = new Set(typedNames());
  const open = state.vocabulary.filter((name) => !typed.has(name) && name.toLowerCase().includes(fragment));
  open.sort((a, b) => a.toLowerCase().startsWith(fragment) === b.toLowerCase().startsWith(fragment) ? 0
    : a.toLowerCase().startsWith(fragment) ? -1 : 1);
  for (const name of open.slice(0, SUGGESTIONS)) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.addEventListener("click", () => {
      const kept = $("labels").value.split(",").slice(0, -1).map((n) => n.trim()).filter((n) => n);
      $("labels").value = [...kept, name].join(", ") + ", ";
      $("labels").focus();
      showSuggestions();
      later(0);
    });
    box.appendChild(button);
  }
}

// --- asking the server -----------------------------------------------------------------------
function withToken(options) {  // the token a server started with --token asks for, when one was given
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...options, headers: { Authorization: `Bearer ${token}` } } : options;
}

function askForToken(message) {
  $("login").hidden = false;
  $("token").focus();
  setStatus(message, "error");
}

async function tag() {
  const names = typedNames();
  if (!state.file) { setStatus("Pick or drop an image."); return; }
  if (!names.length) { setStatus("Type some labels, comma-separated."); return; }
  const form = new FormData();
  form.append("image", state.file);
  form.append("labels", names.join(", "));
  form.append("top_k", String(names.length));
  form.append("alpha", $("alpha").value);
  form.append("attention", state.attention ? "1" : "0");
  if (state.calibrated && $("decide").checked) form.append("threshold", "auto");
  const sequence = ++state.sequence;
  setStatus("Scoring…", "busy");
  $("tag").disabled = true;
  try {
    const response = await fetch("/api/predict", withToken({ method: "POST", body: form }));
    const answer = await response.json();
    if (sequence !== state.sequence) return;  // a newer request is on its way
    if (response.status === 401) { askForToken(answer.error); return; }
    if (!response.ok) { setStatus(answer.error || `error ${response.status}`, "error"); return; }
    await render(answer);
    const decided = state.calibrated && $("decide").checked;
    setStatus(`${answer.labels.length} labels ${decided ? "judged present" : "ranked"} (alpha ${Number($("alpha").value).toFixed(2)}).`, "done");
  } catch (err) {
    if (sequence === state.sequence) setStatus(`The server did not answer (${err}).`, "error");
  } finally {
    if (sequence === state.sequence) $("tag").disabled = false;
  }
}

// --- the answer ------------------------------------------------------------------------------
function jet(t) {  // matplotlib's "jet", as the --explain figures use
  const channel = (offset) => Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - offset))));
  return [channel(3), channel(2), channel(1)];
}

function heat(map, grid) {
  const [height, width] = grid;
  const low = Math.min(...map), high = Math.max(...map);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(width, height);
  map.forEach((value, i) => {
    const [r, g, b] = jet(high > low ? (value - low) / (high - low) : 0.5);
    pixels.data.set([r, g, b, 115], 4 * i);
  });
  context.putImageData(pixels, 0, 0);
  return canvas;
}

function loadImage(source) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = reject;
    image.src = source;
  });
}

async function render(answer) {
  const list = $("ranked");
  list.replaceChildren();
  const scores = answer.labels.map((label) => label.score);
  const low = Math.min(...scores), high = Math.max(...scores);
  const view = answer.attention ? await loadImage(answer.attention.view) : null;
  $("legend").hidden = !view;
  answer.labels.forEach((label, index) => {
    const item = document.createElement("li");
    const head = document.createElement("div");
    head.className = "head";
    const name = document.createElement("span");
    name.innerHTML = `<span class="rank">${index + 1}.</span>`;
    const text = document.createElement("span");
    text.className = "name";
    text.textContent = label.name;
    name.appendChild(text);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = label.score.toFixed(4);
    head.append(name, score);
    if ("probability" in label) {
      const probability = document.createElement("span");
      probability.className = "probability";
      probability.textContent = `p ${label.probability.toFixed(2)}`;
      head.append(probability);
    }
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${high > low ? 8 + 92 * (label.score - low) / (high - low) : 100}%`;
    bar.appendChild(fill);
    item.append(head, bar);
    if (view) item.appendChild(attentionCanvas(view, answer.attention.maps[index], answer.attention.grid, label.name));
    list.appendChild(item);
  });
}

function attentionCanvas(view, map, grid, name) {
  const canvas = document.createElement("canvas");
  canvas.className = "attention";
  canvas.width = canvas.height = 256;
  canvas.title = `attention of "${name}"`;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.drawImage(view, 0, 0, canvas.width, canvas.height);
  context.drawImage(heat(map, grid), 0, 0, canvas.width, canvas.height);
  canvas.dataset.drawn = "1";
  return canvas;
}

// --- start -----------------------------------------------------------------------------------
async function start() {
  setUpDrop();
  $("labels").addEventListener("input", () => { showSuggestions(); later(600); });
  $("labels").addEventListener("focus", showSuggestions);
  $("labels").addEventListener("keydown", (event) => { if (event.key === "Enter") later(0); });
  $("alpha").addEventListener("input", () => {
    $("alpha-value").textContent = Number($("alpha").value).toFixed(2);
    later(250);
  });
  $("decide").addEventListener("change", () => later(0));
  $("tag").addEventListener("click", () => later(0));
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    loadInfo();
  });
  await loadInfo();
}

async function loadInfo() {
  try {
    const response = await fetch("/api/info", withToken({}));
    const info = await response.json();
    if (response.status === 401) { askForToken(info.error); return; }
    $("login").hidden = true;
    state.vocabulary = info.vocabulary || [];
    state.attention = Boolean(info.attention);
    state.calibrated = Boolean(info.calibrated);
    $("decide-field").hidden = !state.calibrated;
    $("model").textContent = `CLIP ${info.model}` + (info.head ? ` · head ${info.head}` : " · CLIP-ML alone");
    $("vocabulary-title").textContent = state.vocabulary.length
      ? `The run's vocabulary (${state.vocabulary.length} labels), click to add; any other word works too:` : "";
    $("no-maps").hidden = state.attention;
    $("alpha").disabled = !info.head;
    showSuggestions();
    setStatus("Pick or drop an image, then type labels.");
  } catch (err) {
    setStatus(`Could not reach the server (${err}).`, "error");
  }
}

start();
