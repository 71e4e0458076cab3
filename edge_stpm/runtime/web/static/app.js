// edge-stpm web app: fetch + DOM + keys, no library. The session id lives in sessionStorage and travels in the
// X-Session header (never a cookie); a 401 (no session, or locked after the idle time) goes to the login page.
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const esc = (t) => String(t ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const session = () => sessionStorage.getItem("edge-stpm-session") || "";
const page = document.body.dataset.page;

async function api(path, opts = {}) {
  const headers = Object.assign({ "X-Session": session() }, opts.json ? { "Content-Type": "application/json" } : {}, opts.headers || {});
  const res = await fetch(path, { method: opts.method || (opts.json || opts.body ? "POST" : "GET"), headers,
    body: opts.json ? JSON.stringify(opts.json) : opts.body });
  if (res.status === 401 && page !== "login") { location.href = "/app/login?next=" + encodeURIComponent(location.pathname); throw new Error("login"); }
  if (!res.ok) { const t = await res.text(); toast(`${res.status}: ${t}`); throw new Error(t); }
  return opts.raw ? res : res.headers.get("content-type")?.includes("json") ? res.json() : res.text();
}
function toast(text) { const t = $("#toast"); t.textContent = text; t.style.display = "block"; clearTimeout(t._h); t._h = setTimeout(() => (t.style.display = "none"), 4000); }
// picture URLs come signed and short-lived from the API (an <img> cannot send the X-Session header)
const img = (url) => url ? `<img loading="lazy" alt="" src="${esc(url)}">` : "";
// only a path on this station: never another origin, never a javascript: URL
const sameOrigin = (next) => {
  try {
    const u = new URL(String(next ?? ""), location.origin); // the browser's own parsing (tabs, backslashes, //host)
    return u.origin === location.origin && u.pathname.startsWith("/app/") ? u.pathname + u.search : "/app/live";
  } catch { return "/app/live"; }
};
const time = (iso) => esc(String(iso || "").replace("T", " ").slice(0, 19));

async function whoami() {
  if (page === "login") return;
  const me = await api("/api/me");
  $("#role").textContent = me.role; document.body.dataset.role = me.role;
}
$("#logout")?.addEventListener("click", async () => {
  await fetch("/api/logout", { method: "POST", headers: { "X-Session": session() } }).catch(() => {});
  sessionStorage.removeItem("edge-stpm-session"); location.href = "/app/login";
});

const pages = {
  login() {
    $("#login-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const res = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: $("#token").value }) });
      if (!res.ok) { $("#login-error").textContent = res.status === 429 ? "too many tries: wait a minute" : "unknown token"; return; }
      const s = await res.json(); sessionStorage.setItem("edge-stpm-session", s.session);
      location.href = sameOrigin(new URLSearchParams(location.search).get("next"));
    });
  },
  async live() {
    const urls = {};
    async function tick() {
      const d = await api("/api/live");
      const cams = $("#cameras");
      d.sources.forEach((m, i) => {
        let c = $(`#cam${i}`, cams);
        if (!c) { cams.insertAdjacentHTML("beforeend", `<div class="card cam" id="cam${i}"><h2>camera ${i} <small class="recipe"></small></h2><img alt="camera ${i}"><p><span class="verdict"></span> <span class="score"></span></p></div>`); c = $(`#cam${i}`, cams); }
      });
      await Promise.all(d.sources.map(async (m, i) => {
        if (!m) return;
        const res = await api(`/api/live/${i}.jpg`, { raw: true }); // the picture and its own verdict, one response
        const blob = await res.blob(); const c = $(`#cam${i}`);
        if (urls[i]) URL.revokeObjectURL(urls[i]); urls[i] = URL.createObjectURL(blob);
        $("img", c).src = urls[i];
        const v = res.headers.get("X-Verdict"); const el = $(".verdict", c); el.textContent = v; el.className = "verdict " + v;
        $(".score", c).textContent = `score ${(+res.headers.get("X-Score")).toFixed(2)} · frame ${res.headers.get("X-Frame")}`;
        $(".recipe", c).textContent = res.headers.get("X-Recipe") ? "recipe " + res.headers.get("X-Recipe") : "";
      }));
      const counts = d.shift.counts || {}; const total = Object.values(counts).reduce((a, b) => a + b, 0);
      $("#shift").textContent = d.shift.since_iso ? `since ${d.shift.since_iso}` : "";
      $("#counters").innerHTML = `<div><b>${total}</b>parts</div><div><b class="good">${counts.OK || 0}</b>OK</div><div><b class="bad">${counts.NG || 0}</b>NG</div><div><b>${counts.REVIEW || 0}</b>REVIEW</div><div><b>${d.status.fps.toFixed(1)}</b>frames/s</div>`;
      $("#recent-ng").innerHTML = d.status.recent_ng.map((n) => `<figure>${img("/" + n.url)}<figcaption>cam ${n.source} · frame ${n.frame} · ${n.normalised_score.toFixed(2)}${n.recipe ? " · " + esc(n.recipe) : ""}</figcaption></figure>`).join("") || "<p class=hint>none yet</p>";
    }
    await tick(); setInterval(() => tick().catch(() => {}), 700);
  },
  async history() {
    const form = $("#filters");
    async function load() {
      const q = new URLSearchParams([...new FormData(form)].filter(([, v]) => v)); q.set("limit", "300");
      $("#csv").dataset.query = `/api/results?${q}&format=csv`;
      const rows = await api(`/api/results?${q}`);
      $("#results tbody").innerHTML = rows.map((r) => `<tr><td>${time(r.time_iso)}</td><td>${r.source}</td><td>${esc(r.recipe_name || "")}</td><td><span class="verdict ${esc(r.verdict)}" style="font-size:.85rem">${esc(r.verdict)}</span></td><td>${r.normalised_score.toFixed(2)}</td><td>${r.evidence ? img(r.evidence.frame) : ""}</td><td>${r.evidence ? img(r.evidence.heatmap) : ""}</td><td>${r.review ? esc(r.review.mark + (r.review.defect_type ? " · " + r.review.defect_type : "") + " · " + r.review.who) : ""}</td></tr>`).join("");
    }
    form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
    $("#csv").addEventListener("click", async (e) => { // fetched with the session header, saved from a blob
      e.preventDefault();
      const blob = await (await api($("#csv").dataset.query, { raw: true })).blob();
      const a = document.createElement("a"); a.href = URL.createObjectURL(blob); a.download = "results.csv";
      document.body.append(a); a.click(); a.remove(); setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    });
    await load();
  },
  async review() {
    let queue = [], at = 0, plain = false;
    const LIMIT = 200; let more = false; // the newest LIMIT of each kind are loaded: say so when there are more
    async function load() { queue = await api(`/api/results?verdict=NG&reviewed=no&evidence=yes&limit=${LIMIT}`); const rv = await api(`/api/results?verdict=REVIEW&reviewed=no&evidence=yes&limit=${LIMIT}`).catch(() => []); more = queue.length >= LIMIT || rv.length >= LIMIT; queue = rv.concat(queue); at = 0; show(); }
    function show() {
      $("#queue-count").textContent = `${queue.length ? at + 1 : 0} of ${queue.length} to review${more ? ` (the newest ${LIMIT} of each verdict; more wait: reload when these are done)` : ""}`;
      const r = queue[at];
      // the overlay the live view drew for this part (its colours and outline); O shows the part without it
      const pic = r ? (plain ? r.evidence.frame : r.evidence.heatmap) : null;
      $("#review-item").innerHTML = r ? `<div class="review-pic" data-shows="${plain ? "part" : "overlay"}">${img(pic)}<p class="hint">${plain ? "the part as captured" : "as the line saw it: colour from half the pixel threshold, outline around NG"} · <button type="button" id="toggle-overlay">${plain ? "show the overlay" : "show the part without it"} (O)</button></p></div><div><p><span class="verdict ${esc(r.verdict)}">${esc(r.verdict)}</span> score ${r.normalised_score.toFixed(2)}</p><p class="hint">${time(r.time_iso)} · camera ${r.source} · recipe ${esc(r.recipe_name || "—")}<br>${esc(r.result_id)}</p></div>` : "<p>Nothing left to review.</p>";
      $("#toggle-overlay")?.addEventListener("click", () => { plain = !plain; show(); });
      document.body.dataset.current = r ? r.result_id : "";
    }
    async function mark(m) {
      const r = queue[at]; if (!r) return;
      await api("/api/review", { json: { result_id: r.result_id, mark: m, defect_type: m === "defect" ? ($("#defect-type").value || null) : null } });
      toast(`${m}: ${r.result_id}`); queue.splice(at, 1); if (at >= queue.length) at = Math.max(0, queue.length - 1); show();
    }
    $("#mark-good").addEventListener("click", () => mark("good")); $("#mark-defect").addEventListener("click", () => mark("defect"));
    document.addEventListener("keydown", (e) => {
      if (e.target === $("#defect-type") && e.key !== "Enter") return;
      const k = e.key.toLowerCase();
      if (k === "g") mark("good"); else if (k === "d" || (k === "enter" && e.target === $("#defect-type"))) mark("defect");
      else if (k === "o") { plain = !plain; show(); }
      else if (k === "n") { at = Math.min(at + 1, queue.length - 1); show(); } else if (k === "p") { at = Math.max(at - 1, 0); show(); }
    });
    await load();
  },
  async recipes() {
    await renderRecipes();
    document.addEventListener("click", (e) => { recipeClick(e).catch(() => {}); }); // a refusal is shown by api()
  },
  async health() {
    const h = await api("/api/health");
    $("#health-state").innerHTML = h.ok ? '<span class="good">healthy</span>' : '<span class="bad">not healthy</span>';
    $("#problems").innerHTML = h.problems.map((p) => `<li class="bad">${esc(p)}</li>`).join("") + h.drift.filter((d) => d.alarm).map((d) => `<li class="bad">drift alarm on recipe ${esc(d.recipe)}: the good parts' scores moved ${d.shift.toFixed(1)} calibrated spreads — review recent parts (Review page), then feed them back (Recipes &amp; models → Feedback)</li>`).join("");
    const ev = Object.entries(h.evidence).map(([k, v]) => `${esc(k)} ${v.items} (${v.mb.toFixed(1)} MB)`).join(", ") || "none";
    $("#health-summary").innerHTML = `model ${esc(h.model.model)} (${esc(h.model.backend)} ${esc(h.model.precision)}) · recipe ${esc(h.recipe.name)} · up ${(h.uptime_s / 60).toFixed(0)} min · disk free ${h.disk.free_gb.toFixed(1)} of ${h.disk.total_gb.toFixed(1)} GB · evidence ${ev} · outbox ${h.outbox_depth ?? "—"}${h.error ? ` · <span class="bad">${esc(h.error)}</span>` : ""}`;
    $("#sources tbody").innerHTML = h.sources.map((s) => `<tr><td>${esc(s.spec)}</td><td>${s.fps.toFixed(1)}</td><td>${s.frames}</td><td>${s.ng}</td><td>${s.dropped}</td><td>${s.reconnects}</td></tr>`).join("");
    $("#sinks tbody").innerHTML = h.sinks.map((s) => `<tr><td>${esc(s.sink)}</td><td>${s.taken}</td><td>${s.dropped}</td><td class="${s.failed ? "bad" : ""}">${s.failed}</td><td>${s.queue ?? ""}</td></tr>`).join("");
    const f2 = (x) => (x === undefined ? "—" : x.toFixed(2));
    $("#drift tbody").innerHTML = h.drift.map((d) => `<tr><td>${esc(d.recipe)}</td><td>${d.parts}</td><td>${f2(d.median)}</td><td>${f2(d.p95)}</td><td>${f2(d.calibrated_p50)} / ${f2(d.calibrated_p95)}</td><td>${f2(d.shift)}</td><td class="${d.alarm ? "bad" : "good"}">${d.alarm ? "DRIFT" : "ok"}</td></tr>`).join("") || '<tr><td colspan="7">no figures yet (drift tracking needs a station file and a model with stored calibration figures)</td></tr>';
    setTimeout(() => pages.health().catch(() => {}), 2000);
  },
  async audit() {
    const form = $("#audit-filter");
    async function load() {
      const q = new URLSearchParams([...new FormData(form)].filter(([, v]) => v));
      const rows = await api(`/api/audit?${q}`);
      $("#audit tbody").innerHTML = rows.map((a) => `<tr><td>${time(a.time_iso)}</td><td>${esc(a.who)}</td><td>${esc(a.action)}</td><td>${esc(a.recipe || "")}</td><td class="${a.outcome === "ok" ? "" : "bad"}">${esc(a.outcome)}${a.detail ? " — " + esc(a.detail) : ""}</td><td><code>${esc(JSON.stringify(a.before))} → ${esc(JSON.stringify(a.after))}</code></td></tr>`).join("");
    }
    form.addEventListener("submit", (e) => { e.preventDefault(); load(); }); await load();
  },
};


