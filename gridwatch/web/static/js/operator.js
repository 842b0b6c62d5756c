// The operator dashboard: the alerts (newest first, live from the feed), filters, actions with a note,
// the alarm for fire and smoke, the camera status wall and the response times per grid.

import { apiOr, api } from "./api.js";
import {
  LOUD_LABELS,
  OPEN_STATUSES,
  SEVERITIES,
  STATUSES,
  alertCard,
  alertFromEvent,
  cameraName,
  cardSignature,
  gridName,
  newContext,
  statusOf,
  swapCard,
} from "./alerts.js";
import { ago, capitalize, duration, h, replaceChildren, titleCase, toast } from "./dom.js";
import { openCameraView } from "./camera_view.js";
import { feedIndicator, openFeed } from "./feed.js";
import { loadIncidentsOf, loadOrganisation, refreshAlert } from "./shared.js";
import { beep } from "./sound.js";

const KNOWN_LABELS = ["fire", "smoke", "person", "car", "truck", "bus", "motorcycle", "bicycle"];
const BAD_STATES = new Set(["offline", "auth_failed", "unsupported", "failed"]);
const STATE_RANK = { offline: 0, auth_failed: 0, unsupported: 0, failed: 0, stalled: 1, connecting: 2 };
const REFRESH_AFTER_MS = [1500, 5000, 15000];

export function cameraRank(camera) {
  if (!camera.enabled) return 4;
  const state = camera.state || "unknown";
  if (state in STATE_RANK) return STATE_RANK[state];
  return state === "online" ? 5 : 3;
}

export function cameraWall(cameras, ctx) {
  const sorted = [...cameras].sort(
    (a, b) => cameraRank(a) - cameraRank(b) || a.name.localeCompare(b.name) || a.id.localeCompare(b.id),
  );
  if (!sorted.length) return h("p", { class: "empty", text: "No cameras registered." });
  return h(
    "ul",
    { class: "camera-wall" },
    sorted.map((c) => {
      const state = c.enabled ? c.state || "unknown" : "disabled";
      const detect = c.health?.detect;
      const fps = typeof detect?.input_fps === "number" ? `${detect.input_fps.toFixed(1)} fps` : "";
      const detail = detect?.last_error || (state === "online" ? fps : "");
      return h(
        "li",
        {
          class: ["cam-tile", `state-${state}`, BAD_STATES.has(state) && "cam-bad"],
          dataset: { cameraId: c.id, state },
          title: detail || state,
        },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h(
          "div",
          { class: "cam-text" },
          h("strong", { class: "cam-name", text: c.name }),
          h("span", { class: "cam-state", text: titleCase(state) }),
          h("small", { text: `${c.id} · ${c.grid}` }),
          detail ? h("small", { class: "cam-detail", text: detail }) : null,
          h("button", {
            type: "button",
            class: "btn-link cam-view",
            text: "View now",
            title: `${c.name}: the picture now`,
            on: { click: () => openCameraView(c) },
          }),
        ),
      );
    }),
  );
}

function responseTable(rows, ctx) {
  if (!rows.length) return h("p", { class: "empty", text: "No incidents in the last 7 days." });
  return h(
    "table",
    { class: "table response-times" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        [
          ["Grid", "The patrol grid"],
          ["Acked", "Incidents acknowledged of those opened"],
          ["Ack", "Median time to acknowledge"],
          ["Ack p90", "90th percentile time to acknowledge"],
          ["On scene", "Median time until a patrol was on scene"],
          ["Esc.", "Incidents escalated"],
        ].map(([t, title]) => h("th", { text: t, title })),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((r) =>
        h(
          "tr",
          { dataset: { grid: r.grid } },
          h("td", { title: r.grid, text: ctx.grids.get(r.grid)?.name || r.grid }),
          h("td", { class: "num", text: `${r.acknowledged}/${r.incidents}` }),
          h("td", { class: "num", text: duration(r.median_ack_s) }),
          h("td", { class: "num", text: duration(r.p90_ack_s) }),
          h("td", { class: "num", text: duration(r.median_on_scene_s) }),
          h("td", { class: ["num", r.escalated && "warn"], text: r.escalated }),
        ),
      ),
    ),
  );
}

function select(name, label, options, value) {
  const el = h("select", { name, "aria-label": label });
  setOptions(el, options, value);
  return h("label", { class: "filter" }, h("span", { text: label }), el);
}

function setOptions(el, options, value) {
  replaceChildren(el, options.map(([v, text]) => h("option", { value: v, text, props: { selected: v === value } })));
}

