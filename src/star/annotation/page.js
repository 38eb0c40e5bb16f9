// star annotate: every text from the server is shown with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const who = params.get("annotator") || "";
let data = null;   // the last /api/items reply
let pos = 0;       // index of the item shown
let busy = false;  // a submission is in flight
let keys = {};     // shortcut key -> choice

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text || "";
  el.className = kind || "";
}

function choiceKeys(choices) {
  // 1..9 always; also the first letter when the first letters are distinct (t/f, a/b/c/d).
  const out = {};
  choices.forEach((c, i) => { if (i < 9) out[String(i + 1)] = c; });
  const firsts = choices.map((c) => c.charAt(0).toLowerCase());
  if (new Set(firsts).size === firsts.length && firsts.every((k) => /[a-z]/.test(k) && k !== "=")) {
    choices.forEach((c, i) => { out[firsts[i]] = c; });
  }
  return out;
}

function firstOpen(from) {
  const items = data.items;
  for (let k = 0; k < items.length; k++) {
    const i = (from + k) % items.length;
    if (items[i].answer === null) return i;
  }
  return -1;
}

async function load() {
  let reply;
  try {
    const res = await fetch("/api/items", { cache: "no-store" });
    reply = await res.json();
    if (!res.ok) { showFatal(reply); return; }
  } catch (err) {
    showFatal({ error: "cannot reach the star server: " + err });
    return;
  }
  data = reply;
  keys = data.choices ? choiceKeys(data.choices) : {};
  const open = firstOpen(0);
  pos = open >= 0 ? open : Math.max(0, data.items.length - 1);
  buildChoices();
  render();
}

function showFatal(reply) {
  $("progress-text").textContent = "";
  $("done").hidden = false;
  $("done-text").textContent = (reply.error || "error") + (reply.hint ? " — " + reply.hint : "");
}

function buildChoices() {
  const box = $("choices");
  box.replaceChildren();
  const help = [];
  if (!data.choices) { $("choice-help").textContent = ""; return; }
  const byChoice = {};
  for (const [k, c] of Object.entries(keys)) (byChoice[c] = byChoice[c] || []).push(k);
  data.choices.forEach((c) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "choice";
    b.dataset.choice = c;
    const shortcut = document.createElement("kbd");
    shortcut.textContent = (byChoice[c] || []).join("/");
    b.append(shortcut, document.createTextNode(" " + c));
    b.addEventListener("click", () => pick(c));
    box.append(b);
    help.push((byChoice[c] || []).join("/") + " " + c);
  });
  $("choice-help").textContent = " · " + help.join(" · ");
}

function pick(choice) {
  $("answer").value = choice;
  markPicked();
}

function markPicked() {
  const v = $("answer").value.trim().toLowerCase();
  for (const b of $("choices").children) b.classList.toggle("picked", b.dataset.choice.toLowerCase() === v);
}

function renderStrip() {
  const strip = $("strip");
  strip.replaceChildren();
  data.items.forEach((it, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = String(i + 1);
    b.title = it.id;
    if (it.answer !== null) b.classList.add("done");
    if (i === pos) b.classList.add("current");
    b.addEventListener("click", () => go(i));
    strip.append(b);
  });
}

function render() {
  const items = data.items;
  const labelled = items.filter((it) => it.answer !== null).length;
  $("title").textContent = `star · ${data.run} · round ${data.round}`;
  $("progress-text").textContent = `Item ${items.length ? pos + 1 : 0} of ${items.length} · ${labelled} labelled`;
  $("progress").max = Math.max(1, items.length);
  $("progress").value = labelled;
  renderStrip();
  const allDone = items.length > 0 && labelled === items.length;
  $("done").hidden = !allDone;
  $("done-text").textContent = allDone ? `All ${items.length} items are labelled. Train on them with: ${data.resume}` : "";
  if (!items.length) return;
  const it = items[pos];
  for (const id of ["item", "suggestion-card", "answer-card"]) $(id).hidden = false;
  $("item-id").textContent = `· ${it.id}`;
  $("question").textContent = it.question;
  $("suggestion").textContent = it.suggestion || "(none: no answer found in the model's output)";
  $("score").textContent = typeof it.score === "number" ? it.score.toFixed(3) : "n/a";
  const raw = (it.raw_output || "").trim();
  $("raw").textContent = raw && raw !== (it.suggestion || "") ? "model output: " + raw : "";
  const committed = it.answer !== null;
  $("open").hidden = committed;
  $("committed").hidden = !committed;
  $("committed").textContent = committed ? `Saved: ${it.answer}  (by ${it.annotator})` : "";
  $("back").disabled = pos === 0;
  $("next").disabled = pos >= items.length - 1;
  if (!committed) {
    $("answer").value = "";
    markPicked();
    if (!data.choices) $("answer").focus(); else $("answer").blur();
  }
}

function go(i) {
  if (!data || i < 0 || i >= data.items.length) return;
  pos = i;
  setStatus("");
  render();
}

async function submit() {
  if (busy || !data || !data.items.length) return;
  const it = data.items[pos];
  if (it.answer !== null) return;
  const answer = $("answer").value;
  if (!answer.trim()) { setStatus("Write an answer first.", "error"); return; }
  busy = true;
  $("submit").disabled = true;
  setStatus("Saving…");
  try {
    const body = { id: it.id, answer: answer };
    if (who) body.annotator = who;
    const res = await fetch("/api/label", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const reply = await res.json();
    if (res.ok) {
      it.answer = reply.answer;
      it.annotator = reply.annotator;
      const next = firstOpen(pos + 1);
      pos = next >= 0 ? next : pos;
      render();
      setStatus(`Saved ${reply.id}.`, "ok");
    } else if (res.status === 409) {
      await load();
      setStatus((reply.error || "conflict") + " — the page was refreshed.", "error");
    } else {
      setStatus((reply.error || "refused") + (reply.hint ? " — " + reply.hint : ""), "error");
    }
  } catch (err) {
    setStatus("Not saved: cannot reach the star server (" + err + ").", "error");
  } finally {
    busy = false;
    $("submit").disabled = false;
  }
}

function onKey(ev) {
  if (!data || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const inField = ev.target === $("answer");
  const empty = $("answer").value === "";
  if (ev.key === "Enter") { ev.preventDefault(); submit(); return; }
  if (ev.key === "Escape" && inField) { $("answer").blur(); return; }
  if (ev.key === "ArrowLeft" && (!inField || empty)) { ev.preventDefault(); go(pos - 1); return; }
  if (ev.key === "ArrowRight" && (!inField || empty)) { ev.preventDefault(); go(pos + 1); return; }
  if (inField) return;
  const open = data.items.length && data.items[pos].answer === null;
  if (!open) return;
  if (ev.key === "=") { ev.preventDefault(); $("answer").value = data.items[pos].suggestion || ""; markPicked(); return; }
  const choice = keys[ev.key.toLowerCase()];
  if (choice !== undefined) { ev.preventDefault(); pick(choice); }
}

$("submit").addEventListener("click", submit);
$("use").addEventListener("click", () => { $("answer").value = data.items[pos].suggestion || ""; markPicked(); });
$("back").addEventListener("click", () => go(pos - 1));
$("next").addEventListener("click", () => go(pos + 1));
$("answer").addEventListener("input", markPicked);
document.addEventListener("keydown", onKey);
load();
