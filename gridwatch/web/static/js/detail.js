// One alert (the page a push notification opens): the snapshot, the clip, the actions and the incident's
// history.

import { ApiError, api } from "./api.js";
import { alertCard, clipBox, newContext } from "./alerts.js";
import { formatTime, h, replaceChildren, titleCase } from "./dom.js";
import { loadIncidentsOf, loadOrganisation } from "./shared.js";

function timeline(incident) {
  if (!incident) return h("p", { class: "empty", text: "Not in an incident yet." });
  const items = (incident.actions || []).map((a) =>
    h(
      "li",
      {},
      h("strong", { text: titleCase(a.action) }),
      ` · ${formatTime(a.at)}`,
      a.user_id ? ` · ${a.user_id}` : "",
      a.note ? h("p", { class: "note-text", text: a.note }) : null,
    ),
  );
  return h(
    "div",
    { class: "timeline" },
    h(
      "p",
      {},
      `Incident ${incident.id}: ${incident.alert_count} alert(s) on ${incident.cameras.length} camera(s), `,
      `opened ${formatTime(incident.opened_at)}`,
      incident.team ? `, team ${incident.team}` : "",
    ),
    items.length ? h("ol", { class: "actions-log" }, items) : h("p", { class: "empty", text: "No action taken yet." }),
  );
}

export function mount(view, session, alertId) {
  const ctx = newContext(session);
  const body = h("div", { class: "detail-body" }, h("p", { class: "loading", text: "Loading the alert…" }));
  replaceChildren(
    view,
    h(
      "section",
      { class: "page detail" },
      h("div", { class: "page-head" }, h("a", { href: "#/", class: "btn btn-ghost", text: "← Back" }), h("h1", { text: "Alert" })),
      body,
    ),
  );

  const render = async () => {
    const alert = await api(`/alerts/${encodeURIComponent(alertId)}`);
    await loadIncidentsOf([alert], ctx);
    const incident = alert.incident_id ? await api(`/incidents/${encodeURIComponent(alert.incident_id)}`) : null;
    replaceChildren(
      body,
      alertCard(alert, ctx, { large: true, big: session.role === "patrol", extra: clipBox(alert), onDone: () => render() }),
      h("section", { class: "panel" }, h("h2", { text: "History" }), timeline(incident)),
    );
  };

  (async () => {
    await loadOrganisation(ctx);
    await render();
  })().catch((err) => {
    const text = err instanceof ApiError && err.status === 404 ? "No such alert (or not in your grids)." : err.message;
    replaceChildren(body, h("p", { class: "error", text }));
  });
  return () => {};
}
