// The run's own live page (GET /): verdict, figures, MJPEG streams. No token in any URL: the page logs in with the
// token once (POST /api/login), keeps the session in sessionStorage and sends it as X-Session; the streams and
// thumbnails come with short-lived signed URLs from status.json.
"use strict";
const $ = (id) => document.getElementById(id);
const KEY = "edge-stpm-session";
const esc = (t) => String(t ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
let shown = false, lastThumbs = "", paused = false;

async function get(path) {
  const res = await fetch(path, { headers: { "X-Session": sessionStorage.getItem(KEY) || "" } });
  if (res.status === 401) { // a session the station no longer knows (a restart): forget it, ask once, stop polling
    sessionStorage.removeItem(KEY); $("login").hidden = false; paused = true; throw new Error("login");
  }
  if (!res.ok) throw new Error(String(res.status));
  return res.json();
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const res = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }) });
  if (!res.ok) { $("login-error").textContent = res.status === 429 ? "too many tries: wait a minute" : "unknown token"; return; }
  sessionStorage.setItem(KEY, (await res.json()).session);
  $("login").hidden = true; $("token").value = ""; shown = false; paused = false; tick().catch(() => {});
});

function streams(s) {
  const many = s.sources.length > 1 ? " many" : "";
  $("streams").innerHTML = s.sources.map((src) => `<img class="live${many}" src="/${esc(src.stream)}" alt="live overlay ${esc(src.spec)}" title="${esc(src.spec)}">`).join("");
  for (const img of $("streams").querySelectorAll("img")) img.addEventListener("error", () => { shown = false; });
  $("model").textContent = Object.entries(s.model).map(([k, v]) => `${k} ${v}`).join(" ");
  shown = true;
}

async function tick() {
  const s = await get("/status.json");
  if (!shown) streams(s);
  const v = $("verdict"); v.textContent = s.verdict || "…"; v.className = "v " + (s.verdict || "");
  $("score").textContent = s.normalised_score == null ? "" : `${s.normalised_score.toFixed(2)} (1.00 = score ${s.threshold.toPrecision(4)})`;
  $("fps").textContent = s.fps.toFixed(1);
  $("lat").textContent = `${s.latency_ms.verdict.toFixed(1)} ms to verdict, ${s.latency_ms.picture.toFixed(1)} ms to picture`;
  for (const k of ["frames", "ng", "dropped"]) $(k).textContent = s[k];
  const thumbs = s.recent_ng.map((n) => `<a href="/${esc(n.url)}"><img src="/${esc(n.url)}" title="frame ${n.frame}: ${n.normalised_score.toFixed(2)}"></a>`).join("");
  if (thumbs !== lastThumbs) { $("thumbs").innerHTML = thumbs; lastThumbs = thumbs; }
}
setInterval(() => { if (!paused) tick().catch(() => {}); }, 1000);
tick().catch(() => {});
