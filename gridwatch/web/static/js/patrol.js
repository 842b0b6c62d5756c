// The patrol view, made for a phone: the open alerts of my grids (the API shows a patrol member nothing
// else), big buttons for acknowledge / on scene / resolve, the clip, and push notifications for this device.

import { api } from "./api.js";
import {
  LOUD_LABELS,
  OPEN_STATUSES,
  alertCard,
  alertFromEvent,
  cardSignature,
  clipBox,
  newContext,
  statusOf,
  swapCard,
} from "./alerts.js";
import { h, replaceChildren, toast } from "./dom.js";
import { feedIndicator, openFeed } from "./feed.js";
import { enablePush, pushSupported } from "./push.js";
import { loadIncidentsOf, loadOrganisation, refreshAlert } from "./shared.js";
import { beep } from "./sound.js";

const PATROL_ACTIONS = ["acknowledge", "on_scene", "resolve"];

function clipPart(alert) {
  if (!alert.clip_url) return clipBox(alert);
  const box = h("div", { class: "clip-box" });
  const play = h("button", { type: "button", class: "btn btn-big btn-ghost play-clip", text: "▶ Play clip" });
  play.addEventListener("click", () => {
    const player = clipBox(alert);
    play.replaceWith(player);
    player.querySelector("video")?.play().catch(() => {});
  });
  box.append(play);
  return box;
}

export function mount(view, session) {
  const ctx = newContext(session);
  const alerts = new Map();
  const timers = new Set();
  const indicator = feedIndicator();
  const gridsLine = h("p", { class: "patrol-grids", text: session.team_id ? `Team ${session.team_id}` : "" });
  const list = h("div", { class: "alert-list patrol-list", id: "alert-list", "aria-live": "polite" });
  const pushStatus = h("p", { class: "push-status" });
  const pushButton = h("button", {
    type: "button",
    class: "btn btn-big btn-primary push-button",
    text: "Enable push notifications",
  });

  replaceChildren(
    view,
    h(
      "section",
      { class: "page patrol" },
      h("div", { class: "page-head" }, h("h1", { text: "My grid" }), indicator.el),
      gridsLine,
      h("div", { class: "push-box" }, pushButton, pushStatus),
      list,
    ),
  );

  if (!pushSupported()) {
    pushStatus.textContent = "Push notifications need a browser that supports them over https.";
    pushButton.disabled = true;
  }
  pushButton.addEventListener("click", async () => {
    pushButton.disabled = true;
    pushStatus.textContent = "Asking the browser…";
    try {
      const result = await enablePush();
      pushStatus.textContent = result.text;
      pushStatus.className = `push-status ${result.ok ? "ok" : "warn"}`;
      if (result.ok) pushButton.textContent = "Push notifications are on";
      else pushButton.disabled = Boolean(result.final);
    } catch (err) {
      pushStatus.textContent = `Could not turn on push notifications: ${err.message}`;
      pushStatus.className = "push-status warn";
      pushButton.disabled = false;
    }
  });

  const isOpen = (alert) => OPEN_STATUSES.includes(statusOf(alert, ctx));
  const card = (alert) =>
    alertCard(alert, ctx, {
      big: true,
      actions: PATROL_ACTIONS,
      extra: clipPart(alert),
      onDone: () => rerenderIncident(alert.incident_id),
    });

  const render = () => {
    const shown = [...alerts.values()]
      .filter(isOpen)
      .sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    replaceChildren(
      list,
      shown.length ? shown.map(card) : h("p", { class: "empty big-empty", text: "No open alerts in your grid." }),
    );
  };

  const rerender = (alert) => {
    const old = list.querySelector(`[data-alert-id="${CSS.escape(alert.id)}"]`);
    if (!isOpen(alert)) {
      if (old) {
        old.classList.add("card-closing");
        setTimeout(render, 1200);
      }
    } else if (!old) {
      render();
    } else if (old.dataset.signature !== cardSignature(alert, ctx)) {
      swapCard(old, card(alert));
    }
  };

  const rerenderIncident = (incidentId) => {
    for (const alert of alerts.values()) if (incidentId && alert.incident_id === incidentId) rerender(alert);
  };

  const follow = (alert, delays = [1500, 5000, 15000]) => {
    if (!delays.length) return;
    const t = setTimeout(async () => {
      timers.delete(t);
      if (await refreshAlert(alert, ctx)) rerender(alert);
      if (!alert.incident_id || alert.clip_status === "pending") follow(alert, delays.slice(1));
    }, delays[0]);
    timers.add(t);
  };

  const onEvent = (kind, data) => {
    const known = alerts.get(data.alert_id);
    if (kind === "alert" && !known) {
      const alert = alertFromEvent(data);
      alerts.set(alert.id, alert);
      list.querySelector(".empty")?.remove();
      const el = card(alert);
      el.classList.add("card-new");
      list.prepend(el);
      if (LOUD_LABELS.has(alert.label)) beep(3);
      follow(alert);
    } else if (kind === "incident") {
      ctx.incidents.set(data.incident_id, { ...(ctx.incidents.get(data.incident_id) || { id: data.incident_id }), status: data.status });
      if (known && !known.incident_id) known.incident_id = data.incident_id;
      rerenderIncident(data.incident_id);
    } else if (known && (kind === "clip" || kind === "ended")) {
      if (kind === "ended") known.ended = true;
      refreshAlert(known, ctx).then((ok) => ok && rerender(known));
    }
  };

  const closeFeed = openFeed(onEvent, indicator.set);

  (async () => {
    const org = await loadOrganisation(ctx);
    if (org.grids.length) gridsLine.textContent = `Grid${org.grids.length > 1 ? "s" : ""}: ${org.grids.map((g) => g.name).join(", ")}`;
    const page = await api("/alerts", { query: { status: OPEN_STATUSES, limit: 50 } });
    for (const a of page.items) alerts.set(a.id, { ...alerts.get(a.id), ...a });
    await loadIncidentsOf(page.items, ctx);
    render();
  })().catch((err) => toast(err.message, "error"));

  return () => {
    closeFeed();
    for (const t of timers) clearTimeout(t);
  };
}
