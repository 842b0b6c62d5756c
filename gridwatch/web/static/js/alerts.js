// Alerts and their incidents as the pages show them: the lifecycle's legal steps (as alerts/lifecycle.py),
// severity colours, and the alert card shared by the operator dashboard, the patrol view and the detail page.

import { api } from "./api.js";
import { ago, capitalize, formatTime, h, titleCase, toast } from "./dom.js";

export const ACTIONS = [
  { action: "acknowledge", status: "acknowledged", label: "Acknowledge" },
  { action: "dispatch", status: "dispatched", label: "Dispatch" },
  { action: "on_scene", status: "on_scene", label: "On scene" },
  { action: "resolve", status: "resolved", label: "Resolve" },
  { action: "false_alarm", status: "false_alarm", label: "False alarm" },
];
export const STATUSES = ["new", "acknowledged", "dispatched", "on_scene", "resolved", "false_alarm"];
export const OPEN_STATUSES = ["new", "acknowledged", "dispatched", "on_scene"];
export const SEVERITIES = ["critical", "high", "normal", "low"];
export const LOUD_LABELS = new Set(["fire", "smoke"]);
const ORDER = ["new", "acknowledged", "dispatched", "on_scene", "resolved"];
const FINAL = new Set(["resolved", "false_alarm"]);

export function allowed(status, action) {
  const step = ACTIONS.find((a) => a.action === action);
  if (!step || FINAL.has(status)) return false;
  if (step.status === "false_alarm") return true;
  return ORDER.indexOf(step.status) > ORDER.indexOf(status);
}

/** The shared state of a page: cameras, grids, villages and incidents by id. */
export function newContext(user) {
  return { user, cameras: new Map(), grids: new Map(), villages: new Map(), incidents: new Map(), notes: new Map() };
}

/** What a card shows that can change: a card is redrawn only when this differs. */
export function cardSignature(alert, ctx) {
  return [statusOf(alert, ctx), alert.incident_id, alert.thumbnail_url, alert.snapshot_url, alert.clip_url,
    alert.clip_status, alert.ended, alert.severity, ctx.cameras.get(alert.camera_id)?.name].join("|");
}

/** Put `fresh` in the place of `old`, keeping the focus and caret of a note being typed. */
export function swapCard(old, fresh) {
  const active = document.activeElement;
  const typing = active && old.contains(active) && active.classList.contains("note");
  const caret = typing ? active.selectionStart : null;
  old.replaceWith(fresh);
  if (typing) {
    const note = fresh.querySelector("input.note");
    if (note) {
      note.focus();
      note.setSelectionRange(caret, caret);
    }
  }
}

export function statusOf(alert, ctx) {
  if (alert.incident_id && ctx.incidents.has(alert.incident_id)) return ctx.incidents.get(alert.incident_id).status;
  return alert.status || "new";
}

export function cameraName(id, ctx) {
  return ctx.cameras.get(id)?.name || id;
}

export function gridName(id, ctx) {
  const grid = ctx.grids.get(id);
  return grid && grid.name !== id ? `${grid.name} (${id})` : id;
}

export function villageName(id, ctx) {
  return ctx.villages.get(id)?.name || id;
}

/** An alert as the list route gives it, from a live-feed `alert` event. */
export function alertFromEvent(data) {
  const base = `/api/v1/alerts/${encodeURIComponent(data.alert_id)}`;
  return {
    id: data.alert_id,
    camera_id: data.camera_id,
    village: data.village,
    grid: data.grid,
    label: data.label,
    score: Number(data.score),
    created_at: data.created_at,
    severity: data.severity || null,
    rule: data.rule || null,
    incident_id: data.incident_id || null,
    snapshot_url: data.snapshot_url || null,
    thumbnail_url: `${base}/thumbnail`, // the live entry does not say; the image falls back to the snapshot
    clip_url: null,
    clip_status: "pending",
    live: true,
  };
}

function thumbnail(alert, { large = false } = {}) {
  const sources = large
    ? [alert.snapshot_url, alert.thumbnail_url]
    : [alert.thumbnail_url, alert.snapshot_url];
  const queue = sources.filter(Boolean);
  const box = h("div", { class: "thumb" });
  const placeholder = () => h("div", { class: "thumb-empty", text: "no image yet" });
  if (!queue.length) {
    box.append(placeholder());
    return box;
  }
  const img = h("img", { alt: `${alert.label} at ${alert.camera_id}`, loading: "lazy", decoding: "async" });
  img.addEventListener("error", () => {
    queue.shift();
    if (queue.length) img.src = queue[0];
    else img.replaceWith(placeholder());
  });
  img.src = queue[0];
  box.append(img);
  return box;
}

export function severityBadge(severity) {
  const sev = severity || "normal";
  return h("span", { class: ["sev-badge", `sev-${sev}`], text: sev });
}

