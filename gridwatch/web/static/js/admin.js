// The admin pages: cameras (with their probe), the CSV import, villages, grids, teams and users. Objects of
// the config file (`source: "config"`) are shown but cannot be changed here (the API answers 409).

import { ApiError, api, apiOr, detailText } from "./api.js";
import { field, formValues, formatTime, h, replaceChildren, titleCase, toast } from "./dom.js";
import { openZoneEditor } from "./zones.js";

const TABS = [
  ["cameras", "Cameras"],
  ["import", "Import CSV"],
  ["villages", "Villages"],
  ["grids", "Grids"],
  ["teams", "Teams"],
  ["users", "Users"],
];
const ROLES = ["admin", "operator", "patrol"];
const CSV_HEADER = "id,name,village,grid,url,record_url,detect_fps,enabled";
const CONFIG_NOTE = "From the config file: change it there";

async function lookups() {
  const [villages, grids, teams, users] = await Promise.all([
    apiOr([], "/villages"),
    apiOr([], "/grids"),
    apiOr([], "/teams"),
    apiOr([], "/users"),
  ]);
  return { villages, grids, teams, users };
}

const options = (rows, { empty } = {}) => [
  ...(empty !== undefined ? [["", empty]] : []),
  ...rows.map((r) => [r.id, r.name && r.name !== r.id ? `${r.name} (${r.id})` : r.id]),
];

function sourceTag(row) {
  return h("span", { class: ["tag", `source-${row.source}`], text: row.source === "config" ? "config" : "api" });
}

/** A button that asks for a second click before it acts (no browser dialogs). */
function confirmButton(label, onConfirm, { disabled, title } = {}) {
  const button = h("button", { type: "button", class: "btn btn-small btn-danger", text: label, disabled, title });
  let armed = null;
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = "Confirm?";
      button.classList.add("armed");
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.classList.remove("armed");
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.disabled = true;
    try {
      await onConfirm();
    } finally {
      button.disabled = false;
      button.textContent = label;
      button.classList.remove("armed");
    }
  });
  return button;
}

function smallButton(label, onClick, { disabled, title, kind = "" } = {}) {
  const button = h("button", { type: "button", class: ["btn", "btn-small", kind], text: label, disabled, title });
  button.addEventListener("click", onClick);
  return button;
}

function report(err) {
  toast(err instanceof ApiError ? err.message : String(err), "error");
}

/**
 * A list of objects with an "add" form and per-row edit and delete.
 * spec: {key, title, path, columns: [[label, row => text|Node]], createFields(lk), editFields(row, lk),
 *        toCreate(values, lk), toPatch(values, row), readOnly(row), rowActions(row, reload), describe(row)}
 */
