// The floor's live updates: server-sent events from /api/v1/stream.
// No framework and no inline script (the CSP forbids it); text goes in by textContent.
(function () {
  "use strict";
  var tools = document.getElementById("tools");
  if (!tools || !window.EventSource) { return; }
  var live = document.getElementById("live");
  if (live && live.dataset.live !== "yes") { return; }
  var panelsUrl = tools.dataset.panels;
  var panels = document.getElementById("panels");

  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d)) { return ""; }
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
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

  var source = new EventSource(tools.dataset.stream, { withCredentials: true });
  source.addEventListener("tool", function (e) { applyTool(JSON.parse(e.data)); });
  source.addEventListener("batch", refreshPanels);
  source.addEventListener("session", refreshPanels);
  source.addEventListener("open", function () {
    if (live) { live.className = "live on"; live.textContent = "live"; }
  });
  source.addEventListener("error", function () {
    if (live) { live.className = "live off"; live.textContent = "reconnecting"; }
  });
})();