export function statusPill(status) {
  return h("span", { class: ["status-pill", `status-${status}`], text: titleCase(status) });
}

/** POST an action on the alert's incident; updates ctx.incidents and calls `done(incident)`. */
export async function act(alert, action, note, ctx) {
  const incident = await api(`/alerts/${encodeURIComponent(alert.id)}/actions`, {
    method: "POST",
    json: note ? { action, note } : { action },
  });
  ctx.incidents.set(incident.id, incident);
  alert.incident_id = incident.id;
  alert.status = incident.status;
  return incident;
}

/** The action bar: a note and one button per action the status allows (the others disabled). */
export function actionBar(alert, ctx, { actions = ACTIONS.map((a) => a.action), big = false, onDone } = {}) {
  const status = statusOf(alert, ctx);
  const note = h("input", {
    class: "note",
    type: "text",
    name: "note",
    maxlength: 2000,
    placeholder: "Note (optional)",
    "aria-label": "Note",
  });
  note.value = ctx.notes.get(alert.id) || ""; // kept when the card is redrawn
  note.addEventListener("input", () => ctx.notes.set(alert.id, note.value));
  const buttons = actions.map((name) => {
    const step = ACTIONS.find((a) => a.action === name);
    const button = h("button", {
      type: "button",
      class: ["btn", `btn-${name}`, big && "btn-big"],
      dataset: { action: name },
      text: step.label,
      disabled: !allowed(status, name),
    });
    button.addEventListener("click", async () => {
      for (const b of buttons) b.disabled = true;
      try {
        const incident = await act(alert, name, note.value.trim(), ctx);
        ctx.notes.delete(alert.id); // the note went with this step: clear it wherever the card is now
        for (const input of document.querySelectorAll(`[data-alert-id="${CSS.escape(alert.id)}"] input.note`)) input.value = "";
        toast(`${capitalize(alert.label)} at ${cameraName(alert.camera_id, ctx)}: ${titleCase(incident.status)}`, "ok");
        onDone?.(incident);
      } catch (err) {
        toast(err.message, "error");
        for (const [i, b] of buttons.entries()) b.disabled = !allowed(statusOf(alert, ctx), actions[i]);
      }
    });
    return button;
  });
  if (FINAL.has(status)) return h("div", { class: "actions actions-final" }, h("span", { text: "Closed" }));
  return h("div", { class: ["actions", big && "actions-big"] }, note, h("div", { class: "buttons" }, buttons));
}

/** One alert as a card. `actions`: the action names offered; `big`: touch-sized (patrol). */
export function alertCard(alert, ctx, options = {}) {
  const status = statusOf(alert, ctx);
  const severity = alert.severity || "normal";
  const meta = [
    ["Camera", cameraName(alert.camera_id, ctx)],
    ["Village", villageName(alert.village, ctx)],
    ["Grid", gridName(alert.grid, ctx)],
    ["Time", `${formatTime(alert.created_at)} · ${ago(alert.created_at)}`],
  ];
  const card = h(
    "article",
    {
      class: ["card", "alert-card", `sev-${severity}`, `status-${status}`, options.big && "alert-card-big"],
      dataset: { alertId: alert.id, grid: alert.grid, label: alert.label, status, signature: cardSignature(alert, ctx) },
    },
    thumbnail(alert, { large: options.large }),
    h(
      "div",
      { class: "card-body" },
      h(
        "header",
        { class: "card-head" },
        h("h3", { class: "alert-label", text: capitalize(alert.label) }),
        h("span", { class: "score", text: `${Math.round((alert.score || 0) * 100)}%` }),
        severityBadge(alert.severity),
        statusPill(status),
        alert.ended ? h("span", { class: "tag", text: "ended" }) : null,
      ),
      h(
        "dl",
        { class: "meta" },
        meta.map(([k, v]) => [h("dt", { text: k }), h("dd", { class: `meta-${k.toLowerCase()}`, text: v })]),
      ),
    ),
    h(
      "div",
      { class: "card-foot" },
      options.extra || null,
      options.actions === false ? null : actionBar(alert, ctx, options),
      options.large ? null : h("a", { class: "card-link", href: `#/alerts/${encodeURIComponent(alert.id)}`, text: "Details" }),
    ),
  );
  return card;
}

/** The clip of an alert: a player once it is stored, else why there is none. */
export function clipBox(alert) {
  if (alert.clip_url) {
    const video = h("video", {
      class: "clip",
      controls: true,
      playsinline: true,
      preload: "metadata",
      src: alert.clip_url,
    });
    return h("div", { class: "clip-box" }, video);
  }
  const text =
    alert.clip_status === "pending"
      ? "Clip still recording…"
      : alert.clip_status === "failed"
        ? "The clip could not be recorded"
        : "No clip";
  return h("div", { class: ["clip-box", "clip-missing", `clip-${alert.clip_status}`], text });
}
