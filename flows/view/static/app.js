// Keyboard use and live updates; no framework, no network beyond this server.
(function () {
  "use strict";
  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("tr[data-href], article[data-href]"));
  }
  var current = -1;
  function focusRow(i) {
    var all = rows();
    if (!all.length) return;
    current = Math.max(0, Math.min(all.length - 1, i));
    all.forEach(function (r) { r.classList.remove("focused"); });
    all[current].classList.add("focused");
    all[current].scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    var typing = t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
    if (e.key === "/" && !typing) { var q = document.getElementById("q"); if (q) { e.preventDefault(); q.focus(); q.select(); } return; }
    if (typing) { if (e.key === "Escape") t.blur(); return; }
    if (e.key === "j") focusRow(current + 1);
    else if (e.key === "k") focusRow(current - 1);
    else if (e.key === "Enter" && current >= 0) { window.location = rows()[current].getAttribute("data-href"); }
    else if (e.key === "u") { var up = document.getElementById("up"); window.location = up ? up.href : "/"; }
    else if (e.key === "n") { var n = document.querySelector("a[rel=next]"); if (n) window.location = n.href; }
    else if (e.key === "p") { var p = document.querySelector("a[rel=prev]"); if (p) window.location = p.href; }
  });
  document.addEventListener("click", function (e) {
    var row = e.target.closest && e.target.closest("tr[data-href]");
    if (row && !e.target.closest("a, summary, details, button, select, input")) window.location = row.getAttribute("data-href");
  });
  // Live: while the run is going, new shards replace the rows in place (no reload).
  var table = document.getElementById("pairs");
  if (table && table.getAttribute("data-live")) {
    var run = table.getAttribute("data-run");
    var seen = null;
    var tick = function () {
      fetch("/api/runs/" + encodeURIComponent(run) + "/live").then(function (r) { return r.json(); }).then(function (s) {
        if (seen !== null && s.shards !== seen) {
          var qs = window.location.search ? window.location.search + "&fragment=1" : "?fragment=1";
          fetch(window.location.pathname + qs).then(function (r) { return r.text(); }).then(function (html) {
            document.getElementById("rows").innerHTML = html;
            document.getElementById("live").hidden = false;
          });
          fetch("/api/runs/" + encodeURIComponent(run) + "/pairs" + window.location.search).then(function (r) { return r.json(); })
            .then(function (d) { document.getElementById("total").textContent = d.total; });
        }
        seen = s.shards;
        if (s.status === "running") window.setTimeout(tick, 3000);
      }).catch(function () { window.setTimeout(tick, 10000); });
    };
    tick();
  }
})();
