// The Annotate widget (Gradio gr.HTML js_on_load: `element`, `props`, `server`, `watch` are given).
// Every action goes to the server's `act` function in order, one at a time; an action whose reply was
// lost is sent again with the same client id (the store records it once). The page shows the server's
// view after the last acknowledged action, so what is displayed is what is on disk.
let box = element.querySelector(".annotate-root");
let view = null, strings = {}, cursor = 0, editing = false, advancing = false, loading = 0;
const busy = () => loading > 0 || advancing;  // a view is loading or the next item is on its way
const queue = [];
let sending = false, unsaved = 0, failures = 0, lastError = "", notice = "";  // notice: a check of this page, kept until the next key

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const newId = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`);
const t = (key, values = {}) => (strings[key] || key).replace(/\{(\w+)\}/g, (_, k) => values[k] ?? "");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const letter = (i) => String.fromCharCode(65 + i);
function context() {
  let value = {};
  try { value = JSON.parse(props.value || "{}"); } catch (e) { value = {}; }
  return {project: value.project || "", annotator: value.annotator || "", lang: value.lang || "en"};
}

async function call(op, extra) {
  for (;;) {
    try {
      const reply = await server.act({...context(), op, ...extra});
      failures = 0;
      return reply;
    } catch (e) {
      failures += 1;
      renderStatus();
      await sleep(Math.min(500 * failures, 3000));
    }
  }
}

function show(reply) {
  strings = reply.strings || strings;
  if (!reply.ok) {
    lastError = reply.error;
    if (reply.view !== undefined) view = reply.view;
  } else {
    lastError = "";
    const sameItem = view && reply.view && view.item && reply.view.item && view.item.id === reply.view.item.id;
    view = reply.view;
    if (!sameItem) { cursor = 0; editing = false; }
  }
  render();
}

async function load(itemId) {
  loading += 1;
  try {
    show(await call("view", {item_id: itemId ?? null}));
  } finally {
    loading -= 1;
  }
  render();
  while (deferred.length && !busy()) press(deferred.shift());
}

async function pump() {
  if (sending) return;
  sending = true;
  while (queue.length) {
    const action = queue[0];
    renderStatus();
    const reply = await call("action", action);
    queue.shift();
    unsaved = queue.length;
    if (!reply.ok) {
      queue.length = 0;  // what followed a refused action was based on it
      unsaved = 0;
      show(reply);
      break;
    }
    if (!queue.length) show(reply);
  }
  sending = false;
  advancing = false;
  renderStatus();
}

function enqueue(kind, payload, done = false) {
  if (!view || !view.item) return;
  queue.push({client_id: newId(), item_id: view.item.id, kind, payload});
  unsaved = queue.length;
  if (done) advancing = true;  // the next item comes with the reply
  pump();
}

function setRank(i, rank) {
  const c = view.candidates[i];
  if (!c || view.status !== "open") return;
  c.rank = rank;
  enqueue("rank", {candidate: c.id, rank});
  if (rank !== null) {
    const next = view.candidates.findIndex((x, j) => j > i && x.rank == null);
    const first = view.candidates.findIndex((x) => x.rank == null);
    cursor = next >= 0 ? next : first >= 0 ? first : i;
  }
  render();
}

function submit() {
  if (view.status !== "open") { notice = t("ann_done_already"); return render(); }
  const missing = view.candidates.filter((c) => c.rank == null).map((c, _) => letter(view.candidates.indexOf(c)));
  if (missing.length) { notice = t("ann_rank_all", {missing: missing.join(", ")}); return render(); }
  const ranks = Object.fromEntries(view.candidates.map((c) => [c.id, c.rank]));
  enqueue("submit", {ranks}, true);
}

function best() {
  const ranked = view.candidates.filter((c) => c.rank != null);
  if (!ranked.length) return null;
  const top = Math.min(...ranked.map((c) => c.rank));
  return view.candidates.find((c) => c.rank === top);
}

function startEdit() {
  if (view.status !== "open") return;
  const b = best();
  if (!b) { notice = t("ann_edit_needs_best"); return render(); }
  editing = true;
  render();
  const area = box.querySelector("textarea.ann-edit-text");
  area.value = view.edit ?? b.text;
  area.focus();
}

function saveEdit() {
  const area = box.querySelector("textarea.ann-edit-text");
  const b = best();
  const text = area.value;
  view.edit = b && text.trim() === b.text.trim() ? null : text;
  editing = false;
  enqueue("edit", {text: view.edit ?? ""});
  render();
}

function renderStatus() {
  const el = box.querySelector(".ann-save");
  if (!el) return;
  el.className = "ann-save " + (failures ? "bad" : unsaved ? "busy" : "ok");
  el.textContent = failures ? t("ann_offline") : unsaved ? t("ann_saving", {n: unsaved}) : t("ann_saved");
}

function render() {
  if (!view) { box.innerHTML = `<p class="ann-empty">${esc(lastError || t("ann_pick_project"))}</p>`; return; }
  const people = Object.entries(view.per_annotator || {}).map(([name, n]) => `${esc(name)} ${n}`).join(" · ");
  let html = `<div class="ann-head"><b>${esc(t("ann_progress", {done: view.done, total: view.total}))}</b>`
    + (people ? `<span class="ann-people">${esc(t("ann_everyone"))}: ${people}</span>` : "")
    + `<span class="ann-save"></span></div>`;
  if (view.guideline_html) {
    html += `<details class="ann-guide" open><summary>${esc(t("ann_guideline"))}</summary>${view.guideline_html}</details>`;
  }
  if (lastError || notice) html += `<div class="ann-error" role="alert">${esc(lastError || notice)}</div>`;
  if (view.finished) {
    html += `<p class="ann-finished">${esc(t("ann_finished", {total: view.total}))}</p>`;
    box.innerHTML = html;
    return renderStatus();
  }
  const item = view.item;
  html += `<div class="ann-item"><div class="ann-where">${esc(t("ann_item", {position: view.position, total: view.total, id: item.id}))}`
    + ` · <span class="ann-status ann-status-${view.status}">${esc(t("ann_status_" + view.status))}</span></div>`;
  if (item.system) html += `<div class="ann-system"><b>${esc(t("ann_system"))}</b> ${esc(item.system)}</div>`;
  for (const [q, a] of item.history || []) {
    html += `<div class="ann-turn"><b>${esc(t("ann_user"))}</b> ${esc(q)}</div><div class="ann-turn"><b>${esc(t("ann_assistant"))}</b> ${esc(a)}</div>`;
  }
  html += `<div class="ann-prompt">${item.prompt_html}</div></div><div class="ann-cands">`;
  const k = view.candidates.length;
  view.candidates.forEach((c, i) => {
    const buttons = Array.from({length: k}, (_, r) => `<button class="ann-rank-btn${c.rank === r + 1 ? " on" : ""}" data-i="${i}" data-rank="${r + 1}">${r + 1}</button>`).join("");
    html += `<div class="ann-cand${i === cursor ? " cur" : ""}" data-i="${i}" data-candidate="${esc(c.id)}">`
      + `<div class="ann-cand-head"><span class="ann-letter">${letter(i)}</span>`
      + `<span class="ann-rank">${c.rank == null ? esc(t("ann_unranked")) : esc(t("ann_rank", {rank: c.rank}))}</span>`
      + `<span class="ann-rank-btns">${buttons}<button class="ann-rank-btn clear" data-i="${i}" data-rank="0">×</button></span></div>`
      + `<details class="ann-body" ${c.text.length > 1500 ? "" : "open"}><summary>${esc(t("ann_chars", {n: c.text.length}))}</summary>`
      + `<div class="ann-md">${c.html}</div></details></div>`;
  });
  html += "</div>";
  if (editing) {
    html += `<div class="ann-edit"><b>${esc(t("ann_edit_title"))}</b><textarea class="ann-edit-text" rows="6"></textarea>`
      + `<div class="ann-keys">${esc(t("ann_edit_keys"))}</div><button class="ann-btn" data-act="save-edit">${esc(t("ann_edit_save"))}</button></div>`;
  } else if (view.edit) {
    html += `<div class="ann-edited"><b>${esc(t("ann_edited"))}</b><div class="ann-md">${view.edit_html || esc(view.edit)}</div></div>`;
  }
  const open = view.status === "open";
  html += `<div class="ann-actions">`
    + (open ? `<button class="ann-btn primary" data-act="submit">${esc(t("ann_submit"))}</button>`
      + `<button class="ann-btn" data-act="skip">${esc(t("ann_skip"))}</button>`
      + `<button class="ann-btn" data-act="flag">${esc(t("ann_flag"))}</button>`
      + `<button class="ann-btn" data-act="edit">${esc(t("ann_edit"))}</button>`
      : `<button class="ann-btn" data-act="reopen">${esc(t("ann_reopen"))}</button>`)
    + `<button class="ann-btn" data-act="prev" ${view.prev_id == null ? "disabled" : ""}>${esc(t("ann_prev"))}</button>`
    + `<button class="ann-btn" data-act="next" ${view.next_id == null ? "disabled" : ""}>${esc(t("ann_next"))}</button>`
    + `</div><div class="ann-keys">${esc(t("ann_keys", {k}))}</div>`;
  box.innerHTML = html;
  renderStatus();
}

function perform(act) {
  if (!view || busy()) return;
  if (act === "submit") submit();
  else if (act === "skip" && view.status === "open") enqueue("skip", {}, true);
  else if (act === "flag" && view.status === "open") enqueue("flag", {reason: ""}, true);
  else if (act === "edit") startEdit();
  else if (act === "save-edit") saveEdit();
  else if (act === "reopen") { view.status = "open"; enqueue("reopen", {}); render(); }
  else if (act === "prev" && view.prev_id != null && !queue.length) load(view.prev_id);
  else if (act === "next" && view.next_id != null && !queue.length) load(view.next_id);
}

element.addEventListener("click", (e) => {
  const button = e.target.closest("button");
  if (!button || !view) return;
  notice = "";
  if (button.dataset.rank !== undefined) {
    const rank = Number(button.dataset.rank);
    cursor = Number(button.dataset.i);
    setRank(cursor, rank === 0 ? null : rank);
  } else if (button.dataset.act) {
    perform(button.dataset.act);
  }
});

function liveBox() {  // Gradio may re-render the template: draw into the root that is in the page now
  const root = element.querySelector(".annotate-root");
  if (root && root !== box) { box = root; render(); }
  return box;
}

function onKey(e) {
  if (!element.isConnected) { document.removeEventListener("keydown", onKey); return; }
  if (liveBox().offsetParent === null || (!loading && (!view || view.finished))) return;
  const inEdit = e.target.closest && e.target.closest("textarea.ann-edit-text");
  if (inEdit) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); saveEdit(); }
    else if (e.key === "Escape") { e.preventDefault(); editing = false; render(); }
    return;
  }
  if (e.target.closest && e.target.closest("input, textarea, select, [contenteditable]")) return;
  if (e.ctrlKey || e.metaKey || e.altKey || advancing) return;
  if (!KEYS.test(e.key)) return;
  e.preventDefault();
  if (loading) deferred.push(e.key);  // the same item is being reloaded: the key is meant for it
  else press(e.key);
}

const KEYS = /^([1-9]|0|Backspace|Delete|Enter|ArrowUp|ArrowDown|ArrowLeft|ArrowRight|j|k|[sSfFeErR])$/;
const deferred = [];

function press(key) {
  if (!view || view.finished) return;
  const k = view.candidates.length;
  notice = "";
  if (key === "ArrowDown" || key === "j") { cursor = Math.min(cursor + 1, k - 1); render(); }
  else if (key === "ArrowUp" || key === "k") { cursor = Math.max(cursor - 1, 0); render(); }
  else if (/^[1-9]$/.test(key)) { if (Number(key) <= k) setRank(cursor, Number(key)); }
  else if (key === "0" || key === "Backspace" || key === "Delete") setRank(cursor, null);
  else if (key === "Enter") perform("submit");
  else if (key === "s" || key === "S") perform("skip");
  else if (key === "f" || key === "F") perform("flag");
  else if (key === "e" || key === "E") perform("edit");
  else if (key === "r" || key === "R") { if (view.status !== "open") perform("reopen"); }
  else if (key === "ArrowLeft") perform("prev");
  else if (key === "ArrowRight") perform("next");
}

// One key handler per widget in the page: a re-mount into the same element (or after the old element left
// the page) replaces the old handler; the handler of an element that left the page removes itself.
const before = window.__alignlabAnnotateKeys;
if (!before || before.element === element || !before.element.isConnected) {
  if (before) document.removeEventListener("keydown", before.onKey);
  window.__alignlabAnnotateKeys = {element, onKey};
  // pending: actions not yet acknowledged plus views being loaded (keys pressed meanwhile wait for the view)
  window.__alignlabAnnotate = {pending: () => queue.length + (sending ? 1 : 0) + loading, view: () => view, props: () => props.value};
}
document.addEventListener("keydown", onKey);

watch("value", () => { box = element.querySelector(".annotate-root"); view = null; load(); });
load();
