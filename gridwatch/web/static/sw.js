// GridWatch's service worker (scope /ui/): shows the dispatcher's Web Push notifications and opens the alert
// when one is clicked. The payload is the JSON of alerts/notifiers/webpush.py (`push_payload`): title, body,
// url, severity, kind, incident_id, alert_id, label, camera_name, snapshot_url, dedupe_key, created_at.
// It does not intercept requests: every page and API call goes to the network.

const ALERT_ID = /^[A-Za-z0-9_-]{1,64}$/;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function readPayload(event) {
  if (!event.data) return {};
  try {
    const data = event.data.json();
    return data && typeof data === "object" ? data : {};
  } catch {
    return { body: event.data.text() };
  }
}

/** Where a click goes: this origin's alert page (a URL from the payload is used only when it is ours). */
function targetOf(data) {
  if (typeof data.alert_id === "string" && ALERT_ID.test(data.alert_id)) return `/ui/#/alerts/${data.alert_id}`;
  try {
    const url = new URL(String(data.url || ""), self.location.origin);
    if (url.origin === self.location.origin) return url.href;
  } catch {
    // fall through
  }
  return "/ui/";
}

self.addEventListener("push", (event) => {
  const data = readPayload(event);
  const title = String(data.title || "GridWatch alert");
  const options = {
    body: String(data.body || ""),
    tag: String(data.incident_id || data.dedupe_key || "gridwatch"),
    renotify: true,
    requireInteraction: data.severity === "critical",
    icon: "/ui/icon.svg",
    badge: "/ui/icon.svg",
    timestamp: Date.parse(data.created_at) || Date.now(),
    data: { target: targetOf(data), alert_id: data.alert_id || null, kind: data.kind || null },
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const target = new URL(event.notification.data?.target || "/ui/", self.location.origin);
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      for (const client of windows) {
        if (new URL(client.url).origin !== self.location.origin) continue;
        client.postMessage({ type: "open", hash: target.hash }); // first: the page shows the alert even
        await client.focus().catch(() => null); // where the browser does not let a worker focus it
        return;
      }
      await self.clients.openWindow(target.href);
    })(),
  );
});
