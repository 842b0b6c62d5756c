// The live feed: Server-Sent Events from /api/v1/feed (alert, clip, ended, incident). EventSource reconnects
// by itself and sends Last-Event-ID, so nothing is missed across a short drop; the server narrows the
// events to the caller's grids.

const KINDS = ["alert", "clip", "ended", "incident"];

/**
 * Open the feed; `onEvent(kind, data)` for each event, `onState("live" | "connecting" | "closed")`.
 * Returns a function that closes it.
 */
export function openFeed(onEvent, onState = () => {}) {
  let source = null;
  let retry = null;
  let closed = false;

  const connect = () => {
    onState("connecting");
    source = new EventSource("/api/v1/feed");
    source.addEventListener("open", () => onState("live"));
    source.addEventListener("error", () => {
      if (closed) return;
      if (source.readyState === EventSource.CLOSED) {
        // a refused answer (401 once the session ended, 404 without Redis): try again later, slowly
        onState("closed");
        retry = setTimeout(connect, 10000);
      } else {
        onState("connecting");
      }
    });
    for (const kind of KINDS) {
      source.addEventListener(kind, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        onEvent(kind, data);
      });
    }
  };

  connect();
  return () => {
    closed = true;
    clearTimeout(retry);
    source?.close();
  };
}

export function feedIndicator() {
  const el = document.createElement("span");
  el.className = "feed-state feed-connecting";
  el.textContent = "connecting…";
  el.setAttribute("aria-live", "polite");
  const set = (state) => {
    el.className = `feed-state feed-${state}`;
    el.textContent = { live: "live", connecting: "connecting…", closed: "feed offline" }[state] || state;
    el.dataset.state = state;
  };
  return { el, set };
}