function resourcePage(body, spec) {
  const tableBox = h("div", { class: "table-box" }, h("p", { class: "loading", text: "Loading…" }));
  const formBox = h("div", { class: "create-box" });
  const resultBox = h("div", { class: "result-box", "aria-live": "polite" });
  replaceChildren(body, h("h2", { text: spec.title }), formBox, resultBox, tableBox);
  let lk = null;

  const editRow = (row, tr, colspan) => {
    const form = h("form", { class: "inline-form", dataset: { editing: row.id } });
    for (const f of spec.editFields(row, lk)) form.append(field({ ...f, form: `edit-${spec.key}` }));
    const cancel = smallButton("Cancel", () => reload());
    form.append(h("div", { class: "form-buttons" }, h("button", { type: "submit", class: "btn btn-small btn-primary", text: "Save" }), cancel));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const patch = spec.toPatch(formValues(form), row);
        if (Object.keys(patch).length) {
          await api(`${spec.path}/${encodeURIComponent(row.id)}`, { method: "PATCH", json: patch });
        }
        await reload(); // the table is up to date before the toast says so
        if (Object.keys(patch).length) toast(`${patch.name || (spec.describe ? spec.describe(row) : row.id)}: saved`, "ok");
      } catch (err) {
        report(err);
      }
    });
    replaceChildren(tr, h("td", { colspan }, form));
  };

  const reload = async () => {
    lk = await lookups();
    const rows = await api(spec.path);
    const colspan = spec.columns.length + 1;
    const table = h(
      "table",
      { class: ["table", `table-${spec.key}`] },
      h("thead", {}, h("tr", {}, spec.columns.map(([label]) => h("th", { text: label })), h("th", { text: "" }))),
      h(
        "tbody",
        {},
        rows.length
          ? rows.map((row) => {
              const tr = h("tr", { dataset: { id: row.id, source: row.source || "" } });
              const readOnly = spec.readOnly ? spec.readOnly(row) : row.source === "config";
              for (const [label, value] of spec.columns) {
                const content = value(row, lk);
                tr.append(h("td", { dataset: { col: label.toLowerCase() } }, content instanceof Node ? content : String(content ?? "")));
              }
              const buttons = [
                spec.editFields
                  ? smallButton("Edit", () => editRow(row, tr, colspan), { disabled: readOnly, title: readOnly ? CONFIG_NOTE : undefined })
                  : null,
                ...(spec.rowActions ? spec.rowActions(row, reload, lk) : []),
                spec.noDelete
                  ? null
                  : confirmButton(
                      "Delete",
                      async () => {
                        try {
                          await api(`${spec.path}/${encodeURIComponent(row.id)}`, { method: "DELETE" });
                          await reload();
                          toast(`${spec.describe ? spec.describe(row) : row.id}: deleted`, "ok");
                        } catch (err) {
                          report(err);
                        }
                      },
                      { disabled: row.source === "config", title: row.source === "config" ? CONFIG_NOTE : undefined },
                    ),
              ];
              tr.append(h("td", { class: "row-actions-cell" }, h("div", { class: "row-actions" }, buttons)));
              return tr;
            })
          : h("tr", {}, h("td", { colspan, class: "empty", text: "None yet." })),
      ),
    );
    replaceChildren(tableBox, table);
  };

  const renderForm = () => {
    const form = h("form", { class: "create-form", id: `create-${spec.key}` });
    for (const f of spec.createFields(lk)) form.append(field({ ...f, form: spec.key }));
    const submit = h("button", { type: "submit", class: "btn btn-primary", text: spec.createLabel || "Add" });
    form.append(h("div", { class: "form-buttons" }, submit));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      replaceChildren(resultBox, spec.busyText ? h("p", { class: "busy", text: spec.busyText }) : null);
      try {
        const created = await api(spec.path, { method: "POST", json: spec.toCreate(formValues(form), lk) });
        replaceChildren(resultBox, spec.created ? spec.created(created) : h("p", { class: "ok", text: `Added ${created.id}.` }));
        form.reset();
        await reload();
        renderForm();
      } catch (err) {
        replaceChildren(resultBox, h("p", { class: "form-error", text: err.message }));
      } finally {
        submit.disabled = false;
      }
    });
    replaceChildren(formBox, h("details", { class: "panel create-panel", open: true }, h("summary", { text: spec.createTitle || "Add" }), form));
  };

  reload()
    .then(renderForm)
    .catch((err) => replaceChildren(tableBox, h("p", { class: "form-error", text: `Could not load: ${err.message}` })));
}

// -- cameras --------------------------------------------------------------------------------------------

export function probeText(probe) {
  if (!probe) return { ok: null, text: "not probed" };
  if (!probe.ok) return { ok: false, text: `${probe.error_kind || "error"}: ${probe.error || "the probe failed"}` };
  const fps = probe.fps_measured ?? probe.fps_declared;
  const parts = [
    probe.width && probe.height ? `${probe.width}×${probe.height}` : null,
    fps !== null && fps !== undefined ? `${Number(fps).toFixed(1)} fps` : null,
    probe.video_codec,
    probe.bitrate_kbps ? `${Math.round(probe.bitrate_kbps)} kb/s` : null,
    probe.observed ? "seen on the stream" : null,
  ];
  return { ok: true, text: parts.filter(Boolean).join(" · ") };
}

export function detectionText(detection) {
  if (!detection) return "";
  const count = (n, one, many) => (n ? `${n} ${n === 1 ? one : many}` : null);
  return [
    count(detection.zones?.length || 0, "zone", "zones"),
    count(detection.masks?.length || 0, "mask", "masks"),
    count(detection.motion_masks?.length || 0, "motion mask", "motion masks"),
    count(Object.keys(detection.thresholds || {}).length, "threshold", "thresholds"),
  ].filter(Boolean).join(" · ");
}

