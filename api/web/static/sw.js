// citykey service worker: caches the app shell (styles, script, icon) so the installed app
// starts quickly. It NEVER caches pages, unlock answers or API data: those always come from
// the network, so a door's state shown is never stale and an Open is never replayed.
"use strict";

var SHELL = "citykey-shell-v1";
var SHELL_FILES = ["/static/base.css", "/static/citizen.css", "/static/app.js", "/static/icon.svg"];

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(SHELL).then(function (cache) { return cache.addAll(SHELL_FILES); }));
  self.skipWaiting();
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (n) { return n !== SHELL; })
      .map(function (n) { return caches.delete(n); }));
  }));
  self.clients.claim();
});

self.addEventListener("fetch", function (event) {
  var request = event.request;
  var url = new URL(request.url);
  // Only GETs of the shell files; everything else goes straight to the network.
  if (request.method !== "GET" || url.origin !== self.location.origin ||
      SHELL_FILES.indexOf(url.pathname) === -1) {
    return;
  }
  // Network first (fresh after an upgrade), the cached copy when offline.
  event.respondWith(fetch(request).then(function (response) {
    var copy = response.clone();
    caches.open(SHELL).then(function (cache) { cache.put(request, copy); });
    return response;
  }).catch(function () { return caches.match(request); }));
});
