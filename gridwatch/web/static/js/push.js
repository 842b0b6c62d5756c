// Web Push: the service worker (/ui/sw.js, scope /ui/) and the browser's subscription, sent to the API so
// that the dispatcher's pushes reach this device (they follow the user's team and roster).

import { ApiError, api } from "./api.js";

export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

export async function registerWorker() {
  if (!("serviceWorker" in navigator)) return null;
  try {
    return await navigator.serviceWorker.register("/ui/sw.js", { scope: "/ui/" });
  } catch {
    return null; // http on a name other than localhost: no service workers; the pages work without
  }
}

function keyBytes(base64url) {
  const padded = base64url.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (base64url.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

/** Subscribe this browser; resolves to {ok, text: what happened, final: trying again cannot help}. */
export async function enablePush() {
  if (!pushSupported()) return { ok: false, final: true, text: "This browser cannot receive push notifications here (it needs https)." };
  let key;
  try {
    key = (await api("/push/key")).application_server_key;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      return { ok: false, final: true, text: "Push notifications are not set up on this server." };
    }
    throw err;
  }
  const permission = await Notification.requestPermission();
  if (permission !== "granted") return { ok: false, text: "Notifications are blocked for this site in the browser settings." };
  const registration = (await registerWorker()) && (await navigator.serviceWorker.ready);
  if (!registration) return { ok: false, text: "The service worker could not be started." };
  let subscription = await registration.pushManager.getSubscription();
  if (!subscription) {
    subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(key),
    });
  }
  await api("/push/subscriptions", { method: "POST", json: { subscription: subscription.toJSON() } });
  return { ok: true, text: "Push notifications are on for this device." };
}

/** A notification click in the service worker asks an open page to show that alert. */
export function listenToWorker() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.addEventListener("message", (event) => {
    const hash = event.data && event.data.type === "open" ? String(event.data.hash || "") : "";
    if (/^#\/alerts\/[A-Za-z0-9_-]+$/.test(hash)) location.hash = hash;
  });
}