function probeCell(camera) {
  const { ok, text } = probeText(camera.probe);
  return h(
    "div",
    { class: ["probe", ok === false && "probe-bad", ok && "probe-ok"] },
    h("span", { class: "probe-text", text }),
    camera.probe?.probed_at ? h("small", { text: formatTime(camera.probe.probed_at) }) : null,
  );
}

function stateCell(camera) {
  const state = camera.enabled ? camera.state || "unknown" : "disabled";
  return h("span", { class: ["state-pill", `state-${state}`], text: titleCase(state) });
}

function camerasPage(body) {
  resourcePage(body, {
    key: "cameras",
    title: "Cameras",
    path: "/cameras",
    createTitle: "Register a camera",
    createLabel: "Register and probe",
    busyText: "Registering the camera and probing its stream (a few seconds)…",
    describe: (c) => c.name,
    columns: [
      ["Camera", (c) => h("div", {}, h("strong", { class: "camera-name", text: c.name }), h("small", { class: "mono", text: c.id }),
        c.detection ? h("small", { class: "detection", text: detectionText(c.detection) }) : null)],
      ["Grid", (c, lk) => h("div", {}, h("span", { text: c.grid }), h("small", { text: lk.villages.find((v) => v.id === c.village)?.name || c.village }))],
      ["URL", (c) => h("code", { class: "url", text: c.url })],
      ["State", stateCell],
      ["Probe", probeCell],
      ["Source", sourceTag],
    ],
    createFields: (lk) => [
      { name: "id", label: "Id", required: true, placeholder: "gate-north", pattern: "[a-z0-9][a-z0-9_\\-]{0,62}" },
      { name: "name", label: "Name", required: true, placeholder: "North gate" },
      { name: "grid", label: "Grid", type: "select", required: true, options: options(lk.grids, { empty: "Choose a grid" }) },
      { name: "village", label: "Village", type: "select", options: options(lk.villages, { empty: "The grid's village" }) },
      { name: "url", label: "Stream URL (rtsp://)", required: true, placeholder: "rtsp://user:password@10.0.0.5/stream2" },
      { name: "record_url", label: "Record URL (optional)", placeholder: "rtsp://…/stream1" },
      { name: "detect_fps", label: "Detect fps", type: "number", value: 2, step: 0.5, min: 0.5, max: 30 },
      { name: "enabled", label: "Enabled", type: "checkbox", value: true },
    ],
    toCreate: (v) => {
      const out = { id: v.id, name: v.name, grid: v.grid, url: v.url, enabled: v.enabled };
      if (v.village) out.village = v.village;
      if (v.record_url) out.record_url = v.record_url;
      if (v.detect_fps !== "") out.detect_fps = v.detect_fps;
      return out;
    },
    created: (c) => {
      const { ok, text } = probeText(c.probe);
      return h(
        "p",
        { class: ok ? "ok" : "form-error", dataset: { probe: ok ? "ok" : "failed" } },
        `Registered ${c.name} (${c.id}). Probe: `,
        h("strong", { class: "probe-result", text }),
        ok ? "" : " — the camera is registered and is tried again by the worker.",
      );
    },
    editFields: (c, lk) => [
      { name: "name", label: "Name", value: c.name, required: true },
      { name: "grid", label: "Grid", type: "select", value: c.grid, options: options(lk.grids) },
      { name: "url", label: "New stream URL (empty: unchanged)", placeholder: c.url },
      { name: "record_url", label: "New record URL (empty: unchanged)", placeholder: c.record_url || "none" },
      { name: "detect_fps", label: "Detect fps", type: "number", value: c.detect_fps, step: 0.5, min: 0.5, max: 30 },
      { name: "enabled", label: "Enabled", type: "checkbox", value: c.enabled },
    ],
    toPatch: (v, c) => {
      const patch = {};
      if (v.name !== c.name) patch.name = v.name;
      if (v.grid && v.grid !== c.grid) patch.grid = v.grid;
      if (v.url) patch.url = v.url;
      if (v.record_url) patch.record_url = v.record_url;
      if (v.detect_fps !== "" && v.detect_fps !== c.detect_fps) patch.detect_fps = v.detect_fps;
      if (v.enabled !== c.enabled) patch.enabled = v.enabled;
      return patch;
    },
    rowActions: (c, reload) => [
      smallButton("Zones", () => openZoneEditor(c, { onSaved: reload, readOnly: c.source === "config" }), {
        kind: "btn-ghost",
        title: "Draw the camera's zones, masks and motion masks on its picture",
      }),
      smallButton(
        "Re-probe",
        async (event) => {
          const button = event.currentTarget;
          button.disabled = true;
          button.textContent = "Probing…";
          try {
            const probe = await api(`/cameras/${encodeURIComponent(c.id)}/probe`, { method: "POST" });
            await reload(); // the table shows the new probe before the toast says so
            toast(`${c.name}: ${probeText(probe).text}`, probe.ok ? "ok" : "error");
          } catch (err) {
            report(err);
            button.disabled = false;
            button.textContent = "Re-probe";
          }
        },
        { kind: "btn-ghost" },
      ),
    ],
  });
}

