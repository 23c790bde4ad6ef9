// The door page as an installable app: the page shell (HTML, script, style, icons) is
// cached so the app opens at once; every /v1 call goes to the server, never the cache
// (inference stays on the server: the photo is judged there and not stored).
"use strict";
const SHELL = "door-shell-v1";
const FILES = ["/", "/static/app.js", "/static/app.css", "/static/manifest.webmanifest",
               "/static/icon-192.png", "/static/icon-512.png"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((name) => name !== SHELL).map((name) => caches.delete(name))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin || url.pathname.startsWith("/v1/")) return;
  // The network first (a new page after an update), the shell when the server is out of reach.
  event.respondWith(fetch(event.request).then((response) => {
    const copy = response.clone();
    if (response.ok && FILES.includes(url.pathname)) caches.open(SHELL).then((cache) => cache.put(event.request, copy));
    return response;
  }).catch(() => caches.match(event.request)));
});
