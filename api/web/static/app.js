// citykey citizen app: live feedback for the Open buttons. Progressive enhancement: without
// this script every Open button is a plain form post and the page shows the result.
"use strict";

(function () {
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var timers = {};

  function setStatus(el, kind, en, nb) {
    el.className = "status " + kind;
    el.textContent = "";
    el.appendChild(document.createTextNode(en + " "));
    if (nb) {
      var span = document.createElement("span");
      span.lang = "nb";
      span.textContent = "· " + nb;
      el.appendChild(span);
    }
  }

  function countdown(doorId, el, result) {
    clearInterval(timers[doorId]);
    var endsAt = Date.now() + (result.seconds || 0) * 1000;
    var until = result.unlocked_until_local;
    function tick() {
      var left = Math.ceil((endsAt - Date.now()) / 1000);
      if (left <= 0) {
        clearInterval(timers[doorId]);
        setStatus(el, "idle relocked", "Locked again", "Låst igjen");
        return;
      }
      setStatus(el, "ok", "Unlocked until " + until + " (" + left + " s)",
        "Låst opp til " + until);
    }
    tick();
    timers[doorId] = setInterval(tick, 1000);
  }

  function open(form, event) {
    event.preventDefault();
    var button = form.querySelector("button");
    var doorId = form.action.split("/doors/")[1].split("/")[0];
    var el = document.getElementById("status-" + decodeURIComponent(doorId));
    if (!el || button.disabled) { return; }
    clearInterval(timers[doorId]);
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    setStatus(el, "busy", "Sending …", "Sender …");
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: {
        "Accept": "application/json",
        "X-Requested-With": "fetch",
        "X-CSRF-Token": csrf ? csrf.content : ""
      }
    }).then(function (response) {
      if (response.status === 401) {
        window.location.href = "/app/login?next=/app";
        return null;
      }
      return response.json().then(function (body) { return body; });
    }).then(function (result) {
      if (!result) { return; }
      if (result.status === "unlocked") {
        countdown(doorId, el, result);
      } else if (result.message_en) {
        setStatus(el, "bad", result.message_en, result.message_nb);
      } else {
        setStatus(el, "bad", "The door could not be opened. Try again.",
          "Døren kunne ikke åpnes. Prøv igjen.");
      }
    }).catch(function () {
      setStatus(el, "bad", "No connection. Check your network and try again.",
        "Ingen forbindelse. Sjekk nettet og prøv igjen.");
    }).then(function () {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    });
  }

  document.querySelectorAll("form[data-open]").forEach(function (form) {
    form.addEventListener("submit", function (event) { open(form, event); });
  });

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/app/sw.js", { scope: "/app" }).catch(function () {});
  }
})();
