// Live regions of the task board and the period page: server-sent events from
// /api/v1/stream?topics=... say that something changed; the region then fetches its
// server-rendered fragment again (data-fragment) and swaps it in, without a reload.
// When the hub refuses the stream (stream.js), the regions refresh on an interval.
// No framework and no inline script (the CSP forbids it).
(function () {
  "use strict";
  var regions = Array.prototype.slice.call(document.querySelectorAll("[data-fragment][data-stream]"));
  if (!regions.length || !window.EventSource || !window.peershopStream) { return; }
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

  regions.forEach(function (region) {
    region.addEventListener("focusout", function () {
      if (region.dataset.pending === "yes") { setTimeout(function () { schedule(region); }, 0); }
    });
  });

  function refreshAll() { regions.forEach(schedule); }
  var first = regions[0];
  var on = [];
  regions.forEach(function (region) {
    (region.dataset.events || "").split(" ").forEach(function (name) {
      if (name) { on.push([name, function () { schedule(region); }]); }
    });
  });
  window.peershopStream({
    url: first.dataset.stream,
    pollS: Number(first.dataset.poll) || 10,
    retryS: Number(first.dataset.retry) || 30,
    live: live,
    on: on,
    poll: refreshAll,
    opened: refreshAll,  // changes made while the stream was down were not announced
  });
})();
