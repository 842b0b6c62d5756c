// Loading what several pages show: the organisation (names of cameras, grids, villages), incidents by id,
// and one alert's fresh state.

import { api, apiOr } from "./api.js";

export async function loadOrganisation(ctx) {
  const [cameras, grids, villages] = await Promise.all([
    apiOr([], "/cameras"),
    apiOr([], "/grids"),
    apiOr([], "/villages"),
  ]);
  ctx.cameras = new Map(cameras.map((c) => [c.id, c]));
  ctx.grids = new Map(grids.map((g) => [g.id, g]));
  ctx.villages = new Map(villages.map((v) => [v.id, v]));
  return { cameras, grids, villages };
}

/** Fetch the incidents that `alerts` belong to and are not known yet (at most `max` single requests). */
export async function loadIncidentsOf(alerts, ctx, max = 40) {
  const missing = [...new Set(alerts.map((a) => a.incident_id).filter((id) => id && !ctx.incidents.has(id)))];
  if (missing.length > max) {
    for (const incident of await apiOr([], "/incidents", { query: { limit: 500 } })) {
      ctx.incidents.set(incident.id, incident);
    }
  }
  await Promise.all(
    missing
      .filter((id) => !ctx.incidents.has(id))
      .slice(0, max)
      .map(async (id) => {
        const incident = await apiOr(null, `/incidents/${encodeURIComponent(id)}`);
        if (incident) ctx.incidents.set(id, incident);
      }),
  );
}

/** The alert as the API has it now (its thumbnail, clip and incident come after the live event). */
export async function refreshAlert(alert, ctx) {
  const fresh = await apiOr(null, `/alerts/${encodeURIComponent(alert.id)}`);
  if (!fresh) return false;
  const ended = alert.ended;
  Object.assign(alert, fresh, { ended, live: false });
  if (alert.incident_id) await loadIncidentsOf([alert], ctx);
  return true;
}
