// soundscope web page: vanilla JS, no build step. Talks to the JSON API of the same server.
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const PAGE = 20;
  const EXAMPLES = ["dog barking", "下雨的声音", "piano music", "someone saying hello", "海浪", "a helicopter flying over", "slow waltz", "婴儿哭声"];
  const KIND_NAMES = { music: "Music", speech: "Speech", sound: "Sound" };
  const FILTER_KEYS = ["min_duration", "max_duration", "min_tempo", "max_tempo", "label"];

  const els = {
    q: $("#q"), form: $("#search-form"), file: $("#file"), uploadBtn: $("#upload-btn"),
    results: $("#results"), status: $("#status"), error: $("#error"), more: $("#more"), empty: $("#empty"),
    examples: $("#examples"), kind: $("#kind"), filters: $("#filters"), filtersToggle: $("#filters-toggle"),
    filterCount: $("#filter-count"), stats: $("#stats"), drop: $("#drop-overlay"), tpl: $("#result-tpl"),
    indexDialog: $("#index-dialog"), detailDialog: $("#detail-dialog"), detailBody: $("#detail-body"),
  };

  let config = { token_required: false, indexing: false, allow_roots: [], max_upload_mb: 20 };
  let current = null; // {mode: "search"|"like"|"upload", params, results, items, offset, hasMore}
  let seq = 0; // drops answers to superseded requests
  let active = null; // the card whose audio plays

  // ---------------------------------------------------------------- helpers
  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
    return el;
  }

  function clock(s) {
    if (!isFinite(s) || s < 0) s = 0;
    s = Math.floor(s);
    const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = String(s % 60).padStart(2, "0");
    return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
  }

  function amount(hours) {
    const m = hours * 60;
    if (m < 1) return `${Math.round(m * 60)} s`;
    if (m < 120) return `${Math.round(m)} min`;
    return `${(hours).toFixed(hours < 10 ? 1 : 0)} h`;
  }

  function splitPath(p) {
    const i = p.lastIndexOf("/");
    return i < 0 ? ["", p] : [p.slice(0, i), p.slice(i + 1)];
  }

  // "why" text: «word» becomes <mark>; a moment ("best moment 00:55", "says at 01:10") becomes a
  // button that plays from there (durations such as "1:05" in descriptions stay text).
  function richText(text, card) {
    const out = [];
    const re = /«([^»]*)»|\b(moment|at) (\d{1,2}:\d{2}(?::\d{2})?)\b/g;
    let last = 0, m;
    while ((m = re.exec(text))) {
      if (m.index > last) out.push(text.slice(last, m.index));
      if (m[1] != null) out.push(h("mark", { text: m[1] }));
      else if (card) {
        const t = m[3].split(":").reduce((a, b) => a * 60 + Number(b), 0);
        out.push(`${m[2]} `, h("button", { type: "button", class: "seek", title: `Play from ${m[3]}`, text: m[3], onclick: () => playAt(card, t) }));
      } else out.push(m[0]);
      last = re.lastIndex;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }

  async function api(path, opts = {}) {
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      throw new Error("Cannot reach the soundscope server. Is it still running?");
    }
    let body = null;
    try { body = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) {
      const err = new Error((body && body.error) || `${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  function showError(msg) {
    els.error.textContent = msg;
    els.error.hidden = !msg;
  }

  // ---------------------------------------------------------------- state <-> URL and controls
  function readControls() {
    const p = {};
    const kind = $('[aria-checked="true"]', els.kind).dataset.kind;
    if (kind) p.kind = kind;
    for (const k of FILTER_KEYS) {
      const v = $("#" + k).value.trim();
      if (v) p[k] = v;
    }
    return p;
  }

  function writeControls(p) {
    for (const b of els.kind.querySelectorAll("button")) b.setAttribute("aria-checked", String((p.kind || "") === b.dataset.kind));
    for (const k of FILTER_KEYS) $("#" + k).value = p[k] || "";
    syncFilterUi();
  }

  function syncFilterUi() {
    const p = readControls();
    const n = FILTER_KEYS.filter((k) => p[k]).length;
    els.filterCount.textContent = n;
    els.filterCount.hidden = !n;
    $("#tempo-fields").disabled = !!p.kind && p.kind !== "music";
  }

  function toQuery(p) {
    const s = new URLSearchParams();
    for (const [k, v] of Object.entries(p)) if (v != null && v !== "") s.set(k, v);
    return s.toString();
  }

  function fromUrl() {
    const s = new URLSearchParams(location.search);
    const p = {};
    for (const k of ["q", "like", "kind", ...FILTER_KEYS]) if (s.get(k)) p[k] = s.get(k);
    return p;
  }

  // ---------------------------------------------------------------- searching
  async function run(params, { push = true } = {}) {
    const filters = { ...params };
    delete filters.q; delete filters.like;
    if (params.like) return similar(params.like, null, filters, { push });
    if (!params.q) return reset();
    const url = "?" + toQuery(params);
    if (push && url !== location.search) history.pushState(params, "", url);
    els.q.value = params.q;
    writeControls(params);
    await fetchPage({ mode: "search", params, label: params.q }, 0);
  }

  async function similar(id, name, filters = readControls(), { push = true } = {}) {
    const params = { like: String(id), ...filters };
    const url = "?" + toQuery(params);
    if (push && url !== location.search) history.pushState(params, "", url);
    writeControls(params);
    els.q.value = "";
    await fetchPage({ mode: "like", params, label: name }, 0);
  }

  function buildUrl(state, offset) {
    const p = { ...state.params };
    delete p.like;
    if (state.mode === "search") { p.explain = offset === 0 ? "1" : ""; }
    const qs = toQuery({ ...p, limit: PAGE, offset });
    if (state.mode === "foryou") return `/api/recommend?limit=${PAGE}`;
    return state.mode === "search" ? `/api/search?${qs}` : `/api/similar/${encodeURIComponent(state.params.like)}?${qs}`;
  }

  async function fetchPage(state, offset) {
    const my = ++seq;
    showError("");
    document.body.classList.add("searched");
    if (offset === 0) { stopAudio(); els.results.replaceChildren(...skeletons(3)); els.more.hidden = true; els.empty.hidden = true; }
    else { els.more.disabled = true; els.more.textContent = "Loading…"; }
    try {
      const data = await api(buildUrl(state, offset));
      if (my !== seq) return;
      if (offset === 0) {
        current = { ...state, results: [], items: {}, hasMore: false, took: data.took_ms, explain: data.explain, understood: data.understood, like: data.like };
        els.results.replaceChildren();
      }
      addResults(data.results, data.items);
      current.hasMore = data.has_more;
      current.offset = offset + data.results.length;
      renderStatus();
    } catch (e) {
      if (my !== seq) return;
      if (offset === 0) { els.results.replaceChildren(); els.status.hidden = true; }
      showError(e.message);
    } finally {
      if (my === seq) { els.more.disabled = false; els.more.textContent = "Show more results"; els.more.hidden = !(current && current.hasMore); }
    }
  }

  async function upload(file) {
    if (!file) return;
    const my = ++seq;
    showError("");
    stopAudio();
    if (file.size > config.max_upload_mb * 1024 * 1024) {
      showError(`“${file.name}” is ${(file.size / 1048576).toFixed(1)} MB; clips can be at most ${config.max_upload_mb} MB.`);
      return;
    }
    document.body.classList.add("searched");
    els.results.replaceChildren(...skeletons(3));
    els.more.hidden = true; els.empty.hidden = true;
    els.status.hidden = false;
    els.status.replaceChildren(h("span", { text: `Listening to “${file.name}”…` }));
    history.pushState({}, "", "/");
    const form = new FormData();
    form.append("file", file, file.name);
    const filters = readControls();
    try {
      const data = await api(`/api/similar?${toQuery({ ...filters, limit: 100 })}`, { method: "POST", body: form });
      if (my !== seq) return;
      current = { mode: "upload", params: filters, label: file.name, results: [], items: {}, took: data.took_ms, like: data.like, pending: data.results, hasMore: false };
      els.results.replaceChildren();
      revealUploaded(data.items);
    } catch (e) {
      if (my !== seq) return;
      els.results.replaceChildren(); els.status.hidden = true;
      showError(e.message);
    } finally {
      els.file.value = "";
    }
  }

  function revealUploaded(items) {
    if (items) current.items = items;
    const next = current.pending.splice(0, PAGE);
    addResults(next, current.items);
    current.hasMore = current.pending.length > 0;
    els.more.hidden = !current.hasMore;
    renderStatus();
  }

  function reset() {
    seq++;
    stopAudio();
    current = null;
    document.body.classList.remove("searched");
    els.results.replaceChildren();
    els.status.hidden = true; els.more.hidden = true; els.empty.hidden = true;
    showError("");
    els.q.value = "";
  }

  function skeletons(n) {
    return Array.from({ length: n }, () => h("li", { class: "card skeleton", "aria-hidden": "true" },
      h("div", { class: "line", style: null }), h("div", { class: "blk" }), h("div", { class: "line" })));
  }

  function renderStatus() {
    const s = current;
    const n = s.results.length;
    const parts = [];
    if (s.mode === "foryou") {
      parts.push(h("span", { text: n ? "Recommended for you, from what you liked and played" : "Nothing to recommend yet: like a few results first" }));
    } else if (s.mode === "search") {
      const count = s.hasMore ? [h("strong", { text: String(n) }), " best matches for "] : [n ? h("strong", { text: String(n) }) : "No", ` result${n === 1 ? "" : "s"} for `];
      parts.push(h("span", {}, ...count, h("strong", { text: `“${s.label}”` })));
    } else {
      const name = s.mode === "upload" ? (s.like && s.like.upload) || s.label : (s.like && s.like.name) || s.label || `item ${s.params.like}`;
      parts.push(h("span", { text: n ? "Sounds like" : "Nothing sounds like" }));
      parts.push(h("span", { class: "like-pill" }, h("span", { text: name, title: name }),
        h("button", { type: "button", "aria-label": "Clear", title: "Clear", onclick: () => { history.pushState({}, "", "/"); reset(); els.q.focus(); } },
          svgIcon("M6 6l12 12M18 6 6 18"))));
    }
    const f = readControls();
    const active = Object.keys(f).length;
    if (active) parts.push(h("span", { class: "took", text: `${active} filter${active > 1 ? "s" : ""} on` }));
    if (s.took != null) parts.push(h("span", { class: "took", text: `${Math.round(s.took)} ms` }));
    const understood = understoodText(s);
    if (understood) parts.push(h("div", { class: "understood", text: understood }));
    els.status.replaceChildren(...parts);
    els.status.hidden = false;
    if (!n) renderEmpty(active);
  }

  // How the query was read, shown only when it says more than the words typed: constraints,
  // exclusions, spoken words, or a translation of a Chinese query.
  function understoodText(s) {
    const x = s.explain;
    if (!x || typeof x !== "object") return "";
    const telling = ["tempo", "duration", "loudness", "vocals", "kind", "spoken", "exclude"].some((k) => x[k] != null)
      || (x.language && x.language !== "en");
    if (!telling) return "";
    const lines = (s.understood || []).filter((l, i) => i > 0 || !l.includes(s.label));
    return "Understood as — " + (lines.length ? lines.join(" · ") : explainText(x));
  }

  function explainText(x) {
    if (typeof x === "string") return x;
    if (Array.isArray(x)) return x.map(explainText).join("; ");
    if (x && typeof x === "object") return Object.entries(x).filter(([, v]) => v != null && v !== "" && !(Array.isArray(v) && !v.length))
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
    return String(x);
  }

  function renderEmpty(filtersOn) {
    const tips = [
      filtersOn ? "Clear or loosen the filters." : null,
      "Describe the sound in other words (“water dripping” instead of “leak”).",
      "Try the other language: 中文 and English both work.",
    ].filter(Boolean);
    els.empty.replaceChildren(
      svgIcon("M11 4.5a6.5 6.5 0 1 0 0 13a6.5 6.5 0 1 0 0-13M16 16l4.5 4.5"),
      h("h2", { text: "No matches" }),
      h("ul", {}, tips.map((t) => h("li", { text: t }))));
    els.empty.hidden = false;
  }

  function svgIcon(d) {
    const s = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    s.setAttribute("viewBox", "0 0 24 24");
    s.setAttribute("aria-hidden", "true");
    const p = document.createElementNS("http://www.w3.org/2000/svg", "path");
    p.setAttribute("d", d);
    s.append(p);
    return s;
  }

  // ---------------------------------------------------------------- result cards
  function addResults(results, items = {}) {
    Object.assign(current.items, items || {});
    const start = current.results.length;
    current.results.push(...results);
    const frag = document.createDocumentFragment();
    results.forEach((r, i) => {
      const prev = start + i > 0 ? current.results[start + i - 1] : null;
      if (r.weak && (!prev || !prev.weak)) {  // below the confidence floor: kept apart, said so
        frag.append(h("li", { class: "weak-note", role: "note" },
          prev ? "Weaker matches, below the confidence floor:" : "No close match; nearest:"));
      }
      const c = card(r, current.items[String(r.id)] || {}, start + i + 1);
      if (r.weak) c.classList.add("weak");
      frag.append(c);
    });
    els.results.append(frag);
  }

  function card(r, meta, rank) {
    const li = els.tpl.content.firstElementChild.cloneNode(true);
    li.dataset.id = r.id;
    li.dataset.start = r.start;
    li.dataset.end = r.end;
    li.dataset.duration = r.duration_s;
    const [folder, file] = splitPath(r.path);
    const tags = meta.tags || {};
    $(".rank", li).textContent = rank;
    $(".name", li).textContent = tags.title ? tags.title : file;
    $(".name", li).title = r.path;
    const sub = [tags.artist, tags.title ? file : null, folder].filter(Boolean).join(" · ");
    $(".folder", li).append(h("bdi", { text: sub }));
    $(".folder", li).title = r.path;
    const badges = $(".badges", li);
    if (meta.kind) badges.append(h("span", { class: `badge ${meta.kind}`, text: KIND_NAMES[meta.kind] || meta.kind }));
    if (meta.tempo_bpm) badges.append(h("span", { class: "badge", text: `${Math.round(meta.tempo_bpm)} BPM` }));

    const hasMoment = r.end > r.start && (r.start > 0 || r.end < r.duration_s - 0.05);
    const play = $(".play", li);
    play.setAttribute("aria-label", r.start > 0 ? `Play from ${clock(r.start)}` : "Play");
    play.title = r.start > 0 ? `Play from the best moment (${clock(r.start)})` : "Play";
    play.addEventListener("click", () => toggle(li));

    const wave = $(".wave", li);
    const img = $("img", wave);
    const q = hasMoment ? `?start=${r.start}&end=${r.end}` : "";
    img.src = `/api/items/${r.id}/waveform.svg${q}`;
    img.addEventListener("error", () => img.classList.add("failed"));
    wave.setAttribute("aria-valuemax", String(Math.round(r.duration_s)));
    wave.addEventListener("pointerdown", (ev) => seekFromPointer(li, ev));
    wave.addEventListener("keydown", (ev) => {
      const a = $("audio", li);
      if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
        ev.preventDefault();
        playAt(li, (a.src ? a.currentTime : r.start) + (ev.key === "ArrowRight" ? 5 : -5));
      } else if (ev.key === " " || ev.key === "Enter") { ev.preventDefault(); toggle(li); }
    });
    $(".total", li).textContent = clock(r.duration_s);
    $(".now", li).textContent = clock(r.start);

    const audio = $("audio", li);
    audio.addEventListener("timeupdate", () => progress(li));
    audio.addEventListener("playing", () => { li.classList.remove("loading"); li.classList.add("playing", "started"); });
    audio.addEventListener("pause", () => li.classList.remove("playing", "loading"));
    audio.addEventListener("waiting", () => li.classList.add("loading"));
    audio.addEventListener("ended", () => li.classList.remove("playing"));
    audio.addEventListener("error", () => {
      li.classList.remove("playing", "loading");
      if (audio.getAttribute("src")) showError(`Cannot play “${file}” in this browser (${audio.error ? "format not supported or file unavailable" : "error"}).`);
    });

    $(".desc", li).textContent = r.description;
    const why = $(".why", li);
    for (const w of r.why || []) why.append(h("li", {}, richText(w, li)));
    const chips = $(".chips", li);
    for (const [name] of (r.labels || []).slice(0, 3)) chips.append(h("span", { class: "chip", text: name }));
    $(".like", li).addEventListener("click", () => { similar(r.id, tags.title || file); window.scrollTo({ top: 0, behavior: "smooth" }); });
    for (const kind of ["like", "dislike"]) {
      const b = $(`.fb-${kind}`, li);
      b.addEventListener("click", () => {
        b.setAttribute("aria-pressed", "true");
        $(`.fb-${kind === "like" ? "dislike" : "like"}`, li).setAttribute("aria-pressed", "false");
        feedback(r.id, kind);
      });
    }
    audio.addEventListener("playing", () => { li._from = audio.currentTime; });
    audio.addEventListener("pause", () => listened(li, audio, false));
    audio.addEventListener("ended", () => listened(li, audio, true));
    $(".info", li).addEventListener("click", () => details(r.id, r));
    return li;
  }

  // ---------------------------------------------------------------- listener feedback
  // Likes and dislikes from the buttons; plays and skips from the player: stopped within SKIP_S seconds
  // (and before half of it) is a skip, anything longer a play with the seconds listened. Best effort:
  // a failed report never interrupts listening.
  const SKIP_S = 5;
  function feedback(id, kind, seconds = 0) {
    const headers = { "Content-Type": "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    const query = current && current.mode === "search" ? current.label : "";
    return api("/api/feedback", { method: "POST", headers, body: JSON.stringify({ item_id: Number(id), kind, seconds, query }) })
      .catch((e) => { if (e.status === 401 || e.status === 403) showError(`${e.message}. Enter the token printed when the server started.`); });
  }

  function listened(li, audio, ended) {
    if (li._from == null) return;
    const secs = Math.max(0, audio.currentTime - li._from) + (li._heard || 0);
    li._from = null;
    li._heard = secs;
    if (li.dataset.reported) return;
    const dur = (isFinite(audio.duration) && audio.duration) || Number(li.dataset.duration) || 0;
    if (!ended && secs < SKIP_S && secs < dur / 2) { li.dataset.reported = "skip"; feedback(li.dataset.id, "skip", secs); return; }
    li.dataset.reported = "play";
    feedback(li.dataset.id, "play", ended ? dur : secs);
  }

  // ---------------------------------------------------------------- audio
  function ensureSrc(li, at) {
    const a = $("audio", li);
    if (!a.getAttribute("src")) {
      a.src = `/api/items/${li.dataset.id}/audio#t=${Math.max(0, at).toFixed(2)}`;
      a.dataset.pending = String(at);
      a.addEventListener("loadedmetadata", () => {
        const want = Number(a.dataset.pending);
        if (Math.abs(a.currentTime - want) > 0.3) a.currentTime = want;
      }, { once: true });
    } else {
      a.currentTime = Math.max(0, at);
    }
    return a;
  }

  function toggle(li) {
    const a = $("audio", li);
    if (active === li && !a.paused) { a.pause(); return; }
    if (!a.getAttribute("src") || a.ended) playAt(li, Number(li.dataset.start));
    else start(li, a);
  }

  function playAt(li, t) {
    const dur = Number(li.dataset.duration) || 0;
    t = Math.min(Math.max(0, t), Math.max(0, dur - 0.05));
    const a = ensureSrc(li, t);
    start(li, a);
    progress(li, t);
  }

  function start(li, a) {
    if (active && active !== li) $("audio", active).pause();
    active = li;
    li.classList.add("loading", "started");
    const p = a.play();
    if (p && p.catch) p.catch((e) => { li.classList.remove("loading"); if (e.name !== "AbortError") showError(`Playback failed: ${e.message}`); });
  }

  function stopAudio() {
    if (active) $("audio", active).pause();
    active = null;
  }

  function progress(li, forced) {
    const a = $("audio", li);
    const dur = (isFinite(a.duration) && a.duration) || Number(li.dataset.duration) || 1;
    const t = forced != null ? forced : a.currentTime;
    const f = Math.min(1, Math.max(0, t / dur));
    $(".played", li).style.width = `${f * 100}%`;
    $(".cursor", li).style.left = `calc(${f * 100}% - 1px)`;
    $(".now", li).textContent = clock(t);
    $(".wave", li).setAttribute("aria-valuenow", String(Math.round(t)));
  }

  function seekFromPointer(li, ev) {
    const rect = ev.currentTarget.getBoundingClientRect();
    const f = Math.min(1, Math.max(0, (ev.clientX - rect.left) / rect.width));
    const a = $("audio", li);
    const dur = (isFinite(a.duration) && a.duration) || Number(li.dataset.duration) || 0;
    playAt(li, f * dur);
  }

  // ---------------------------------------------------------------- details
  async function details(id, r) {
    const body = els.detailBody;
    $("#detail-title").textContent = r ? splitPath(r.path)[1] : `Item ${id}`;
    body.replaceChildren(h("p", { class: "muted", text: "Loading…" }));
    if (!els.detailDialog.open) els.detailDialog.showModal();
    let info;
    try { info = await api(`/api/items/${id}`); } catch (e) { body.replaceChildren(h("div", { class: "notice error", text: e.message })); return; }
    const audio = h("audio", { class: "detail-audio", controls: true, preload: "none", src: info.audio_url });
    const seek = (t) => { audio.currentTime = t; audio.play().catch(() => {}); };
    const meta = [
      ["Kind", KIND_NAMES[info.kind] || info.kind], ["Length", clock(info.duration_s)],
      ["Sample rate", info.sample_rate ? `${(info.sample_rate / 1000).toFixed(1)} kHz` : "—"],
      ["Channels", info.channels === 1 ? "mono" : info.channels === 2 ? "stereo" : info.channels],
      ["Codec", info.codec || "—"],
    ];
    const music = (info.features && info.features.music) || null;
    if (music && music.tempo_bpm) meta.push(["Tempo", `${Math.round(music.tempo_bpm)} BPM`]);
    if (music && music.key) meta.push(["Key", `${music.key} ${music.mode || ""}`]);
    if (music && music.loudness_lufs != null) meta.push(["Loudness", `${music.loudness_lufs} LUFS`]);
    const copyBtn = h("button", { type: "button", class: "btn ghost small", text: "Copy path", onclick: async (ev) => {
      try { await navigator.clipboard.writeText(info.path); ev.target.textContent = "Copied"; } catch (e) { ev.target.textContent = "Select and copy"; }
    } });
    const parts = [
      h("div", { class: "detail-path" }, h("span", { text: info.path }), copyBtn),
      audio,
      h("p", { text: info.description }),
      h("dl", { class: "detail-meta" }, meta.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: String(v) })))),
    ];
    const tags = Object.entries(info.tags || {}).filter(([, v]) => v);
    if (tags.length) parts.push(h("h3", { text: "Tags" }), h("div", { class: "tags" }, tags.slice(0, 20).map(([k, v]) => h("span", { class: "chip", text: `${k}: ${v}` }))));
    if (info.transcript && info.transcript.length) {
      parts.push(h("h3", { text: "What is said" }), h("ul", { class: "transcript" }, info.transcript.slice(0, 200).map((p) =>
        h("li", {}, h("button", { type: "button", class: "ts", text: clock(p.start), onclick: () => seek(p.start) }), h("span", { text: p.text })))));
    }
    for (const [space, labels] of Object.entries(info.labels || {})) {
      if (!labels.length) continue;
      parts.push(h("h3", { text: space === "yamnet" ? "Sounds detected" : `Music tags (${space.replace("musicnn_", "").toUpperCase()})` }),
        h("div", { class: "label-bars" }, labels.slice(0, 8).map(([n, p]) => {
          const fill = h("div");
          fill.style.width = `${Math.round(p * 100)}%`;
          return h("div", { class: "label-bar" }, h("span", { text: n }), h("div", { class: "meter" }, fill), h("span", { class: "p", text: `${Math.round(p * 100)}%` }));
        })));
    }
    if (info.segments && info.segments.length > 1) {
      parts.push(h("h3", { text: "Moments" }), h("ul", { class: "segments" }, info.segments.slice(0, 120).map((s) =>
        h("li", {}, h("button", { type: "button", class: "ts", text: clock(s.start), onclick: () => seek(s.start) }), h("span", { class: "muted", text: s.labels.join(", ") })))));
    }
    parts.push(h("div", { class: "row-end" }, h("button", { type: "button", class: "btn primary", text: "More like this", onclick: () => { els.detailDialog.close(); similar(id, info.name); } })));
    body.replaceChildren(...parts);
  }

  // ---------------------------------------------------------------- indexing
  let polling = null;

  function token() { return $("#token").value.trim() || sessionStorage.getItem("soundscope-token") || ""; }

  async function openIndex() {
    const off = $("#index-off");
    $("#index-form").hidden = !config.indexing;
    off.hidden = config.indexing;
    if (!config.indexing) {
      off.replaceChildren("Indexing from the page is off on this server. Start it with ", h("code", { text: "soundscope serve --allow-root /path/to/audio" }),
        ", or index from a terminal: ", h("code", { text: "soundscope index /path/to/audio" }), ".");
    }
    $("#token-field").hidden = !config.token_required;
    const roots = config.allow_roots || [];
    $("#root-list").replaceChildren(...roots.map((r) => h("option", { value: r })));
    $("#roots-hint").replaceChildren(roots.length ? `This server may index inside: ${roots.join(", ")}` : "");
    if (!$("#index-path").value && roots.length) $("#index-path").value = roots[0];
    $("#index-error").hidden = true;
    els.indexDialog.showModal();
    refreshJobs();
    refreshFailures();
  }

  async function startIndex(ev) {
    ev.preventDefault();
    const path = $("#index-path").value.trim();
    const err = $("#index-error");
    err.hidden = true;
    const headers = { "Content-Type": "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    $("#index-start").disabled = true;
    try {
      await api("/api/index", { method: "POST", headers, body: JSON.stringify({ paths: [path] }) });
      if (t) sessionStorage.setItem("soundscope-token", t);
      polling = 0; // watch this job: refresh stats and results when it ends, even if it already has
      await refreshJobs();
    } catch (e) {
      err.textContent = e.status === 401 || e.status === 403 ? `${e.message}. Enter the token printed when the server started.` : e.message;
      err.hidden = false;
      if (e.status === 401 || e.status === 403) $("#token-field").hidden = false;
    } finally {
      $("#index-start").disabled = false;
    }
  }

  async function cancelJob(id) {
    const headers = {};
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    try { await api(`/api/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST", headers }); } catch (e) { showError(e.message); }
    refreshJobs();
  }

  function jobView(j) {
    const live = ["queued", "scanning", "running"].includes(j.state);
    const frac = j.total ? j.done / j.total : 0;
    const fill = h("div");
    fill.style.width = `${Math.round(frac * 100)}%`;
    const bar = h("div", { class: `bar${live && !j.total ? " indeterminate" : ""}` }, fill);
    const bits = [];
    if (j.total || j.state === "done") bits.push(`${j.done} / ${j.total} files`);
    if (j.failed) bits.push(`${j.failed} failed`);
    if (j.audio_seconds) bits.push(`${amount(j.audio_seconds / 3600)} of audio`);
    if (j.speed_x_realtime) bits.push(`${Math.round(j.speed_x_realtime)}× real time`);
    if (j.state === "scanning") bits.push("looking for audio files…");
    if (j.state === "queued") bits.push("waiting for the job before it");
    const li = h("li", { class: "job" },
      h("div", { class: "job-top" }, h("span", { class: "job-path", text: j.paths.join(", ") }), h("span", { class: `job-state ${j.state}`, text: j.state })),
      live || j.state === "done" ? bar : null,
      h("div", { class: "job-meta" }, h("span", { text: bits.join(" · ") }),
        live ? h("button", { type: "button", class: "btn ghost small", text: "Stop", onclick: () => cancelJob(j.id) }) : null),
      j.current && live ? h("div", { class: "job-current" }, h("bdi", { text: j.current })) : null,
      j.error ? h("div", { class: "f-reason", text: j.error }) : null);
    return li;
  }

  async function refreshJobs() {
    let data;
    try { data = await api("/api/jobs"); } catch (e) { return; }
    const list = $("#jobs");
    list.replaceChildren(...(data.jobs.length ? data.jobs.slice(0, 8).map(jobView) : [h("li", { class: "muted", text: "No indexing jobs yet." })]));
    const live = data.jobs.some((j) => ["queued", "scanning", "running"].includes(j.state));
    clearTimeout(polling);
    if (live) polling = setTimeout(refreshJobs, 1000);
    else if (polling != null) {
      polling = null;
      refreshStats();
      refreshFailures();
      if (current && current.mode !== "upload") fetchPage(current, 0);
    }
  }

  async function refreshFailures() {
    let data;
    try { data = await api("/api/failures?limit=50"); } catch (e) { return; }
    const list = $("#failures");
    if (!data.total) { list.replaceChildren(h("li", { class: "muted", text: "None." })); return; }
    const rows = data.failures.map((f) => h("li", {}, h("div", { class: "f-path", text: f.path }), h("div", { class: "f-reason", text: f.reason })));
    if (data.total > data.failures.length) rows.push(h("li", { class: "muted", text: `… and ${data.total - data.failures.length} more (soundscope failures lists them all)` }));
    list.replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- page furniture
  async function refreshStats() {
    try {
      const s = await api("/api/stats");
      const kinds = s.kinds || {};
      els.stats.textContent = `${s.items.toLocaleString()} file${s.items === 1 ? "" : "s"} · ${amount(s.audio_hours)} of audio`;
      els.stats.title = Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(", ");
      $("#tiles").hidden = !s.items;
      if (!s.items && !current) {
        els.empty.replaceChildren(svgIcon("M4 12h2l2-5 3 10 3-8 2 3h4"), h("h2", { text: "Nothing indexed yet" }),
          h("p", {}, "Add a folder of audio to start searching."), h("button", { type: "button", class: "btn primary", text: "Add audio", onclick: openIndex }));
        els.empty.hidden = false;
      } else if (!current) {
        els.empty.hidden = true;
      }
    } catch (e) { els.stats.textContent = ""; }
  }

  let labelsLoaded = false;
  async function loadLabels() {
    if (labelsLoaded) return;
    labelsLoaded = true;
    try {
      const data = await api("/api/labels");
      $("#label-list").replaceChildren(...data.labels.map((l) => h("option", { value: l })));
    } catch (e) { labelsLoaded = false; }
  }

  function rotatePlaceholder() {
    let i = 0;
    const narrow = window.matchMedia("(max-width: 640px)");
    const set = () => {
      const ex = EXAMPLES[i % EXAMPLES.length];
      els.q.placeholder = narrow.matches ? `Try “${ex}”` : `Describe a sound — “${ex}”`;
      i++;
    };
    set();
    setInterval(() => { if (document.activeElement !== els.q && !els.q.value) set(); }, 3500);
  }

  function setupDrop() {
    let depth = 0;
    const hasFiles = (ev) => ev.dataTransfer && Array.from(ev.dataTransfer.types || []).includes("Files");
    window.addEventListener("dragenter", (ev) => { if (!hasFiles(ev)) return; ev.preventDefault(); depth++; els.drop.hidden = false; });
    window.addEventListener("dragover", (ev) => { if (hasFiles(ev)) ev.preventDefault(); });
    window.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) els.drop.hidden = true; });
    window.addEventListener("drop", (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth = 0; els.drop.hidden = true;
      const f = ev.dataTransfer.files[0];
      if (f) upload(f);
    });
  }

  function setup() {
    for (const ex of EXAMPLES.slice(0, 6)) {
      els.examples.append(h("button", { type: "button", class: "example", text: ex, onclick: () => run({ q: ex, ...readControls() }) }));
    }
    els.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const q = els.q.value.trim();
      if (!q) { els.q.focus(); return; }
      run({ q, ...readControls() });
    });
    els.uploadBtn.addEventListener("click", () => els.file.click());
    els.file.addEventListener("change", () => upload(els.file.files[0]));
    els.more.addEventListener("click", () => {
      if (!current) return;
      if (current.mode === "upload") revealUploaded();
      else fetchPage(current, current.offset);
    });
    els.kind.addEventListener("click", (ev) => {
      const b = ev.target.closest("button");
      if (!b) return;
      for (const x of els.kind.querySelectorAll("button")) x.setAttribute("aria-checked", String(x === b));
      syncFilterUi();
      rerun();
    });
    els.filtersToggle.addEventListener("click", () => {
      const open = els.filters.hidden;
      els.filters.hidden = !open;
      els.filtersToggle.setAttribute("aria-expanded", String(open));
      if (open) loadLabels();
    });
    els.filters.addEventListener("input", syncFilterUi);
    els.filters.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); rerun(); } });
    $("#filters-apply").addEventListener("click", rerun);
    $("#filters-clear").addEventListener("click", () => { for (const k of FILTER_KEYS) $("#" + k).value = ""; syncFilterUi(); rerun(); });
    $("#open-index").addEventListener("click", openIndex);
    $("#for-you").addEventListener("click", () => { history.pushState({}, "", "/"); els.q.value = ""; fetchPage({ mode: "foryou", params: {}, label: "For you" }, 0); });
    $("#index-form").addEventListener("submit", startIndex);
    for (const d of [els.indexDialog, els.detailDialog]) {
      d.addEventListener("click", (ev) => { if (ev.target === d || ev.target.closest("[data-close]")) d.close(); });
    }
    els.detailDialog.addEventListener("close", () => { const a = $("audio", els.detailDialog); if (a) a.pause(); });
    els.indexDialog.addEventListener("close", () => { /* keep polling in the background */ });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "/" && !/INPUT|TEXTAREA/.test(document.activeElement.tagName) && !document.querySelector("dialog[open]")) {
        ev.preventDefault(); els.q.focus(); els.q.select();
      }
    });
    window.addEventListener("popstate", () => run(fromUrl(), { push: false }));
    rotatePlaceholder();
    setupDrop();
  }

  function rerun() {
    if (!current) return;
    const f = readControls();
    if (current.mode === "search") run({ q: current.params.q, ...f });
    else if (current.mode === "like") similar(current.params.like, current.label, f);
    else renderStatus();
  }

  // A server started with --read-token prints its address as .../#token=...: kept for this tab and sent
  // as a cookie, so fetches, the player and the waveform images all carry it (no header on <audio>).
  function readToken() {
    const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
    if (m) {
      sessionStorage.setItem("soundscope-read-token", decodeURIComponent(m[1]));
      history.replaceState(history.state, "", location.pathname + location.search);
    }
    const t = sessionStorage.getItem("soundscope-read-token");
    if (t) document.cookie = `soundscope_token=${encodeURIComponent(t)}; path=/; SameSite=Strict`;
  }

  async function init() {
    readToken();
    setup();
    try { config = await api("/api/config"); } catch (e) { /* defaults */ }
    refreshStats();
    const p = fromUrl();
    if (p.q || p.like) run(p, { push: false });
    try {
      const data = await api("/api/jobs");
      if (data.jobs.some((j) => ["queued", "scanning", "running"].includes(j.state))) { polling = 0; refreshJobs(); }
    } catch (e) { /* ignore */ }
  }

  init();
})();
