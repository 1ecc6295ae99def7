// The floor's live updates: server-sent events from /api/v1/stream (stream.js).  When
// the hub refuses the stream, the floor polls /api/v1/tools and its panels instead.
// No framework and no inline script (the CSP forbids it); text goes in by textContent.
(function () {
  "use strict";
  var tools = document.getElementById("tools");
  if (!tools || !window.EventSource || !window.peershopStream) { return; }
  var live = document.getElementById("live");
  if (live && live.dataset.live !== "yes") { return; }
  var panelsUrl = tools.dataset.panels;
  var panels = document.getElementById("panels");

  // Times in the shop's time zone (data-tz), as the server writes them (web/__init__.py,
  // the clock filter): "21:05" today, "2026-12-06 21:05" on another day.
  var tz = tools.dataset.tz || undefined;
  var parts;
  try {
    parts = new Intl.DateTimeFormat("en-CA", {
      timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    });
  } catch (e) {  // a zone this browser does not know: its own
    parts = new Intl.DateTimeFormat("en-CA", {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    });
  }
  function local(d) {
    var out = {};
    parts.formatToParts(d).forEach(function (p) { out[p.type] = p.value; });
    return { date: out.year + "-" + out.month + "-" + out.day, time: out.hour + ":" + out.minute };
  }
  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d)) { return ""; }
    var at = local(d);
    return at.date === local(new Date()).date ? at.time : at.date + " " + at.time;
  }

  function setField(card, name, text) {
    var el = card.querySelector('[data-field="' + name + '"]');
    if (el) { el.textContent = text; }
    return el;
  }

  function applyTool(data) {
    var card = document.getElementById("tool-" + data.tool);
    if (!card) { location.reload(); return; }  // a tool added since the page loaded
    card.className = "tool state-" + data.state;
    setField(card, "state", data.state.replace("_", " "));
    setField(card, "member", data.member || "");
    var since = setField(card, "since", data.since && data.state !== "free" ? "since " + clock(data.since) : "");
    if (since) { since.dataset.since = data.since || ""; }
    setField(card, "w", data.w === null || data.w === undefined ? "" : Math.round(data.w) + " W");
    card.dataset.updated = String(Date.now());
  }

  var refreshTimer = null;
  function refreshPanels() {
    if (refreshTimer) { return; }
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      fetch(panelsUrl, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) { panels.innerHTML = html; })  // server-rendered, escaped
        .catch(function () { /* the next batch tries again */ });
    }, 300);
  }

  function poll() {
    fetch(tools.dataset.tools, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (body) {
        body.tools.forEach(function (t) {
          applyTool({ tool: t.id, state: t.state, member: t.member, since: t.since, w: t.w });
        });
      })
      .catch(function () { /* the next poll tries again */ });
    refreshPanels();
  }

  window.peershopStream({
    url: tools.dataset.stream,
    pollS: Number(tools.dataset.poll) || 10,
    retryS: Number(tools.dataset.retry) || 30,
    live: live,
    on: [
      ["tool", function (e) { applyTool(JSON.parse(e.data)); }],
      ["batch", refreshPanels],
      ["session", refreshPanels],
    ],
    poll: poll,
    opened: refreshPanels,  // the stream's first events are every tool's state
  });
})();