// -- CSV import -----------------------------------------------------------------------------------------

function importPage(body) {
  const file = h("input", { type: "file", name: "file", accept: ".csv,text/csv", id: "import-file" });
  const text = h("textarea", { name: "csv", rows: 8, class: "mono", id: "import-text", placeholder: `${CSV_HEADER}\ngate-1,North gate,,grid-a,rtsp://10.0.0.5/stream2,,2,true` });
  const dryRun = h("input", { type: "checkbox", name: "dry_run", id: "import-dry-run", props: { checked: true } });
  const submit = h("button", { type: "submit", class: "btn btn-primary", text: "Check / import" });
  const result = h("div", { class: "result-box import-result", id: "import-result", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "stack import-form" },
    h("p", { class: "muted" }, "A UTF-8 CSV file with the header ", h("code", { text: CSV_HEADER }), ". All rows or none: with any bad row nothing is imported. Imported cameras are probed by the worker; use Re-probe on the Cameras page to check one now."),
    h("label", { class: "field", for: "import-file" }, h("span", { class: "field-label", text: "CSV file" }), file),
    h("label", { class: "field", for: "import-text" }, h("span", { class: "field-label", text: "…or paste the rows" }), text),
    h("label", { class: "field field-check", for: "import-dry-run" }, dryRun, h("span", { text: "Dry run (check every row, write nothing)" })),
    h("div", { class: "form-buttons" }, submit),
  );
  file.addEventListener("change", async () => {
    if (file.files[0]) text.value = await file.files[0].text();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const csv = file.files[0] && !text.value ? await file.files[0].text() : text.value;
    if (!csv.trim()) {
      replaceChildren(result, h("p", { class: "form-error", text: "Choose a file or paste the rows first." }));
      return;
    }
    submit.disabled = true;
    replaceChildren(result, h("p", { class: "busy", text: "Checking…" }));
    try {
      const done = await api("/cameras/import", {
        method: "POST",
        body: csv,
        contentType: "text/csv; charset=utf-8",
        query: { dry_run: dryRun.checked ? "true" : "false" },
      });
      const verb = done.dry_run ? "Dry run, nothing written" : "Imported";
      replaceChildren(
        result,
        h("p", { class: "ok", dataset: { outcome: "ok" } }, `${verb}: ${done.rows} row(s): ${done.created} new, ${done.updated} changed, ${done.unchanged} unchanged.`),
      );
    } catch (err) {
      const errors = err instanceof ApiError && Array.isArray(err.body?.errors) ? err.body.errors : [];
      replaceChildren(
        result,
        h("p", { class: "form-error", dataset: { outcome: "errors" }, text: err instanceof ApiError && typeof err.body?.detail === "string" ? err.body.detail : detailText(err.body, err.status) }),
        errors.length
          ? h(
              "table",
              { class: "table import-errors" },
              h("thead", {}, h("tr", {}, ["Line", "Column", "Problem"].map((t) => h("th", { text: t })))),
              h("tbody", {}, errors.map((e) => h("tr", {}, h("td", { class: "num", text: e.line ?? "" }), h("td", { text: e.field }), h("td", { text: e.message })))),
            )
          : null,
      );
    } finally {
      submit.disabled = false;
    }
  });
  replaceChildren(body, h("h2", { text: "Import cameras from CSV" }), form, result);
}

