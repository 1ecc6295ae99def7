// Live regions of the task board and the period page: server-sent events from
// /api/v1/stream?topics=... say that something changed; the region then fetches its
// server-rendered fragment again (data-fragment) and swaps it in, without a reload.
// No framework and no inline script (the CSP forbids it).
(function () {
  "use strict";
  var regions = Array.prototype.slice.call(document.querySelectorAll("[data-fragment][data-stream]"));
  if (!regions.length || !window.EventSource) { return; }
  var live = document.getElementById("live");

  function editing(region) {
    // Someone typing a weight or hours in this region keeps what they typed: the
    // refresh waits until the field loses focus.
    var el = document.activeElement;
    return el && region.contains(el) && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName);
  }

  function refresh(region) {
    if (editing(region)) {
      region.dataset.pending = "yes";
      return;
    }
    region.dataset.pending = "";
    fetch(region.dataset.fragment, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        // logged out meanwhile: the fetch followed a redirect to the login page
        return r.ok && !r.redirected ? r.text() : Promise.reject(r.status);
      })
      .then(function (html) {
        region.innerHTML = html;  // server-rendered and escaped
        region.dataset.updated = String(Date.now());
      })
      .catch(function () { /* the next change tries again */ });
  }

  function schedule(region) {
    if (region.refreshTimer) { return; }  // several changes at once: one fetch
    region.refreshTimer = setTimeout(function () {
      region.refreshTimer = null;
      refresh(region);
    }, 150);
  }

  var source = new EventSource(regions[0].dataset.stream, { withCredentials: true });
  var lost = false;
  regions.forEach(function (region) {
    (region.dataset.events || "").split(" ").forEach(function (name) {
      if (name) { source.addEventListener(name, function () { schedule(region); }); }
    });
    region.addEventListener("focusout", function () {
      if (region.dataset.pending === "yes") { setTimeout(function () { schedule(region); }, 0); }
    });
  });
  source.addEventListener("open", function () {
    if (live) { live.hidden = false; live.className = "live on"; live.textContent = "live"; }
    if (lost) {  // changes made while the stream was down were not announced
      lost = false;
      regions.forEach(schedule);
    }
  });
  source.addEventListener("error", function () {
    lost = true;
    if (live) { live.className = "live off"; live.textContent = "reconnecting"; }
  });
})();