// one recipe's card: its heading, the engineer's actions (make active, roll back; for a recipe created on the box
// delete, rename and PLC index — not while it is active), its versions
const recipeHead = (r) => `<h2>${esc(r.name)} <small>index ${r.index}${r.active ? ' · <b class="badge">active</b>' : ""} · ${r.created ? `created on the box${r.created_by ? " by " + esc(r.created_by) : ""}` : "from the station file"}${r.has_model === false ? " · <b>no model yet</b>: it judges nothing (PLC error 7) — collect good parts below, fit, deploy" : ""} · threshold ${r.threshold_scale} · min area ${r.min_defect_area} px${r.review_band ? ` · review from ${r.review_band}` : ""}${r.good_scores ? ` · held-out good parts score ${r.good_scores.p50.toFixed(2)} (median), ${r.good_scores.p95.toFixed(2)} (p95) on the score scale (0 typical good, 1 threshold)` : ""}${r.ignore ? " · ignore mask" : ""}</small></h2>`;
const versionsTable = (r) => `<table><thead><tr><th>version</th><th>status</th><th>deployed</th><th>by</th><th>sha256</th><th></th></tr></thead><tbody>${r.versions.slice().reverse().map((v) => `<tr><td>v${v.version}</td><td>${esc(v.status)}</td><td>${esc(new Date(v.deployed_at * 1000).toISOString().slice(0, 19).replace("T", " "))}</td><td>${esc(v.by)}</td><td><code>${esc(v.sha256.slice(0, 12))}</code></td><td></td></tr>`).join("") || '<tr><td colspan="6" class="hint">no version yet: the first deploy is v1</td></tr>'}</tbody></table>`;
function recipeActions(r) {
  const n = esc(r.name), buttons = [
    r.active ? "" : `<button type="button" data-activate="${n}">make active</button>`,
    r.rollback_to != null ? `<button type="button" data-rollback="${n}">roll back to v${r.rollback_to}, the version that ran before</button>` : "",
    r.created && !r.active ? `<button type="button" class="danger" data-delete="${n}" data-index="${r.index}">delete</button>` : ""].join(" ");
  const fixed = r.versions.length > 0; // its versions are kept by its name: the name stays (the box refuses it too)
  const edit = !r.created ? "" : r.active ? '<p class="hint">the active recipe: make another one active to rename or delete it</p>'
    : `<details><summary>rename / PLC index</summary><form class="filters edit-recipe" data-recipe="${n}"><label>name <input name="name" value="${n}" required maxlength="64" pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}" size="16"${fixed ? ' readonly title="it has model versions, kept by its name: only its PLC index can change"' : ""}></label><label>PLC index <input name="plc_index" type="number" min="0" max="65535" step="1" size="6" value="${r.index}"></label><button type="submit">save</button></form></details>`;
  return buttons.trim() || edit ? `<div class="engineer-only">${buttons.trim() ? `<p class="actions">${buttons}</p>` : ""}${edit}</div>` : "";
}
// a created recipe renamed and/or given another PLC index (only what changed is sent)
async function editRecipe(f) {
  const old = f.dataset.recipe, name = f.elements.namedItem("name").value, index = f.elements.namedItem("plc_index").value;
  const body = Object.assign({}, name !== old ? { name } : {}, index !== "" && +index !== +f.elements.namedItem("plc_index").defaultValue ? { plc_index: +index } : {});
  const r = await api(`/api/recipes/${encodeURIComponent(old)}`, { json: body });
  toast(`recipe ${old} → ${r.recipe}, PLC index ${r.index}`); await renderRecipes();
}
// the Recipes page's buttons (one listener for every card, set once)
async function recipeClick(e) {
  const d = e.target.dataset || {};
  if (d.rollback) {
    const r = await api(`/api/rollback?recipe=${encodeURIComponent(d.rollback)}`, { method: "POST" }); toast(`${d.rollback}: v${r.before.version} → v${r.after.version}`);
  } else if (d.activate) {
    await api(`/api/recipe/active?name=${encodeURIComponent(d.activate)}`, { method: "POST" }); toast(`${d.activate} is the active recipe now`);
  } else if (d.delete) {
    if (!confirm(`Delete recipe ${d.delete} (PLC index ${d.index})?\n\nIts PLC index is free at once and it does not come back at the next start. Its model versions are kept on disk (the model store's .deleted/ folder).`)) return;
    const r = await api(`/api/recipes/${encodeURIComponent(d.delete)}`, { method: "DELETE" }); toast(`recipe ${r.deleted} deleted: ${r.detail}`);
  } else return;
  await renderRecipes();
}
// the recipes page's content (rendered again after a deploy or rollback; its handlers are set, not added)
async function renderRecipes() {
    const rs = await api("/api/recipes");
    $("#recipes").innerHTML = rs.map((r) => `<div class="card">${recipeHead(r)}${recipeActions(r)}${versionsTable(r)}</div>`).join("");
    for (const f of document.querySelectorAll("#recipes form.edit-recipe")) f.onsubmit = (e) => { e.preventDefault(); editRecipe(f).catch(() => {}); };
    for (const sel of [$("#recipe-select"), $("#deploy-recipe"), $("#dataset-recipe"), $("#fit-recipe")]) sel.innerHTML = rs.map((r) => `<option>${esc(r.name)}</option>`).join("");
    $("#new-recipe-copy").innerHTML = '<option value="">nothing: the defaults</option>' + rs.map((r) => `<option>${esc(r.name)}</option>`).join("");
    $("#new-recipe").onsubmit = async (e) => {
      e.preventDefault(); const n = $("#new-recipe"), v = (k) => n.elements.namedItem(k).value;
      const r = await api("/api/recipes", { json: { name: v("name"), plc_index: v("plc_index") === "" ? null : +v("plc_index"), copy_from: v("copy_from") || null } })
        .catch((err) => { $("#new-recipe-result").textContent = `refused: ${err.message}`; throw err; });
      $("#new-recipe-result").textContent = `recipe ${r.recipe} created: PLC index ${r.index}${r.copied_from ? `, settings of ${r.copied_from}` : ""} — no model yet: select it (register 11 = ${r.index}), collect good parts, fit, deploy`;
      toast(`recipe ${r.recipe} created (PLC index ${r.index})`); n.reset(); await renderRecipes();
    };
    const f = $("#settings"); const cur = () => rs.find((r) => r.name === f.recipe.value);
    const fill = () => { f.threshold.value = cur().threshold_scale; f.min_defect_area.value = cur().min_defect_area; f.review_band.value = cur().review_band ?? ""; $("#apply").disabled = true; };
    f.recipe.onchange = fill; fill();
    const body = () => ({ recipe: f.recipe.value, threshold: +f.threshold.value, min_defect_area: +f.min_defect_area.value, review_band: f.review_band.value === "" ? null : +f.review_band.value, n: +f.n.value });
    $("#preview").onclick = async () => {
      const p = await api("/api/preview", { json: body() });
      $("#preview-result").innerHTML = `On the last <b>${p.frames}</b> saved frames of ${esc(p.recipe)}: <b id="changed">${p.changed}</b> verdicts would change (NG ${p.ng_now} → ${p.ng_proposed}, REVIEW ${p.review_now} → ${p.review_proposed}).`;
      $("#apply").disabled = false;
    };
    $("#apply").onclick = async () => { const r = await api("/api/recipe-settings", { json: body() }); toast(`applied to ${r.recipe}`); $("#apply").disabled = true; };
    const collectStatus = async () => {
      const c = await api("/api/collect").catch(() => ({ state: "unavailable" }));
      $("#collect-status").textContent = c.state === "idle" ? "" : c.state === "unavailable" ? "this run collects nothing" : `${c.state}: ${c.kept} of ${c.count} kept (${c.duplicates} near-duplicates skipped) in ${c.folder}`;
      $("#collect-download").disabled = !(c.kept > 0);
      document.body.dataset.collect = c.state;
      if (c.state === "collecting") setTimeout(collectStatus, 1000);
    };
    $("#collect").onsubmit = async (e) => { e.preventDefault(); const f = $("#collect"); await api("/api/collect", { json: { count: +f.count.value, min_change: +f.min_change.value } }); collectStatus(); };
    $("#collect-download").onclick = async () => {
      const res = await api("/api/collect.zip", { raw: true }); const a = document.createElement("a");
      a.href = URL.createObjectURL(await res.blob()); a.download = "collected.zip"; document.body.append(a); a.click(); a.remove();
    };
    collectStatus();
    const fitStatus = async () => {
      if (document.body.dataset.role !== "engineer") return;  // the fit is the engineer's (the API says 403 to others)
      const j = await api("/api/fit");
      document.body.dataset.fit = j.state;
      $("#fit-cancel").disabled = j.state !== "running";
      const eta = j.eta_s != null ? `, about ${Math.ceil(j.eta_s)} s left` : "";
      $("#fit-status").textContent = j.state === "running" ? `${j.kind === "update" ? "updating" : "fitting"} ${j.recipe}: ${j.stage} ${j.done} of ${j.total}${eta}` : ["failed", "cancelled", "unavailable"].includes(j.state) ? `${j.state}: ${j.error}` : "";
      const card = $("#fit-card"); card.hidden = j.state !== "done";
      if (j.state === "done") {
        const c = j.card, f2 = (x) => (x == null ? "—" : x.toFixed(3));
        const kinds = Object.entries(c.no_defect_kinds).map(([k, v]) => `${esc(k)} ${f2(v)}`).join(", ");
        card.querySelector("tbody").innerHTML = [["recipe", esc(j.recipe)], ["images", `${c.images} (${c.held_out} held out for the thresholds)`], ["tiles", c.tiles ? `${Number(c.tiles.rows)}×${Number(c.tiles.cols)}, each inspected at the model's size` : "whole frame"],
          ["no-defect check (image AUROC on synthetic anomalies of held-out parts)", `<b>${f2(c.no_defect_check)}</b> (${kinds})`],
          ["held-out good parts on the score scale", `median ${f2(c.good_p50)}, p95 ${f2(c.good_p95)} (1 = the threshold)`],
          ["thresholds (raw)", `image ${c.image_threshold.toPrecision(4)}, pixel ${c.pixel_threshold.toPrecision(4)}`],
          ["memory", c.update ? `${c.update.entries_before} → ${c.update.entries_after} entries (${c.update.added_images} reviewed good parts added)` : `${c.entries} entries`],
          ...(c.update ? [["method", `${esc(c.update.mode)}` + (c.update.look ? ` — the new look (defocus ${Number(c.update.look.sigma_px)} px, mid-grey 128 → ${Number(c.update.look.mid_grey_to)}) carried to the model's own training images` : "")]] : []),
          ...(c.compare ? [["reviewed good parts judged NG (live → new)", `<b>${c.compare.live.good_ng} → ${c.compare.new.good_ng}</b> of ${c.compare.good}` +
              (c.compare.good > c.compare.held_out_good ? ` (${c.compare.good - c.compare.held_out_good} of them learned by the update)` : "")],
            ["… of them held out of the update (the fair figure)", c.compare.held_out_good ? `<b>${c.compare.live.held_out_good_ng} → ${c.compare.new.held_out_good_ng}</b> of ${c.compare.held_out_good}` : "none held out"],
            ["reviewed defects caught (live → new)", c.compare.defects ? `<b>${c.compare.live.defects_ng} → ${c.compare.new.defects_ng}</b> of ${c.compare.defects}` : "none reviewed"]] : []),
          ...(c.warnings || []).map((w) => ["warning", `<span class="warn">${esc(w)}</span>`]),
          [j.kind === "update" ? "update" : "fit", `${c.seconds} s`]].map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
      }
      if (j.state === "running") setTimeout(fitStatus, 1000);
    };
    $("#fit").onsubmit = async (e) => { e.preventDefault(); const tiles = $("#fit-tiles").value; await api("/api/fit", { json: { recipe: $("#fit-recipe").value, ...(tiles ? { tiles } : {}) } }); fitStatus(); };
    $("#fit-reviewed").onclick = async () => { await api("/api/fit", { json: { recipe: $("#fit-recipe").value, source: "reviewed" } }); fitStatus(); };
    $("#fit-cancel").onclick = async () => { await api("/api/fit/cancel", { method: "POST" }); fitStatus(); };
    $("#fit-deploy").onclick = async () => { const r = await api("/api/fit/deploy", { method: "POST" }); toast(`${r.recipe}: v${r.after.version} is live`); await renderRecipes(); };
    $("#fit-discard").onclick = async () => { await api("/api/fit/discard", { method: "POST" }); fitStatus(); };
    fitStatus();
    $("#dataset").onsubmit = async (e) => {
      e.preventDefault(); const d = $("#dataset");
      const q = `recipe=${encodeURIComponent(d.recipe.value)}&held_out=${+d.held_out.value}&include_ok=${d.include_ok.checked ? "yes" : "no"}`;
      const res = await api(`/api/dataset?${q}`, { raw: true }); const counts = JSON.parse(res.headers.get("X-Counts") || "{}");
      const a = document.createElement("a"); a.href = URL.createObjectURL(await res.blob()); a.download = `${d.recipe.value}-reviewed.zip`;
      document.body.append(a); a.click(); a.remove();
      $("#dataset-result").textContent = "downloaded: " + Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(", ");
    };
    $("#deploy").onsubmit = async (e) => {
      e.preventDefault(); const files = [...$("#bundle").files]; if (!files.length) return;
      const zip = await zipFiles(files); const r = await api(`/api/deploy?recipe=${encodeURIComponent($("#deploy-recipe").value)}&source=web+upload`, { body: zip, headers: { "Content-Type": "application/zip" } });
      $("#deploy-result").textContent = `${r.recipe}: v${r.before.version} → v${r.after.version} live (self-test ${r.self_test.precision} ok)`; renderRecipes();
    };
}