// -- villages, grids, teams, users ------------------------------------------------------------------------

const idField = (placeholder) => ({ name: "id", label: "Id", required: true, placeholder, pattern: "[a-z0-9][a-z0-9_\\-]{0,62}" });

function villagesPage(body) {
  resourcePage(body, {
    key: "villages",
    title: "Villages",
    path: "/villages",
    createTitle: "Add a village",
    describe: (v) => v.name,
    columns: [["Id", (v) => h("code", { text: v.id })], ["Name", (v) => v.name], ["Source", sourceTag]],
    createFields: () => [idField("riverside"), { name: "name", label: "Name", required: true }],
    toCreate: (v) => ({ id: v.id, name: v.name }),
    editFields: (v) => [{ name: "name", label: "Name", value: v.name, required: true }],
    toPatch: (values, v) => (values.name !== v.name ? { name: values.name } : {}),
  });
}

function gridsPage(body) {
  resourcePage(body, {
    key: "grids",
    title: "Grids",
    path: "/grids",
    createTitle: "Add a grid",
    describe: (g) => g.name,
    columns: [
      ["Id", (g) => h("code", { text: g.id })],
      ["Name", (g) => g.name],
      ["Village", (g, lk) => lk.villages.find((v) => v.id === g.village)?.name || g.village],
      ["Team", (g, lk) => (g.team ? lk.teams.find((t) => t.id === g.team)?.name || g.team : "— fallback —")],
      ["Source", sourceTag],
    ],
    createFields: (lk) => [
      idField("grid-7"),
      { name: "name", label: "Name", required: true },
      { name: "village", label: "Village", type: "select", required: true, options: options(lk.villages, { empty: "Choose a village" }) },
      { name: "team", label: "Patrol team", type: "select", options: options(lk.teams, { empty: "None (fallback team)" }) },
    ],
    toCreate: (v) => ({ id: v.id, name: v.name, village: v.village, team: v.team || null }),
    editFields: (g, lk) => [
      { name: "name", label: "Name", value: g.name, required: true },
      { name: "village", label: "Village", type: "select", value: g.village, options: options(lk.villages) },
      { name: "team", label: "Patrol team", type: "select", value: g.team || "", options: options(lk.teams, { empty: "None (fallback team)" }) },
    ],
    toPatch: (v, g) => {
      const patch = {};
      if (v.name !== g.name) patch.name = v.name;
      if (v.village !== g.village) patch.village = v.village;
      if ((v.team || null) !== (g.team || null)) patch.team = v.team || null;
      return patch;
    },
  });
}

function rosterText(team) {
  return (team.roster || []).map((s) => `${s.user} @ ${s.schedule}`).join("\n");
}

function parseRoster(text) {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const [user, schedule] = line.split("@").map((p) => (p || "").trim());
      if (!user || !schedule) throw new Error(`roster line "${line}": write it as "user @ schedule"`);
      return { user, schedule };
    });
}

function teamsPage(body) {
  resourcePage(body, {
    key: "teams",
    title: "Teams",
    path: "/teams",
    createTitle: "Add a team",
    describe: (t) => t.name,
    columns: [
      ["Id", (t) => h("code", { text: t.id })],
      ["Name", (t) => t.name],
      ["Members", (t, lk) => (t.members || []).map((id) => lk.users.find((u) => u.id === id)?.name || id).join(", ") || "—"],
      ["Roster", (t) => (t.roster?.length ? h("ul", { class: "roster" }, t.roster.map((s) => h("li", { text: `${s.user} @ ${s.schedule}` }))) : "always on duty")],
      ["Source", sourceTag],
    ],
    createFields: () => [idField("north-patrol"), { name: "name", label: "Name", required: true }],
    toCreate: (v) => ({ id: v.id, name: v.name }),
    editFields: (t) => [
      { name: "name", label: "Name", value: t.name, required: true },
      { name: "roster", label: "Roster: one shift a line, user @ schedule (a schedule of the config)", type: "textarea", value: rosterText(t) },
    ],
    toPatch: (v, t) => {
      const patch = {};
      if (v.name !== t.name) patch.name = v.name;
      if (v.roster !== rosterText(t)) patch.roster = parseRoster(v.roster);
      return patch;
    },
  });
}

