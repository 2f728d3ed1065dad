// Identify and duplicates (issue 13): a drop zone that names the recording a clip comes from
// (POST /api/identify) and a duplicates view with players (GET /api/duplicates). Self-contained:
// it adds two header buttons and one dialog, and uses the page's existing styles.
(() => {
  "use strict";
  const el = (tag, attrs = {}, ...kids) => {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") n.className = v; else if (k === "text") n.textContent = v; else n.setAttribute(k, v);
    }
    for (const k of kids) n.append(k);
    return n;
  };
  const name = (p) => p.split("/").pop();
  const player = (id, start) => {
    const a = el("audio", { controls: "", preload: "none", src: `/api/items/${id}/audio#t=${Math.max(0, start || 0).toFixed(1)}` });
    a.style.width = "100%";
    return a;
  };

  function init() {
    const bar = document.querySelector(".topbar");
    const anchor = document.getElementById("open-index");
    if (!bar) return;
    const dialog = el("dialog", { class: "sheet wide", id: "identify-dialog", "aria-labelledby": "identify-title" });
    const title = el("h2", { id: "identify-title", text: "Identify a recording" });
    const close = el("button", { type: "button", class: "icon-btn close", "aria-label": "Close", text: "✕" });
    close.addEventListener("click", () => dialog.close());
    const body = el("div", { class: "sheet-body", id: "identify-body" });
    dialog.append(el("div", { class: "sheet-head" }, title, close), body);
    document.body.append(dialog);

    const idBtn = el("button", { type: "button", class: "btn ghost", id: "open-identify", text: "Identify" });
    const dupBtn = el("button", { type: "button", class: "btn ghost", id: "open-duplicates", text: "Duplicates" });
    bar.insertBefore(idBtn, anchor);
    bar.insertBefore(dupBtn, anchor);
    idBtn.addEventListener("click", () => { showIdentify(title, body); dialog.showModal(); });
    dupBtn.addEventListener("click", () => { showDuplicates(title, body); dialog.showModal(); });
  }

  function showIdentify(title, body) {
    title.textContent = "Identify a recording";
    const input = el("input", { type: "file", accept: "audio/*,video/*,.ogg,.opus,.flac,.m4a", hidden: "" });
    const zone = el("div", { class: "notice", id: "identify-drop", tabindex: "0", role: "button",
      text: "Drop a clip here (or click to choose one): a few seconds are enough, noisy or re-encoded." });
    zone.style.cssText = "border:2px dashed currentColor;padding:2rem;text-align:center;cursor:pointer";
    const out = el("div", { id: "identify-results", "aria-live": "polite" });
    body.replaceChildren(zone, input, out);
    zone.addEventListener("click", () => input.click());
    zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
    zone.addEventListener("dragover", (e) => { e.preventDefault(); e.stopPropagation(); });
    zone.addEventListener("drop", (e) => {
      e.preventDefault(); e.stopPropagation();
      if (e.dataTransfer.files.length) identify(e.dataTransfer.files[0], out);
    });
    input.addEventListener("change", () => { if (input.files.length) identify(input.files[0], out); });
  }

  async function identify(file, out) {
    out.replaceChildren(el("p", { class: "muted", text: `Listening to “${file.name}”…` }));
    const form = new FormData();
    form.append("file", file);
    try {
      const r = await fetch("/api/identify", { method: "POST", body: form });
      const data = await r.json();
      if (!r.ok) throw new Error(data.error || r.statusText);
      if (!data.matches.length) { out.replaceChildren(el("p", { text: "No match: this recording is not in the library." })); return; }
      const list = el("ol", { class: "results" });
      for (const m of data.matches) {
        const speed = Math.abs(m.speed - 1) > 0.002 ? ` · speed ${((m.speed - 1) * 100).toFixed(1)}%` : "";
        list.append(el("li", { class: "card" },
          el("div", { class: "card-head" }, el("b", { text: name(m.path) })),
          el("p", { class: "muted", text: `at ${m.offset} · confidence ${(m.confidence * 100).toFixed(0)}%${speed}` }),
          player(m.id, m.offset_s)));
      }
      out.replaceChildren(list);
    } catch (err) {
      out.replaceChildren(el("div", { class: "notice error", role: "alert", text: `Cannot identify: ${err.message}` }));
    }
  }

  async function showDuplicates(title, body) {
    title.textContent = "Duplicates";
    body.replaceChildren(el("p", { class: "muted", text: "Comparing fingerprints…" }));
    try {
      const r = await fetch("/api/duplicates");
      const data = await r.json();
      if (!r.ok) throw new Error(data.error || r.statusText);
      if (!data.groups.length) { body.replaceChildren(el("p", { text: "No duplicates in the library." })); return; }
      const list = el("ol", { class: "results", id: "duplicate-groups" });
      for (const g of data.groups) {
        const li = el("li", { class: "card" });
        for (const m of g.items) {
          const how = m.relation === "reference" ? "reference"
            : `${m.relation}${m.relation === "speed-changed" ? ` (${((m.speed - 1) * 100).toFixed(1)}%)` : ""}`
              + (m.relation === "excerpt" ? ` at ${m.offset}` : "");
          li.append(el("p", {}, el("b", { text: name(m.path) }), ` — ${how} · ${m.duration_s.toFixed(1)} s`),
            player(m.id, 0));
        }
        list.append(li);
      }
      body.replaceChildren(list);
    } catch (err) {
      body.replaceChildren(el("div", { class: "notice error", role: "alert", text: `Cannot list duplicates: ${err.message}` }));
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
