// rlinterp panel: browse real episodes and simulated samples with their frames, saliency, agent outputs, hidden
// state, embedding, behaviours and interventions. Plain JavaScript, no dependencies: it opens from file://.
// Data arrive through script files calling PANEL.setManifest / PANEL.addItem; strings go in via textContent only.
"use strict";

const PANEL = (() => {
  const state = { manifest: null, items: {}, order: [], visible: [], current: null, step: 0, playing: null,
                  data: {}, waiting: {}, images: {}, embedding: 0, showSaliency: true, labels: {} };
  const $ = (id) => document.getElementById(id);
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
  const colour = (k) => PALETTE[((k % PALETTE.length) + PALETTE.length) % PALETTE.length];

  function element(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  // ---- data loading -------------------------------------------------------------------------------------
  function loadItem(id, then) {
    if (state.data[id]) { then(state.data[id]); return; }
    if (state.waiting[id]) { state.waiting[id].push(then); return; }
    state.waiting[id] = [then];
    const script = element("script", null, { src: "items/" + encodeURIComponent(id) + ".js" });
    script.onerror = () => { delete state.waiting[id]; $("status").textContent = "could not load item " + id; };
    document.body.appendChild(script);
  }

  function addItem(data) {
    state.data[data.id] = data;
    const callbacks = state.waiting[data.id] || [];
    delete state.waiting[data.id];
    callbacks.forEach((f) => f(data));
  }

  function image(src) {
    if (!state.images[src]) {
      const img = new Image();
      img.onload = draw;
      img.src = src;
      state.images[src] = img;
    }
    return state.images[src];
  }

  // ---- selection ----------------------------------------------------------------------------------------
  function select(id, step) {
    const item = state.items[id];
    if (!item) return;
    state.current = id;
    state.step = Math.max(0, Math.min(step || 0, item.length - 1));
    document.querySelectorAll("#items li").forEach((li) => li.classList.toggle("selected", li.dataset.id === id));
    const li = document.querySelector('#items li[data-id="' + CSS.escape(id) + '"]');
    if (li) li.scrollIntoView({ block: "nearest" });
    $("item-title").textContent = item.label + " · return " + item.return.toFixed(2) +
      (item.behaviour !== undefined ? " · behaviour " + item.behaviour : "");
    $("scrub").max = item.length - 1;
    loadItem(id, () => draw());
    if (item.real) loadItem(item.real, () => draw());
    draw();
  }

  function setStep(step) {
    const item = state.items[state.current];
    if (!item) return;
    state.step = ((step % item.length) + item.length) % item.length;
    draw();
  }

  function togglePlay() {
    if (state.playing) { clearInterval(state.playing); state.playing = null; }
    else if (state.current) { state.playing = setInterval(() => setStep(state.step + 1), 150); }
    $("play").textContent = state.playing ? "pause" : "play";
  }

  function moveItem(delta) {
    const list = state.visible;
    if (!list.length) return;
    const at = list.indexOf(state.current);
    select(list[Math.max(0, Math.min(list.length - 1, at + delta))], 0);
  }

  // ---- drawing ------------------------------------------------------------------------------------------
  function drawTile(canvas, src, index) {
    const ctx = canvas.getContext("2d");
    const m = state.manifest;
    const img = image(src);
    if (!img.complete || !img.naturalWidth) return false;
    const col = index % m.tiles_per_row, row = Math.floor(index / m.tiles_per_row);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, col * m.tile, row * m.tile, m.tile, m.tile, 0, 0, canvas.width, canvas.height);
    return true;
  }

  function drawFrames(item) {
    const frame = $("frame"), real = $("real-frame");
    frame.getContext("2d").clearRect(0, 0, frame.width, frame.height);
    real.getContext("2d").clearRect(0, 0, real.width, real.height);
    drawTile(frame, "frames/" + item.id + ".png", state.step);
    const sal = item.saliency;
    $("frame-caption").textContent = item.kind === "sample" ? "SIMULATED, step " + state.step : "real, step " + state.step;
    frame.classList.toggle("simulated", item.kind === "sample");
    if (sal && state.showSaliency && state.step <= sal.timestep) {
      drawTile(frame, "saliency/" + item.id + ".png", state.step);
      $("frame-caption").textContent += " · saliency of the " + sal.target + " at step " + sal.timestep;
    }
    if (item.real) {
      const realItem = state.items[item.real];
      const realStep = item.real_offset + state.step;
      if (realItem && realStep < realItem.length) {
        drawTile(real, "frames/" + item.real + ".png", realStep);
        $("real-caption").textContent = (item.real_relation ? item.real_relation + ": " : "real: ") +
          realItem.label + ", step " + realStep;
      } else {
        $("real-caption").textContent = "the real episode ended before this step";
      }
    } else {
      $("real-caption").textContent = item.kind === "sample" ? "no informed sample to pair this prior sample with" : "";
    }
  }

  const FONT_PX = 12;
  function axes(ctx, w, h) {
    ctx.clearRect(0, 0, w, h);
    ctx.font = FONT_PX + "px system-ui, sans-serif";
    ctx.fillStyle = "#222";
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    state.labels[ctx.canvas.id] = [];
  }

  // Text on a chart, recorded with its box so a test can check that none is cut off: `right` is where its area ends
  // (the margin left of the plot, or the canvas's edge).
  function label(ctx, text, x, y, right) {
    ctx.fillText(text, x, y);
    state.labels[ctx.canvas.id].push({ text, x, y, width: ctx.measureText(text).width, right: right ?? ctx.canvas.width });
  }

  function cursor(ctx, x, h) {
    ctx.strokeStyle = "#e53935";
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke();
  }

  function drawTimeline(item, data) {
    const canvas = $("timeline"), ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, T = item.length, actions = state.manifest.actions;
    axes(ctx, w, h);
    const lo = Math.min(...data.value, 0), hi = Math.max(...data.value, lo + 1e-6);
    const rewardMax = Math.max(...data.reward.map(Math.abs), 0);
    const ticks = [hi.toFixed(1), lo.toFixed(1), rewardMax ? "±" + rewardMax.toFixed(0) : "none"];
    // the left margin holds the longest label: action names, the row names with their scale
    const left = 8 + Math.max(...actions.map((a) => ctx.measureText(a).width),
                              ...ticks.map((t) => ctx.measureText("value " + t).width));
    const x = (t) => left + (t + 0.5) * (w - left) / T, cell = (w - left) / T, margin = left - 4;
    const valueTop = 8, valueBottom = 72, rewardY = 86, rowH = (h - 100) / actions.length, top = 100;
    // value line, with its scale at the top and bottom of its band
    label(ctx, "value " + ticks[0], 4, valueTop + 4, margin);
    label(ctx, ticks[1], 4, valueBottom - 4, margin);
    ctx.strokeStyle = "#ddd"; ctx.strokeRect(left, valueTop, w - left - 1, valueBottom - valueTop);
    ctx.strokeStyle = "#1e88e5"; ctx.beginPath();
    data.value.forEach((v, t) => {
      const y = valueBottom - (valueBottom - valueTop) * (v - lo) / (hi - lo);
      t ? ctx.lineTo(x(t), y) : ctx.moveTo(x(t), y);
    });
    ctx.stroke();
    // rewards as bars whose height is the reward over the largest one in this item
    ctx.fillStyle = "#222"; label(ctx, "reward " + ticks[2], 4, rewardY, margin);
    data.reward.forEach((r, t) => {
      if (r !== 0) {
        ctx.fillStyle = r > 0 ? "#43a047" : "#e53935";
        const bar = 12 * Math.abs(r) / rewardMax;
        ctx.fillRect(x(t) - 2, rewardY + 6 - bar, 4, bar);
      }
    });
    // action probabilities as a heat strip, chosen action outlined
    actions.forEach((name, a) => {
      ctx.fillStyle = "#222"; label(ctx, name, 4, top + (a + 0.5) * rowH, margin);
      for (let t = 0; t < T; t++) {
        ctx.fillStyle = "rgba(94, 53, 177," + data.probs[t][a].toFixed(3) + ")";
        ctx.fillRect(left + t * cell, top + a * rowH, Math.max(cell, 1), rowH);
      }
    });
    ctx.strokeStyle = "#ff9800";
    data.action.forEach((a, t) => ctx.strokeRect(left + t * cell, top + a * rowH, Math.max(cell, 1), rowH));
    cursor(ctx, x(state.step), h);
    const p = data.probs[state.step];
    $("status").textContent = "step " + state.step + "/" + (T - 1) + " · action " + actions[data.action[state.step]] +
      " (p=" + p[data.action[state.step]].toFixed(2) + ") · value " + data.value[state.step].toFixed(2) +
      " · reward " + data.reward[state.step];
  }

  function drawHidden(item, data) {
    const map = $("hx-map"), ctx = map.getContext("2d"), T = item.length, H = data.hx[0].length;
    const cw = map.width / T, ch = map.height / H;
    ctx.clearRect(0, 0, map.width, map.height);
    for (let t = 0; t < T; t++) {
      for (let u = 0; u < H; u++) {
        const v = Math.max(-1, Math.min(1, data.hx[t][u]));
        ctx.fillStyle = v >= 0 ? "rgba(30,136,229," + v + ")" : "rgba(229,57,53," + (-v) + ")";
        ctx.fillRect(t * cw, u * ch, Math.ceil(cw), Math.ceil(ch));
      }
    }
    cursor(ctx, (state.step + 0.5) * cw, map.height);
    const traces = $("ic-traces"), tc = traces.getContext("2d");
    axes(tc, traces.width, traces.height);
    if (!data.ics) { label(tc, "no IC basis in this export", 10, 20); return; }
    const flat = data.ics.flat(), lo = Math.min(...flat), hi = Math.max(...flat, lo + 1e-6);
    const K = Math.min(data.ics[0].length, 8);
    for (let k = 0; k < K; k++) {
      tc.strokeStyle = colour(k); tc.beginPath();
      data.ics.forEach((row, t) => {
        const px = (t + 0.5) * traces.width / T, py = traces.height - 10 - (traces.height - 20) * (row[k] - lo) / (hi - lo);
        t ? tc.lineTo(px, py) : tc.moveTo(px, py);
      });
      tc.stroke();
      tc.fillStyle = colour(k); label(tc, "IC " + k, 4 + 44 * k, 10);
    }
    cursor(tc, (state.step + 0.5) * traces.width / T, traces.height);
  }

  // embedding: canvas coordinates of every point, recomputed when the embedding changes
  let layout = null;
  function embeddingLayout() {
    const e = state.manifest.embeddings[state.embedding];
    if (!e) return null;
    const canvas = $("embedding"), pad = 12;
    const xs = e.x, ys = e.y;
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const px = xs.map((v) => pad + (canvas.width - 2 * pad) * (v - x0) / ((x1 - x0) || 1));
    const py = ys.map((v) => canvas.height - pad - (canvas.height - 2 * pad) * (v - y0) / ((y1 - y0) || 1));
    return { e, px, py };
  }

  function drawEmbedding() {
    const canvas = $("embedding"), ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!layout) return;
    const { e, px, py } = layout;
    for (let i = 0; i < px.length; i++) {
      ctx.fillStyle = colour(e.cluster[i]);
      ctx.globalAlpha = e.item[i] === state.current ? 1 : 0.35;
      ctx.fillRect(px[i] - 1.5, py[i] - 1.5, 3, 3);
    }
    ctx.globalAlpha = 1;
    const path = [];
    for (let i = 0; i < px.length; i++) if (e.item[i] === state.current) path.push(i);
    path.sort((a, b) => e.step[a] - e.step[b]);
    ctx.strokeStyle = "#000"; ctx.beginPath();
    path.forEach((i, n) => (n ? ctx.lineTo(px[i], py[i]) : ctx.moveTo(px[i], py[i])));
    ctx.stroke();
    const here = path.filter((i) => e.step[i] <= state.step).pop();
    if (here !== undefined) {
      ctx.fillStyle = "#e53935"; ctx.beginPath(); ctx.arc(px[here], py[here], 5, 0, 2 * Math.PI); ctx.fill();
    }
    $("embedding-note").textContent = px.length + " points, coloured by cluster; the selected item's path in black" +
      (path.length ? " (" + path.length + " of its steps embedded)" : " (none of its steps embedded)") +
      ". Click a point to open its frame.";
  }

  function nearestPoint(x, y) {
    if (!layout) return -1;
    let best = -1, bestD = 64;
    for (let i = 0; i < layout.px.length; i++) {
      const d = (layout.px[i] - x) ** 2 + (layout.py[i] - y) ** 2;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  function draw() {
    drawEmbedding();
    const item = state.items[state.current];
    if (!item) return;
    $("scrub").value = state.step;
    drawFrames(item);
    const data = state.data[item.id];
    if (!data) return;
    drawTimeline(item, data);
    drawHidden(item, data);
  }

  // ---- static views -------------------------------------------------------------------------------------
  function buildList() {
    const query = $("filter").value.trim().toLowerCase();
    state.visible = state.order.filter((id) => !query || state.items[id].label.toLowerCase().includes(query));
    const list = $("items");
    list.replaceChildren(...state.visible.map((id) => {
      const item = state.items[id];
      const li = element("li", item.label + " · " + item.return.toFixed(1));
      li.dataset.id = id;
      li.classList.toggle("selected", id === state.current);
      return li;
    }));
    $("item-count").textContent = state.visible.length + " of " + state.order.length + " items";
  }

  function buildBehaviours(m) {
    const box = $("behaviours");
    if (!m.behaviours.length) { box.textContent = "no behaviours in this export"; return; }
    box.replaceChildren(...m.behaviours.map((b) => {
      const div = element("div", null, { class: "behaviour" });
      const head = element("div");
      const swatch = element("span", "■ "); swatch.style.color = colour(b.behaviour);
      head.append(swatch, element("strong", "behaviour " + b.behaviour),
        " · " + b.samples + " samples · mostly " + b.top_action + " · mean value " + Number(b.mean_value).toFixed(2));
      div.append(head);
      b.exemplars.forEach((id) => {
        const button = element("button", state.items[id] ? state.items[id].label : id, { class: "exemplar" });
        button.onclick = () => select(id, 0);
        div.append(button);
      });
      return div;
    }));
  }

  // a number as the tables print it (4 significant digits); "" for none
  const shown = (v) => (v === null || v === undefined ? "" : String(+Number(v).toPrecision(4)));
  const SIDE_COLUMNS = [["control", "control"], ["edited", "edited"], ["effect", "effect (95% CI)"],
                        ["median_effect", "median"], ["null_p_value", "p vs random edits"],
                        ["null_percentile", "above random edits"], ["holm_p", "Holm p (all edits)"],
                        ["verdict", "changed?"]];

  // one number of an outcome, tagged with where it comes from in the metrics (side_measure.key)
  function number(row, side, key) {
    const value = row[side] ? row[side][key] : null;
    const text = key === "verdict" ? (value || "") :
      key === "null_percentile" ? (value === null || value === undefined ? "" : Math.round(100 * value) + "%") : shown(value);
    const span = element("span", text, { "data-key": side + "_" + row.measure + "." + key });
    if (key === "verdict" && value === "yes") span.classList.add("yes");
    return span;
  }

  function interventionTable(iv) {
    const table = element("table", null, { class: "verdicts" });
    const head = element("thead"), top = element("tr"), sub = element("tr");
    top.append(element("th", "outcome", { rowspan: "2" }));
    for (const side of ["real environment", "simulated"]) {
      top.append(element("th", side, { colspan: String(SIDE_COLUMNS.length), class: "side" }));
    }
    for (let i = 0; i < 2; i++) SIDE_COLUMNS.forEach(([, name], c) => sub.append(element("th", name, c ? {} : { class: "side" })));
    head.append(top, sub);
    const body = element("tbody");
    iv.table.forEach((row) => {
      const tr = element("tr", null, { class: row.primary ? "primary" : "secondary" });
      tr.append(element("td", row.measure + (row.primary ? "" : " (secondary)")));
      for (const side of ["real", "sim"]) {
        SIDE_COLUMNS.forEach(([key], c) => {
          const td = element("td", null, c ? {} : { class: "side" });
          td.append(number(row, side, key));
          if (key === "effect" && row[side] && row[side].ci95_low !== null && row[side].ci95_low !== undefined) {
            td.append(" (", number(row, side, "ci95_low"), " to ", number(row, side, "ci95_high"), ")");
          }
          tr.append(td);
        });
      }
      body.append(tr);
    });
    table.append(head, body);
    return table;
  }

  function buildInterventions(m) {
    const box = $("interventions");
    if (!m.interventions.length) { box.textContent = "no intervention results in this export"; return; }
    box.replaceChildren(...m.interventions.map((iv) => {
      const div = element("div", null, { class: "intervention" });
      div.append(element("h3", iv.name));
      const outside = ["real", "sim"].filter((where) => iv.off_manifold[where]).map((where) => {
        const o = iv.off_manifold[where], nulls = o.random_edits;
        const mean = nulls.length ? nulls.reduce((a, b) => a + b, 0) / nulls.length : 0;
        return (where === "real" ? "real " : "simulated ") + (100 * o.edited).toFixed(1) + "% of the edit's steps " +
          "(matched random edits " + (100 * mean).toFixed(1) + "%)";
      });
      div.append(element("p", "states outside the unedited states' ball: " + outside.join("; "), { class: "note" }));
      const scroll = element("div", null, { class: "table" });
      scroll.append(interventionTable(iv));
      const figures = element("div", null, { class: "figures" });
      iv.figures.forEach((src) => figures.append(element("img", null, { src, alt: "effects of " + iv.name, title: src })));
      iv.videos.forEach((src) => figures.append(element("img", null, { src, alt: src, title: src, class: "video" })));
      const raw = element("details");
      raw.append(element("summary", "metrics file (JSON)"), element("pre", iv.metrics));
      div.append(scroll, figures, raw);
      return div;
    }));
  }

  // text whose **bold** parts (the Markdown the README's table uses) become <strong>, every part as text
  function marked(tag, text) {
    const node = element(tag);
    String(text).replace(/`/g, "").split("**").forEach((part, i) => node.append(i % 2 ? element("strong", part) : part));
    return node;
  }

  function buildFindings(m) {
    const f = m.findings;
    if (!f.rows) { $("findings").textContent = "no findings in this export"; return; }
    $("caveats").textContent = f.caveats.replace(/`/g, "");
    const table = element("table"), head = element("tr");
    f.header.forEach((name) => head.append(element("th", name)));
    table.append(head, ...f.rows.map((row) => {
      const tr = element("tr");
      row.forEach((cell) => tr.append(marked("td", cell)));
      return tr;
    }));
    $("findings").replaceChildren(table);
  }

  function setManifest(m) {
    state.manifest = m;
    m.items.forEach((item) => { state.items[item.id] = item; });
    state.order = m.items.map((item) => item.id);
    if (m.missing.length) {
      $("missing").hidden = false;
      $("missing-list").replaceChildren(...m.missing.map((x) => element("li", x.part + ": " + x.why)));
    }
    const choice = $("embedding-choice");
    choice.replaceChildren(...m.embeddings.map((e, i) => element("option", e.title, { value: String(i) })));
    choice.onchange = () => { state.embedding = Number(choice.value); layout = embeddingLayout(); draw(); };
    layout = embeddingLayout();
    if (!m.embeddings.length) $("embedding-note").textContent = "no embedding in this export";
    buildList();
    buildBehaviours(m);
    buildInterventions(m);
    buildFindings(m);
    bindEvents();
    if (state.order.length) select(state.order[0], 0);
  }

  function bindEvents() {
    $("filter").oninput = buildList;
    $("items").onclick = (ev) => { const li = ev.target.closest("li"); if (li) select(li.dataset.id, 0); };
    $("prev").onclick = () => setStep(state.step - 1);
    $("next").onclick = () => setStep(state.step + 1);
    $("play").onclick = togglePlay;
    $("scrub").oninput = () => setStep(Number($("scrub").value));
    $("show-saliency").onchange = () => { state.showSaliency = $("show-saliency").checked; draw(); };
    $("embedding").onclick = (ev) => {
      const rect = ev.target.getBoundingClientRect(), scale = ev.target.width / ev.target.clientWidth;
      const i = nearestPoint((ev.clientX - rect.left - ev.target.clientLeft) * scale,
                             (ev.clientY - rect.top - ev.target.clientTop) * scale);
      if (i >= 0) select(layout.e.item[i], layout.e.step[i]);
    };
    document.addEventListener("keydown", (ev) => {
      if (ev.target.tagName === "INPUT" && ev.target.type === "search") return;
      const actions = { " ": togglePlay, ArrowRight: () => setStep(state.step + 1), ArrowLeft: () => setStep(state.step - 1),
                        ArrowDown: () => moveItem(1), ArrowUp: () => moveItem(-1),
                        s: () => { $("show-saliency").click(); } };
      if (actions[ev.key]) { ev.preventDefault(); actions[ev.key](); }
    });
  }

  // what tests and curious users can ask the page
  function inspect() {
    return { current: state.current, step: state.step, playing: !!state.playing, items: state.order.length,
             loaded: !!(state.current && state.data[state.current]), labels: state.labels };
  }

  function pointOnPage(i) {
    const canvas = $("embedding"), rect = canvas.getBoundingClientRect(), scale = canvas.clientWidth / canvas.width;
    return { x: rect.left + canvas.clientLeft + layout.px[i] * scale, y: rect.top + canvas.clientTop + layout.py[i] * scale,
             item: layout.e.item[i], step: layout.e.step[i] };
  }

  return { setManifest, addItem, select, inspect, pointOnPage };
})();