function usersPage(body) {
  resourcePage(body, {
    key: "users",
    title: "Users",
    path: "/users",
    createTitle: "Add a user",
    describe: (u) => u.name,
    readOnly: (u) => u.source === "config",
    columns: [
      ["Id", (u) => h("code", { text: u.id })],
      ["Name", (u) => u.name],
      ["Role", (u) => h("span", { class: ["tag", `role-${u.role}`], text: u.role })],
      ["Team", (u, lk) => (u.team ? lk.teams.find((t) => t.id === u.team)?.name || u.team : "—")],
      ["Status", (u) => h("span", { class: ["tag", u.disabled ? "tag-bad" : "tag-ok"], text: u.disabled ? "disabled" : u.has_password === false ? "no password" : "active" })],
      ["Source", sourceTag],
    ],
    createFields: (lk) => [
      idField("li"),
      { name: "name", label: "Name", required: true },
      { name: "role", label: "Role", type: "select", value: "patrol", options: ROLES.map((r) => [r, titleCase(r)]) },
      { name: "team", label: "Team", type: "select", options: options(lk.teams, { empty: "No team" }) },
      { name: "password", label: "Password", type: "password", required: true, autocomplete: "new-password" },
    ],
    toCreate: (v) => ({ id: v.id, name: v.name, role: v.role, team: v.team || null, password: v.password }),
    editFields: (u, lk) => [
      { name: "name", label: "Name", value: u.name, required: true },
      { name: "role", label: "Role", type: "select", value: u.role, options: ROLES.map((r) => [r, titleCase(r)]) },
      { name: "team", label: "Team", type: "select", value: u.team || "", options: options(lk.teams, { empty: "No team" }) },
    ],
    toPatch: (v, u) => {
      const patch = {};
      if (v.name !== u.name) patch.name = v.name;
      if (v.role !== u.role) patch.role = v.role;
      if ((v.team || null) !== (u.team || null)) patch.team = v.team || null;
      return patch;
    },
    rowActions: (u, reload) => [
      smallButton(u.disabled ? "Enable" : "Disable", async () => {
        try {
          await api(`/users/${encodeURIComponent(u.id)}`, { method: "PATCH", json: { disabled: !u.disabled } });
          await reload();
          toast(`${u.name}: ${u.disabled ? "enabled" : "disabled"}`, "ok");
        } catch (err) {
          report(err);
        }
      }, { kind: "btn-ghost" }),
      smallButton("Reset password", (event) => {
        const cell = event.currentTarget.closest("td");
        const open = cell.querySelector(".inline-password input");
        if (open) {
          open.focus();
          return;
        }
        const input = h("input", { type: "password", name: "new-password", placeholder: "New password", autocomplete: "new-password", "aria-label": `New password for ${u.id}` });
        const save = h("button", { type: "submit", class: "btn btn-small btn-primary", text: "Save password" });
        const form = h("form", { class: "inline-password" }, input, save);
        form.addEventListener("submit", async (e) => {
          e.preventDefault();
          try {
            await api(`/users/${encodeURIComponent(u.id)}`, { method: "PATCH", json: { password: input.value } });
            await reload();
            toast(`${u.name}: password set; their sessions were ended`, "ok");
          } catch (err) {
            report(err);
          }
        });
        cell.append(form);
        input.focus();
      }, { kind: "btn-ghost" }),
    ],
  });
}

const PAGES = { cameras: camerasPage, import: importPage, villages: villagesPage, grids: gridsPage, teams: teamsPage, users: usersPage };

export function mount(view, session, tab = "cameras") {
  const current = PAGES[tab] ? tab : "cameras";
  const body = h("div", { class: "admin-body", id: `admin-${current}` });
  replaceChildren(
    view,
    h(
      "section",
      { class: "page admin" },
      h("div", { class: "page-head" }, h("h1", { text: "Administration" })),
      h(
        "nav",
        { class: "tabs", "aria-label": "Admin pages" },
        TABS.map(([key, label]) => h("a", { href: `#/admin/${key}`, class: ["tab", key === current && "active"], "aria-current": key === current ? "page" : undefined, text: label })),
      ),
      body,
    ),
  );
  PAGES[current](body);
  return () => {};
}
