// citykey manager console: small progressive enhancements. Every action works without this
// file (plain form posts answered with a redirect); it adds:
//  - live refresh: an element with data-live="<url>" gets its inner HTML replaced by that
//    server-rendered fragment every POLL_MS while the tab is visible (the server renders the
//    same partial template as the full page, so there is one source of markup);
//  - data-confirm="<question>" on a form asks before posting;
//  - data-autosubmit on a select submits its form on change;
//  - data-copy="<selector>" on a button copies that element's text.
// Polling, not server-sent events: the state lives in PostgreSQL (written by the event
// recorder and the gateway tracker), a 2-second poll of a few-kilobyte fragment is cheap,
// survives API restarts and load balancers without reconnect logic, and holds no connection
// (or database session) open per open tab.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var MAX_FAILURES = 30; // then stop polling; a reload starts again

  function refresh(el, state) {
    if (document.hidden) { return Promise.resolve(); }
    return fetch(el.getAttribute("data-live"), {
      headers: { "Accept": "text/html", "X-Requested-With": "fetch" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.text();
    }).then(function (html) {
      if (el.innerHTML.trim() !== html.trim()) { el.innerHTML = html; }
      state.failures = 0;
      document.body.classList.add("live");
      document.body.classList.remove("live-failed");
    }).catch(function () {
      state.failures += 1;
      document.body.classList.add("live-failed");
    });
  }

  function startLive() {
    var live = document.querySelectorAll("[data-live]");
    Array.prototype.forEach.call(live, function (el) {
      var state = { failures: 0 };
      function tick() {
        if (state.failures >= MAX_FAILURES) { return; }
        refresh(el, state).then(function () { window.setTimeout(tick, POLL_MS); });
      }
      window.setTimeout(tick, POLL_MS);
    });
  }

  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.hasAttribute && target.hasAttribute("data-autosubmit") && target.form) {
      target.form.submit();
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button || !navigator.clipboard) { return; }
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (source) {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      });
    }
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startLive);
  } else {
    startLive();
  }
})();
