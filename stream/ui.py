"""The operator dashboard served at ``/ui``: one self-contained page that polls ``/api/status``.

No external assets (works air-gapped, passes a strict CSP). Every number has a ``data-k``
attribute naming its field in ``/api/status``, which is what the browser test reads back.
"""

from __future__ import annotations

__all__ = ["DASHBOARD"]

DASHBOARD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lepton-stream</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:0;background:#0f1419;color:#e6e6e6}
 header{padding:12px 20px;background:#1b2430;display:flex;gap:16px;align-items:baseline}
 h1{font-size:18px;margin:0} .dim{color:#8b98a5}
 main{padding:16px 20px;display:grid;gap:16px;grid-template-columns:repeat(auto-fill,minmax(180px,1fr))}
 .card{background:#1b2430;border-radius:8px;padding:12px}
 .card b{display:block;font-size:24px;margin-top:4px}
 section{padding:0 20px 16px} table{width:100%;border-collapse:collapse}
 td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #2a3542;font-variant-numeric:tabular-nums}
 .high{color:#ff6b6b} .medium{color:#ffd166} .ok{color:#06d6a0} .bad{color:#ff6b6b}
</style></head><body>
<header><h1>lepton-stream</h1><span class="dim" data-k="app_id">-</span>
 <span data-k="ready_text" class="dim">connecting...</span>
 <span class="dim">model <span data-k="model_version">-</span></span>
 <span class="dim">updated <span id="updated">never</span></span></header>
<main>
 <div class="card">events/s (10 s)<b data-k="live.events_per_s">-</b></div>
 <div class="card">latency p50 ms<b data-k="live.latency_p50_ms">-</b></div>
 <div class="card">latency p99 ms<b data-k="live.latency_p99_ms">-</b></div>
 <div class="card">consumer lag<b data-k="lag.total">-</b></div>
 <div class="card">nodes<b data-k="graph.nodes">-</b></div>
 <div class="card">edges<b data-k="graph.edges">-</b></div>
 <div class="card">events applied<b data-k="totals.applied">-</b></div>
 <div class="card">dead-lettered<b data-k="deadlettered">-</b></div>
 <div class="card">batch max / window s<b><span data-k="batching.max_batch">-</span> /
  <span data-k="batching.window_s">-</span></b></div>
 <div class="card">owned partitions<b data-k="owned_partitions">-</b></div>
</main>
<section><h2>Latest alerts</h2><table><thead><tr><th>severity</th><th>kind</th><th>score</th>
 <th>src</th><th>dst</th><th>id</th></tr></thead><tbody id="alerts"></tbody></table></section>
<section><h2>Predictions (metadata sample)</h2><table><thead><tr><th>id</th><th>batch</th><th>model</th>
 <th>partners</th><th>node / top partners</th></tr></thead><tbody id="preds"></tbody></table></section>
<script>
"use strict";
function get(o, path) { return path.split(".").reduce((x, k) => (x == null ? x : x[k]), o); }
function fmt(v) { if (v == null) return "-"; if (Array.isArray(v)) return v.join(","); if (typeof v === "number")
  return Number.isInteger(v) ? v.toLocaleString("en-US") : v.toFixed(1); return String(v); }
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls;
  return td; }
function rows(id, items, cols) { const body = document.getElementById(id); body.replaceChildren();
  for (const it of items) { const tr = document.createElement("tr"); for (const c of cols) tr.appendChild(c(it));
    body.appendChild(tr); } }
async function refresh() {
  try {
    const s = await (await fetch("/api/status", {cache: "no-store"})).json();
    s.ready_text = s.ready ? "ready" : "not ready";
    for (const el of document.querySelectorAll("[data-k]")) { el.textContent = fmt(get(s, el.dataset.k)); }
    const r = document.querySelector("[data-k=ready_text]"); r.className = s.ready ? "ok" : "bad";
    rows("alerts", s.alerts, [a => cell(a.severity, a.severity), a => cell(a.kind), a => cell(a.score.toFixed(4)),
      a => cell(a.src), a => cell(a.dst), a => cell(a.id)]);
    rows("preds", s.predictions, [p => cell(p.id), p => cell(p.batch), p => cell(p.model_version),
      p => cell(p.partners), p => cell(s.plaintext ? p.node + " -> " + p.top.map(t => t[0]).join(", ") : "hidden")]);
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.loaded = "1";
  } catch (e) { document.querySelector("[data-k=ready_text]").textContent = "unreachable"; }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
