// lightyard's page: the served model from /info, and an upload form that posts to /predict.
"use strict";

const $ = (id) => document.getElementById(id);

function text(parent, tag, content, className) {
  const node = document.createElement(tag);
  node.textContent = content;
  if (className) node.className = className;
  parent.appendChild(node);
  return node;
}

function describe(info) {
  $("tag").textContent = info.model;
  $("stage").textContent = info.stage && info.stage !== "none" ? info.stage : "";
  document.title = `lightyard · ${info.model}`;
  const spec = info.preprocess;
  const rows = {
    runtime: `${info.runtime} on ${info.device}`,
    input: `${spec.height}×${spec.width}, ${spec.channels === 1 ? "grayscale" : "RGB"}`,
    resize: spec.resize_policy + (spec.resize_size ? ` (${spec.resize_size})` : ""),
    normalize: `mean ${spec.mean.map((m) => m.toFixed(3)).join(", ")} · std ${spec.std.map((s) => s.toFixed(3)).join(", ")}`,
    formats: info.formats.join(", "),
  };
  for (const [name, value] of Object.entries(rows)) {
    text($("model"), "dt", name);
    text($("model"), "dd", value);
  }
  $("classes").textContent = spec.class_names.join(", ");
  // the evaluation figures: the last per-step training values (train/loss_step, …) are noise to a visitor
  const evaluation = Object.entries(info.metrics).filter(([name]) => /^(test|val)\//.test(name));
  for (const [name, value] of evaluation.sort()) {
    const row = $("metrics").insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = typeof value === "number" ? value.toFixed(4) : String(value);
  }
  $("curl").textContent = `curl -F image=@digit.png ${location.origin}/predict`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("result").hidden = true;
}

async function classify(file) {
  $("error").hidden = true;
  const form = new FormData();
  form.append("image", file, file.name);
  let answer;
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    answer = await response.json();
    if (!response.ok) return showError(answer.error || `the server answered ${response.status}`);
  } catch (err) {
    return showError(`no answer from the server: ${err}`);
  }
  $("preview").src = URL.createObjectURL(file);
  const list = $("predictions");
  list.replaceChildren();
  for (const prediction of answer.predictions) {
    const item = document.createElement("li");
    item.dataset.label = prediction.label;
    text(item, "span", `${prediction.label} `, "label");
    text(item, "span", `${(100 * prediction.probability).toFixed(1)}%`, "probability");
    text(item, "div", "", "bar").style.width = `${100 * prediction.probability}%`;
    list.appendChild(item);
  }
  $("result").hidden = false;
}

function wireUpload() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => event.target.files[0] && classify(event.target.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) classify(event.dataTransfer.files[0]);
  });
}

wireUpload();
fetch("/info").then((response) => response.json()).then(describe)
  .catch((err) => showError(`could not read /info: ${err}`));
