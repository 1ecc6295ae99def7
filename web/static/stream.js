// A page's live stream, /api/v1/stream, with its fallback; floor.js and live.js use it.
// EventSource reconnects by itself after a network error, but any answer other than a
// stream (the 503 of a hub whose http.streams are all open) closes it for good.  Then
// the page polls (options.poll, every data-poll seconds), #live says it is not live, and
// the stream is asked for again after about data-retry seconds.
// No framework and no inline script (the CSP forbids it).
(function () {
  "use strict";
  // options: url, pollS, retryS, live (the #live element or null), on ([event, handler]
  // pairs),
  // poll() (refresh everything by plain fetch), opened() (the stream opened after an
  // error or a time of polling: what it did not announce meanwhile is to be fetched)
  window.peershopStream = function (options) {
    var live = options.live;
    var pollTimer = null;
    var broken = false;

    function show(mode) {  // live | reconnecting | polling (data-mode, for people and tests)
      if (!live) { return; }
      live.hidden = false;
      live.dataset.mode = mode;
      live.className = mode === "live" ? "live on" : "live off";
      live.textContent = mode === "live" ? "live"
        : mode === "polling" ? "not live: updates every " + options.pollS + " s" : "reconnecting";
    }

    function fallBack() {
      show("polling");
      if (!pollTimer) {
        options.poll();  // what changed since the stream was refused or ended
        pollTimer = setInterval(options.poll, options.pollS * 1000);
      }
      // spread out, so that the pages refused together do not all ask again together
      setTimeout(connect, options.retryS * 1000 * (1 + Math.random() / 3));
    }

    function connect() {
      var source = new EventSource(options.url, { withCredentials: true });
      options.on.forEach(function (pair) { source.addEventListener(pair[0], pair[1]); });
      source.addEventListener("open", function () {
        if (pollTimer) {
          clearInterval(pollTimer);
          pollTimer = null;
        }
        show("live");
        if (broken) {
          broken = false;
          options.opened();
        }
      });
      source.addEventListener("error", function () {
        broken = true;
        if (source.readyState === EventSource.CLOSED) { fallBack(); } else { show("reconnecting"); }
      });
    }
    connect();
  };
})();