export function mount(view, session) {
  const ctx = newContext(session);
  const alerts = new Map(); // id -> alert, as loaded or received
  const filters = { status: "", severity: "", label: "", grid: "" };
  const timers = new Set();
  let nextCursor = null;
  let cameras = [];

  const indicator = feedIndicator();
  const chips = h("div", { class: "chips" });
  const filterForm = h("form", { class: "filters", role: "search" });
  const list = h("div", { class: "alert-list", id: "alert-list", "aria-live": "polite" });
  const more = h("button", { type: "button", class: "btn btn-ghost load-more", text: "Load older alerts", hidden: true });
  const wall = h("div", { class: "wall-box" }, h("p", { class: "empty", text: "Loading cameras…" }));
  const times = h("div", { class: "times-box" });

  const root = h(
    "section",
    { class: "page operator" },
    h("div", { class: "page-head" }, h("h1", { text: "Operator dashboard" }), indicator.el, chips),
    h(
      "div",
      { class: "dash" },
      h("div", { class: "dash-main" }, filterForm, list, more),
      h(
        "aside",
        { class: "dash-side" },
        h("section", { class: "panel" }, h("h2", { text: "Cameras" }), wall),
        h("section", { class: "panel" }, h("h2", { text: "Response times · 7 days" }), times),
      ),
    ),
  );
  replaceChildren(view, root);

  const matches = (alert) => {
    const status = statusOf(alert, ctx);
    if (filters.status === "open" && !OPEN_STATUSES.includes(status)) return false;
    if (filters.status && filters.status !== "open" && status !== filters.status) return false;
    if (filters.severity && (alert.severity || "normal") !== filters.severity) return false;
    if (filters.label && alert.label !== filters.label) return false;
    if (filters.grid && alert.grid !== filters.grid) return false;
    return true;
  };

  const sortedAlerts = () =>
    [...alerts.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));

  const card = (alert) => alertCard(alert, ctx, { onDone: () => rerenderIncident(alert.incident_id) });

  const renderChips = () => {
    const all = [...alerts.values()];
    const open = all.filter((a) => OPEN_STATUSES.includes(statusOf(a, ctx)));
    const critical = open.filter((a) => a.severity === "critical");
    const bad = cameras.filter((c) => c.enabled && BAD_STATES.has(c.state || ""));
    replaceChildren(
      chips,
      h("span", { class: "chip", dataset: { chip: "open" } }, h("b", { text: open.length }), " open"),
      h("span", { class: ["chip", critical.length && "chip-critical"], dataset: { chip: "critical" } }, h("b", { text: critical.length }), " critical"),
      h(
        "span",
        { class: ["chip", bad.length && "chip-critical"], dataset: { chip: "cameras" } },
        h("b", { text: `${bad.length}/${cameras.length}` }),
        " cameras down",
      ),
    );
  };

  const renderList = () => {
    const shown = sortedAlerts().filter(matches);
    replaceChildren(list, shown.length ? shown.map(card) : h("p", { class: "empty", text: "No alerts match." }));
    more.hidden = !nextCursor;
    renderChips();
  };

  const rerender = (alert) => {
    const old = list.querySelector(`[data-alert-id="${CSS.escape(alert.id)}"]`);
    if (!matches(alert)) {
      old?.remove();
    } else if (old) {
      if (old.dataset.signature !== cardSignature(alert, ctx)) swapCard(old, card(alert));
    } else {
      renderList();
      return;
    }
    renderChips();
  };

  const rerenderIncident = (incidentId) => {
    for (const alert of alerts.values()) if (alert.incident_id && alert.incident_id === incidentId) rerender(alert);
  };

  // Built once; later calls only refill the label and grid choices of the same <select> elements (a
  // select replaced while someone picks from it would take their choice away with it).
  const renderFilters = () => {
    const grids = [...ctx.grids.values()].map((g) => [g.id, gridName(g.id, ctx)]);
    for (const a of alerts.values()) if (!ctx.grids.has(a.grid) && !grids.some(([id]) => id === a.grid)) grids.push([a.grid, a.grid]);
    const labels = [...new Set([...KNOWN_LABELS, ...[...alerts.values()].map((a) => a.label)])];
    const labelOptions = [["", "Any label"], ...labels.map((l) => [l, capitalize(l)])];
    const gridOptions = [["", "Any grid"], ...grids];
    const built = filterForm.querySelector("select[name=label]");
    if (built) {
      const same = (el, options) => el.options.length === options.length && options.every(([v], i) => el.options[i].value === v);
      const gridSelect = filterForm.querySelector("select[name=grid]");
      if (!same(built, labelOptions)) setOptions(built, labelOptions, filters.label);
      if (!same(gridSelect, gridOptions)) setOptions(gridSelect, gridOptions, filters.grid);
      return;
    }
    replaceChildren(
      filterForm,
      select("status", "Status", [["", "Any status"], ["open", "Open"], ...STATUSES.map((s) => [s, titleCase(s)])], filters.status),
      select("severity", "Severity", [["", "Any severity"], ...SEVERITIES.map((s) => [s, titleCase(s)])], filters.severity),
      select("label", "Label", labelOptions, filters.label),
      select("grid", "Grid", gridOptions, filters.grid),
      h("button", { type: "reset", class: "btn btn-ghost", text: "Clear" }),
    );
  };

  let generation = 0; // a newer filter's load makes the answers of older ones stale
  const load = async ({ append = false } = {}) => {
    const mine = append ? generation : ++generation;
    const query = { limit: 60, severity: filters.severity, label: filters.label, grid: filters.grid };
    if (filters.status === "open") query.status = OPEN_STATUSES;
    else if (filters.status) query.status = filters.status;
    if (append && nextCursor) query.cursor = nextCursor;
    const page = await api("/alerts", { query });
    if (mine !== generation) return;
    if (!append) for (const [id, a] of alerts) if (!a.live) alerts.delete(id);
    for (const a of page.items) alerts.set(a.id, { ...alerts.get(a.id), ...a, live: false });
    nextCursor = page.next_cursor;
    await loadIncidentsOf(page.items, ctx);
    if (mine === generation) renderList();
  };

  const loadCameras = async () => {
    cameras = await apiOr([], "/cameras");
    for (const c of cameras) ctx.cameras.set(c.id, c);
    replaceChildren(wall, cameraWall(cameras, ctx));
    renderChips();
  };

  const loadTimes = async () => {
    replaceChildren(times, responseTable(await apiOr([], "/stats/response-times"), ctx));
  };

  const later = (fn, ms) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  const follow = (alert, attempt = 0) => {
    later(async () => {
      if (await refreshAlert(alert, ctx)) rerender(alert);
      if (!alert.incident_id && attempt + 1 < REFRESH_AFTER_MS.length) follow(alert, attempt + 1);
    }, REFRESH_AFTER_MS[attempt]);
  };

  const onEvent = (kind, data) => {
    const known = alerts.get(data.alert_id);
    if (kind === "alert") {
      if (known) return;
      const alert = alertFromEvent(data);
      alerts.set(alert.id, alert);
      if (matches(alert)) {
        const el = card(alert);
        el.classList.add("card-new");
        list.querySelector(".empty")?.remove();
        list.prepend(el);
      }
      renderChips();
      if (LOUD_LABELS.has(alert.label)) beep(3);
      toast(`New ${alert.label} alert at ${cameraName(alert.camera_id, ctx)}`, alert.severity === "critical" ? "error" : "info");
      follow(alert);
    } else if (kind === "incident") {
      const incident = { ...(ctx.incidents.get(data.incident_id) || { id: data.incident_id }), status: data.status };
      ctx.incidents.set(data.incident_id, incident);
      if (known && !known.incident_id) known.incident_id = data.incident_id;
      rerenderIncident(data.incident_id);
    } else if (known && kind === "ended") {
      known.ended = true;
      rerender(known);
    } else if (known && kind === "clip") {
      refreshAlert(known, ctx).then((ok) => ok && rerender(known));
    }
  };

  filterForm.addEventListener("change", (event) => {
    filters[event.target.name] = event.target.value;
    load().catch((err) => toast(err.message, "error"));
  });
  filterForm.addEventListener("reset", () => {
    setTimeout(() => {
      Object.assign(filters, { status: "", severity: "", label: "", grid: "" });
      load().catch((err) => toast(err.message, "error"));
    });
  });
  more.addEventListener("click", () => load({ append: true }).catch((err) => toast(err.message, "error")));

  const closeFeed = openFeed(onEvent, indicator.set);
  const intervals = [
    setInterval(() => loadCameras().catch(() => {}), 15000),
    setInterval(() => loadTimes().catch(() => {}), 60000),
    setInterval(() => {
      for (const el of list.querySelectorAll(".alert-card")) {
        const alert = alerts.get(el.dataset.alertId);
        const dd = el.querySelector(".meta-time");
        if (alert && dd) dd.textContent = dd.textContent.replace(/·.*$/, `· ${ago(alert.created_at)}`);
      }
    }, 30000),
  ];

  (async () => {
    await loadOrganisation(ctx);
    renderFilters();
    await Promise.all([load(), loadCameras(), loadTimes()]);
    renderFilters();
    root.dataset.loaded = "true"; // the first load is done (the browser tests wait for it)
  })().catch((err) => toast(err.message, "error"));

  return () => {
    closeFeed();
    for (const t of timers) clearTimeout(t);
    for (const i of intervals) clearInterval(i);
  };
}
