// A kiosk login (badge and PIN) ends by itself, so the next person at the kiosk does
// not act as the last one: after data-idle seconds without a key, a click or a touch,
// and when a badge is tapped on the kiosk's keyboard-wedge reader (it types the uid,
// then Enter) while no text field has the focus.  The server ends an idle kiosk login
// as well (web/logins.py); this also takes the member's page off the screen.
// No framework and no inline script (the CSP forbids it).
(function () {
  "use strict";
  var tap = document.getElementById("kiosk-tap");
  var logout = document.getElementById("logout");
  if (!tap || !logout) { return; }
  var idleMs = Number(tap.dataset.idle) * 1000;
  var timer = null;
  var typed = "";  // hex digits typed outside text fields since the last other key

  function active() {
    clearTimeout(timer);
    timer = setTimeout(function () { logout.submit(); }, idleMs);
  }

  function editing() {
    var el = document.activeElement;
    return el && (/^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName) || el.isContentEditable);
  }

  ["pointerdown", "touchstart", "wheel"].forEach(function (name) {
    document.addEventListener(name, active, { capture: true, passive: true });
  });
  document.addEventListener("keydown", function (event) {
    active();
    if (editing()) {
      typed = "";
      return;
    }
    if (event.key === "Enter") {
      if (/^[0-9A-Fa-f]{8,20}$/.test(typed)) {
        event.preventDefault();
        tap.elements["tap-badge"].value = typed;
        tap.submit();
      }
      typed = "";
    } else if (/^[0-9A-Fa-f]$/.test(event.key)) {
      typed = (typed + event.key).slice(-20);
    } else {
      typed = "";
    }
  }, true);
  active();
})();