// a minimal zip writer (stored, no compression) for the deploy upload: the bundle's files as the box expects them
async function zipFiles(files) {
  const crcTable = new Uint32Array(256).map((_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0; });
  const crc32 = (b) => { let c = 0xffffffff; for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const parts = [], central = []; let offset = 0;
  for (const f of files) {
    const data = new Uint8Array(await f.arrayBuffer()); const name = new TextEncoder().encode(f.name); const crc = crc32(data);
    const h = new DataView(new ArrayBuffer(30)); [[0, 0x04034b50, 4], [4, 20, 2], [14, crc, 4], [18, data.length, 4], [22, data.length, 4], [26, name.length, 2]].forEach(([o, v, n]) => n === 4 ? h.setUint32(o, v, true) : h.setUint16(o, v, true));
    const c = new DataView(new ArrayBuffer(46)); [[0, 0x02014b50, 4], [4, 20, 2], [6, 20, 2], [16, crc, 4], [20, data.length, 4], [24, data.length, 4], [28, name.length, 2], [42, offset, 4]].forEach(([o, v, n]) => n === 4 ? c.setUint32(o, v, true) : c.setUint16(o, v, true));
    parts.push(h, name, data); central.push(c, name); offset += 30 + name.length + data.length;
  }
  const size = central.reduce((a, p) => a + (p.byteLength ?? p.length), 0);
  const end = new DataView(new ArrayBuffer(22)); [[0, 0x06054b50, 4], [8, files.length, 2], [10, files.length, 2], [12, size, 4], [16, offset, 4]].forEach(([o, v, n]) => n === 4 ? end.setUint32(o, v, true) : end.setUint16(o, v, true));
  return new Blob([...parts, ...central, end]);
}

whoami().then(() => pages[page]?.()).catch(() => {});
