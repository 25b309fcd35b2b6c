"""``mappedtrace view``: one self-contained HTML page (no server, no network,
no library): the type histogram with retained sizes, an icicle of the sampled
dominator tree, the paths to the roots of a selected object, the holders, and
the growth between two snapshots when there are two.

The data goes into the page as one JSON document inside a
``<script type="application/json">`` element (``</`` escaped); the script
puts every string into the page with ``textContent``, never as markup, so
type names and root sources from the target cannot inject anything.
``#select=0xADDRESS`` or ``#node=ID`` in the URL selects an object on load.
"""
from __future__ import annotations

import json
from typing import IO

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>MappedTrace heap view</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; } td, th { padding: 2px 8px; text-align: right; white-space: nowrap; }
td:first-child, th:first-child { text-align: left; } tr:nth-child(even) { background: #f5f5f7; }
.bar { display: inline-block; height: 10px; background: #4a7bd0; vertical-align: middle; }
.bar.shallow { background: #9bb5e6; }
#icicle { position: relative; width: 100%; border: 1px solid #ccc; overflow: hidden; }
.cell { position: absolute; height: 20px; box-sizing: border-box; border: 1px solid #fff;
        background: #7ea6e0; font-size: 11px; overflow: hidden; white-space: nowrap; cursor: pointer;
        padding: 1px 3px; }
.cell.root { background: #e0a87e; } .cell.more { background: #cfcfcf; } .cell.all { background: #9fc79f; }
.cell.sel { outline: 2px solid #c00; z-index: 2; }
#selected { margin-top: 8px; padding: 6px; background: #fafae8; border: 1px solid #ddd; min-height: 20px; }
.muted { color: #777; } .exact { color: #176b17; } .cons { color: #a05a00; }
code { font-size: 12px; }
</style></head><body>
<h1 id="title"></h1><div id="summary"></div><div id="precision" class="muted"></div>
<h2>Dominator tree (retained sizes; click a box)</h2><div id="icicle"></div>
<div id="selected"><span class="muted">Select an object to see what keeps it alive.</span></div>
<h2>Types</h2><table id="types"></table>
<h2>Holders (what each global, thread-local or frame alone keeps alive)</h2><table id="holders"></table>
<div id="diff"></div>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function B(n) { const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; n = Number(n);
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (i ? n.toFixed(1) : n) + " " + u[i]; }
function hex(n) { return "0x" + Number(n).toString(16); }
function row(tbl, cells, head) { const tr = el("tr"); for (const c of cells) { const td = el(head ? "th" : "td");
  if (c instanceof Node) td.appendChild(c); else td.textContent = c; tr.appendChild(td); } tbl.appendChild(tr); }
function bar(v, max, cls) { const s = el("span", undefined, "bar" + (cls ? " " + cls : ""));
  s.style.width = Math.max(1, Math.round(160 * v / (max || 1))) + "px"; return s; }

document.getElementById("title").textContent = D.title;
const S = D.summary;
document.getElementById("summary").textContent = S.reachable + " reachable objects (" + B(S.reachable_bytes) +
  "), " + S.unreachable + " unreachable (" + B(S.unreachable_bytes) + ")";
const P = D.precision;
document.getElementById("precision").textContent = "precision: frames exact " + (P.frames_exact ?? "?") +
  " / conservative " + (P.frames_conservative ?? "?") + "; roots exact " + (P.roots_exact ?? "?") +
  " / conservative " + (P.roots_conservative ?? "?") + "; heap bytes typed " + B(P.heap_bytes_typed ?? 0) +
  " / scanned conservatively " + B(P.heap_bytes_conservative ?? 0);

// types
const T = document.getElementById("types");
row(T, ["type", "objects", "shallow", "", "retained", ""], true);
const tmax = Math.max(1, ...D.types.map(t => t.retained_bytes));
for (const t of D.types.slice(0, 60)) row(T, [t.type, String(t.objects), B(t.shallow_bytes), bar(t.shallow_bytes, tmax, "shallow"),
  B(t.retained_bytes), bar(t.retained_bytes, tmax)]);

// holders
const H = document.getElementById("holders");
row(H, ["holder", "kind", "roots", "retained", "root"], true);
for (const h of D.holders.slice(0, 40)) row(H, [h.holder, h.kind, String(h.roots), B(h.retained_bytes), h.exact ? "exact" : "conservative"]);

// icicle: each vertex spans its share of its parent's span
const nodes = D.tree, box = document.getElementById("icicle"), cells = [];
const kids = nodes.map(() => []);
for (const n of nodes) if (n.parent >= 0) kids[n.parent].push(n.id);
let depth = 0;
function layout(id, x, w, d) {
  const n = nodes[id]; n.x = x; n.w = w; n.d = d; depth = Math.max(depth, d);
  let off = x; const tot = n.retained || 1;
  for (const k of kids[id]) { const kw = w * nodes[k].retained / tot; layout(k, off, kw, d + 1); off += kw; }
}
if (nodes.length) layout(0, 0, 1, 0);
box.style.height = (22 * (depth + 1)) + "px";
for (const n of nodes) {
  if (n.w < 0.0015) continue;
  const c = el("div", n.label + " " + B(n.retained), "cell " + n.kind);
  c.style.left = (100 * n.x) + "%"; c.style.width = (100 * n.w) + "%"; c.style.top = (22 * n.d) + "px";
  c.title = n.label + (n.address ? " at " + hex(n.address) : "") + ": retained " + B(n.retained) +
            (n.count > 1 ? " (" + n.count + " vertices)" : "");
  c.dataset.id = n.id; c.addEventListener("click", () => select(n.id));
  box.appendChild(c); cells[n.id] = c;
}

function select(id) {
  const n = nodes[id]; if (!n) return;
  for (const c of box.querySelectorAll(".sel")) c.classList.remove("sel");
  if (cells[id]) cells[id].classList.add("sel");
  const s = document.getElementById("selected"); s.textContent = "";
  const h = el("div"); h.appendChild(el("b", n.label));
  h.appendChild(el("span", (n.address ? " at " + hex(n.address) + ", " + n.size + " B" : "") + ", retains " + B(n.retained)));
  s.appendChild(h);
  const chain = []; for (let p = n.parent; p > 0; p = nodes[p].parent) chain.unshift(nodes[p].label);
  s.appendChild(el("div", "dominated by: " + (chain.length ? chain.join(" \\u2192 ") : "(the roots together)"), "muted"));
  const ps = D.paths[String(id)];
  if (n.kind !== "object") return;
  if (!ps) { s.appendChild(el("div", "paths not computed for this object (only the biggest are)", "muted")); return; }
  ps.forEach((p, i) => {
    const d = el("div", undefined, "path");
    d.appendChild(el("div", "path " + (i + 1) + " (" + (p.exact ? "exact" : "conservative") + "): " + p.source, p.exact ? "exact" : "cons"));
    for (const hop of p.hops) d.appendChild(el("div", "\\u00a0\\u00a0\\u2192 word +" + hex(hop.via) + " " +
      (hop.exact ? "exact" : "conservative") + " \\u2192 " + hop.type + " at " + hex(hop.address) + " (" + hop.size + " B)"));
    s.appendChild(d);
  });
}

function fromHash() {
  const m = /^#(select|node)=([0-9a-fA-Fx]+)$/.exec(location.hash);
  if (!m) return;
  if (m[1] === "node") return select(Number(m[2]));
  const a = Number(m[2]);
  for (const n of nodes) if (n.kind === "object" && n.address <= a && a < n.address + Math.max(1, n.size)) return select(n.id);
  document.getElementById("selected").textContent = "no sampled object contains " + m[2];
}
window.addEventListener("hashchange", fromHash);
fromHash();

// diff
if (D.diff) {
  const X = D.diff, div = document.getElementById("diff");
  div.appendChild(el("h2", "Growth: " + X.before.label + " \\u2192 " + X.after.label));
  const t = X.totals;
  div.appendChild(el("div", t.objects_before + " \\u2192 " + t.objects_after + " objects, " + B(t.bytes_before) +
    " \\u2192 " + B(t.bytes_after) + "; " + t.new_objects + " new, " + t.gone_objects + " gone (matched by " + t.matched_by + ")"));
  const tb = el("table"); tb.id = "difftypes"; div.appendChild(tb);
  row(tb, ["type", "objects", "growth", "new", "gone"], true);
  for (const r of X.types.filter(r => r.growth_bytes || r.new_objects || r.gone_objects).slice(0, 40))
    row(tb, [r.type, r.objects_before + " \\u2192 " + r.objects_after, (r.growth_bytes >= 0 ? "+" : "-") + B(Math.abs(r.growth_bytes)),
             String(r.new_objects), String(r.gone_objects)]);
  X.suspects.forEach((s, i) => {
    const d = el("div", undefined, "suspect");
    d.appendChild(el("b", "suspect " + (i + 1) + ": " + s.holder + " retains +" + B(s.growth_bytes) + " more"));
    for (const p of s.path) d.appendChild(el("div", "\\u00a0\\u00a0\\u2192 " + p.type + " at " + hex(p.address) + ": " +
      B(p.retained_before) + " \\u2192 " + B(p.retained_after)));
    div.appendChild(d);
  });
}
document.body.dataset.ready = "1";
</script></body></html>
"""


def render(data: dict, stream: IO[str]) -> None:
    """Write the page for ``data`` (:func:`mappedtrace.analyses.heapview.view_data`)."""
    doc = json.dumps(data, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\!--")
    stream.write(_PAGE.replace("__DATA__", doc))
