// The zone editor: a camera's zones, masks and motion masks drawn on a picture of its scene.
//
// Points are fractions of the frame (0..1), as the config and the API keep them, so the picture's size does
// not matter. Click to add points, Enter or "Finish" (or a click on the first point) closes a shape, drag a
// point of the selected shape to move it. Per-label thresholds (min score, min box area) are rows of a
// table under the picture. Saving sends the camera's whole `detection` with PATCH /cameras/{id}; the API
// checks it as it checks the YAML. Cameras of the config file are shown read-only. Every name goes in as
// text, never as markup.

import { ApiError, api } from "./api.js";
import { h, replaceChildren, toast } from "./dom.js";
import { loadCameraPicture } from "./picture.js";

const SVG = "http://www.w3.org/2000/svg";
const SIZE = 1000; // the overlay's coordinate space: 0..1 of the frame is 0..1000
const ZONE_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const LABELS = ["person", "car", "truck", "bus", "motorcycle", "bicycle", "fire", "smoke"];
const CLOSE_DISTANCE = 0.025; // a click this close to the first point closes the shape
const KINDS = {
  zone: { label: "Zone", plural: "zones", hint: "an area that rules can require (named)" },
  mask: { label: "Mask", plural: "masks", hint: "detections and motion here are ignored" },
  motion_mask: { label: "Motion mask", plural: "motion masks", hint: "motion here is ignored; detections still count" },
};

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

const round = (v) => Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;

/** The camera's detection as a list of shapes the editor draws. */
export function shapesOf(detection) {
  const d = detection || {};
  return [
    ...(d.zones || []).map((z) => ({ kind: "zone", name: z.name, points: z.polygon.map((p) => [...p]) })),
    ...(d.masks || []).map((m) => ({ kind: "mask", points: m.map((p) => [...p]) })),
    ...(d.motion_masks || []).map((m) => ({ kind: "motion_mask", points: m.map((p) => [...p]) })),
  ];
}

/** The shapes and the thresholds as the API's `detection`; null when nothing is left. */
export function detectionOf(shapes, thresholds) {
  const out = {
    zones: shapes.filter((s) => s.kind === "zone").map((s) => ({ name: s.name, polygon: s.points })),
    masks: shapes.filter((s) => s.kind === "mask").map((s) => s.points),
    motion_masks: shapes.filter((s) => s.kind === "motion_mask").map((s) => s.points),
    thresholds: thresholds || {},
  };
  const empty = !out.zones.length && !out.masks.length && !out.motion_masks.length && !Object.keys(out.thresholds).length;
  return empty ? null : out;
}

function thresholdsText(thresholds) {
  const entries = Object.entries(thresholds || {});
  if (!entries.length) return "No per-label thresholds.";
  const parts = entries.map(([label, t]) => `${label}: score ≥ ${t.min_score ?? 0}, area ≥ ${t.min_area ?? 0}`);
  return `Per-label thresholds: ${parts.join("; ")}.`;
}

/** The thresholds table: one row per label, {label: {min_score, min_area}} out; problems as text. */
function thresholdsTable(thresholds, onChange) {
  const body = h("tbody");
  const list = h("datalist", { id: "zone-labels" }, LABELS.map((l) => h("option", { value: l })));
  const addRow = (label = "", t = {}) => {
    const input = (name, value, attrs) =>
      h("input", { name, type: "number", step: "any", required: true, ...attrs, props: { value: String(value) }, on: { input: onChange } });
    const row = h(
      "tr",
      { class: "threshold-row" },
      h("td", {}, h("input", { name: "label", list: "zone-labels", required: true, placeholder: "person", autocomplete: "off", props: { value: label }, on: { input: onChange } })),
      h("td", {}, input("min_score", t.min_score ?? 0, { min: 0, max: 1 })),
      h("td", {}, input("min_area", t.min_area ?? 0, { min: 0, max: 0.99 })),
      h("td", {}, h("button", { type: "button", class: "btn btn-small btn-danger threshold-remove", text: "Remove", on: { click: () => { row.remove(); onChange(); } } })),
    );
    body.append(row);
  };
  for (const [label, t] of Object.entries(thresholds || {})) addRow(label, t);
  const add = h("button", { type: "button", class: "btn btn-small", id: "threshold-add", text: "Add a label threshold", on: { click: () => { addRow(); onChange(); } } });
  const table = h(
    "table",
    { class: "table thresholds-table", id: "thresholds" },
    h("thead", {}, h("tr", {}, ["Label", "Min score (0–1)", "Min box area (share of the frame)", ""].map((t) => h("th", { text: t })))),
    body,
  );
  const read = () => {
    const out = {};
    const problems = [];
    for (const row of body.querySelectorAll("tr")) {
      const label = row.querySelector("[name=label]").value.trim();
      const score = Number(row.querySelector("[name=min_score]").value);
      const area = Number(row.querySelector("[name=min_area]").value);
      if (!label) problems.push("a threshold row has no label");
      else if (label in out) problems.push(`label ${label} has two threshold rows`);
      else if (!(score >= 0 && score <= 1) || !(area >= 0 && area < 1)) problems.push(`${label}: the score goes from 0 to 1, the area from 0 to below 1`);
      else out[label] = { min_score: score, min_area: area };
    }
    return { thresholds: out, problems };
  };
  return { el: h("div", { class: "zone-thresholds-box" }, h("h4", { text: "Per-label thresholds" }), table, list, add), read };
}

/**
 * Open the editor for `camera` (a row of GET /cameras). `onSaved()` runs after a successful save.
 * Returns the <dialog>; it removes itself when closed.
 */
export function openZoneEditor(camera, { onSaved, readOnly = false } = {}) {
  let shapes = shapesOf(camera.detection);
  const thresholds = camera.detection?.thresholds || {};
  const limits = readOnly ? null : thresholdsTable(thresholds, () => changed());
  let drawing = null; // {kind, name, points}
  let selected = null; // index into shapes
  let dirty = false;

  const picture = h("img", { class: "zone-frame", alt: `What ${camera.name} sees now` });
  const pictureNote = h("p", { class: "zone-picture-note muted", text: "Loading the camera's picture…" });
  const overlay = svg("svg", { class: "zone-overlay", viewBox: `0 0 ${SIZE} ${SIZE}`, preserveAspectRatio: "none" });
  const marks = h("div", { class: "zone-marks" }); // names and draggable points, as HTML over the picture
  const stage = h("div", { class: ["zone-stage", readOnly && "zone-stage-readonly"], id: "zone-stage", tabindex: "0" }, picture, overlay, marks);

  const kind = h(
    "select",
    { id: "zone-kind", name: "kind" },
    Object.entries(KINDS).map(([value, k]) => h("option", { value, text: k.label })),
  );
  const name = h("input", { id: "zone-name", name: "name", placeholder: "zone name, e.g. gate", autocomplete: "off", pattern: ZONE_NAME.source });
  const nameField = h("label", { class: "field zone-name-field", for: "zone-name" }, h("span", { class: "field-label", text: "Zone name" }), name);
  const startButton = h("button", { type: "button", class: "btn btn-small btn-primary", id: "zone-new", text: "New shape" });
  const finishButton = h("button", { type: "button", class: "btn btn-small btn-primary", id: "zone-finish", text: "Finish shape" });
  const undoButton = h("button", { type: "button", class: "btn btn-small", id: "zone-undo", text: "Undo point" });
  const cancelButton = h("button", { type: "button", class: "btn btn-small btn-ghost", id: "zone-cancel", text: "Cancel shape" });
  const hint = h("p", { class: "zone-hint muted", id: "zone-hint" });
  const list = h("ul", { class: "zone-list", id: "zone-list" });
  const problem = h("p", { class: "form-error zone-error", id: "zone-error", "aria-live": "polite" });
  const saveButton = h("button", { type: "button", class: "btn btn-primary", id: "zone-save", text: "Save" });
  const closeButton = h("button", { type: "button", class: "btn", id: "zone-close", text: "Close" });
  const refreshButton = h("button", { type: "button", class: "btn btn-small btn-ghost", id: "zone-refresh", text: "New picture" });

  const toolbar = readOnly
    ? h("p", { class: "form-notice", text: "From the config file: change its zones and masks there." })
    : h(
        "div",
        { class: "zone-toolbar" },
        h("label", { class: "field", for: "zone-kind" }, h("span", { class: "field-label", text: "Draw a" }), kind),
        nameField,
        h("div", { class: "form-buttons" }, startButton, finishButton, undoButton, cancelButton),
      );
  const dialog = h(
    "dialog",
    { class: "zone-editor", "aria-label": `Zones and masks of ${camera.name}`, dataset: { camera: camera.id } },
    h("div", { class: "zone-head" }, h("h3", { text: `Zones and masks: ${camera.name}` }), refreshButton),
    toolbar,
    hint,
    stage,
    pictureNote,
    h("div", { class: "zone-side" }, list, limits ? limits.el : h("p", { class: "muted zone-thresholds", text: thresholdsText(thresholds) })),
    problem,
    h("div", { class: "form-buttons zone-buttons" }, readOnly ? null : saveButton, closeButton),
  );

  // -- the picture --------------------------------------------------------------------------------
  let pictureUrl = null;
  // the stage keeps the frame's shape before the picture comes (the probe's size, else 16:9), so points
  // drawn or dragged meanwhile land where they will be on the picture
  const setAspect = (width, height) => {
    const ratio = width > 0 && height > 0 ? width / height : 16 / 9;
    stage.style.aspectRatio = String(ratio);
    stage.style.width = `min(100%, calc(55vh * ${ratio}))`; // the list and the buttons stay in view
  };
  setAspect(camera.probe?.width, camera.probe?.height);
  const loadPicture = async () => {
    pictureNote.textContent = "Loading the camera's picture…";
    stage.classList.add("zone-stage-blank");
    delete dialog.dataset.picture;
    try {
      const loaded = await loadCameraPicture(camera.id, picture, pictureUrl);
      pictureUrl = loaded.url;
      setAspect(picture.naturalWidth, picture.naturalHeight);
      stage.classList.remove("zone-stage-blank");
      pictureNote.textContent = `The camera's picture now (${loaded.width}×${loaded.height}).`;
      dialog.dataset.picture = "loaded";
    } catch (err) {
      picture.removeAttribute("src");
      pictureNote.textContent = `No picture from the camera (${err.message}); shapes can still be drawn on the blank frame.`;
      dialog.dataset.picture = "failed";
    }
  };

  // -- drawing ------------------------------------------------------------------------------------
  const pointAt = (event) => {
    const rect = stage.getBoundingClientRect();
    return [round((event.clientX - rect.left) / rect.width), round((event.clientY - rect.top) / rect.height)];
  };

  const changed = () => {
    dirty = true;
    problem.textContent = "";
    if (discardArmed) {
      discardArmed = false; // a new change: closing asks again
      closeButton.textContent = "Close";
      closeButton.classList.remove("btn-danger", "armed");
    }
    render();
  };

  const startShape = () => {
    const k = kind.value;
    if (k === "zone") {
      const wanted = name.value.trim();
      if (!ZONE_NAME.test(wanted)) {
        problem.textContent = "A zone needs a name: lower-case letters, digits, - and _ (for example gate-north).";
        name.focus();
        return;
      }
      if (shapes.some((s) => s.kind === "zone" && s.name === wanted)) {
        problem.textContent = `There is a zone called ${wanted} already.`;
        return;
      }
      drawing = { kind: k, name: wanted, points: [] };
    } else {
      drawing = { kind: k, points: [] };
    }
    selected = null;
    problem.textContent = "";
    render();
    stage.focus();
  };

  const finishShape = () => {
    if (!drawing || drawing.points.length < 3) return;
    shapes.push(drawing);
    selected = shapes.length - 1;
    drawing = null;
    name.value = "";
    changed();
  };

  const cancelShape = () => {
    drawing = null;
    render();
  };

  stage.addEventListener("click", (event) => {
    if (!drawing || readOnly || event.target.closest(".zone-point")) return;
    const point = pointAt(event);
    const first = drawing.points[0];
    if (first && drawing.points.length >= 3 && Math.hypot(point[0] - first[0], point[1] - first[1]) < CLOSE_DISTANCE) {
      finishShape();
      return;
    }
    drawing.points.push(point);
    render();
  });

  // dragging a point of the selected shape
  let dragging = null; // {shape, index}
  marks.addEventListener("pointerdown", (event) => {
    const handle = event.target.closest(".zone-point[data-shape]");
    if (!handle || readOnly || drawing) return;
    event.preventDefault();
    handle.setPointerCapture(event.pointerId);
    dragging = { shape: Number(handle.dataset.shape), index: Number(handle.dataset.index), handle };
  });
  marks.addEventListener("pointermove", (event) => {
    if (!dragging) return;
    shapes[dragging.shape].points[dragging.index] = pointAt(event);
    dirty = true;
    drawOverlay();
    placeHandle(dragging.handle, shapes[dragging.shape].points[dragging.index]);
  });
  const endDrag = () => {
    if (!dragging) return;
    dragging = null;
    changed();
  };
  marks.addEventListener("pointerup", endDrag);
  marks.addEventListener("pointercancel", endDrag);

  const onKey = (event) => {
    if (!drawing || !dialog.open) return;
    const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
    if (event.key === "Enter") {
      event.preventDefault();
      finishShape();
    } else if (event.key === "Backspace" && !typing) {
      event.preventDefault();
      drawing.points.pop();
      render();
    }
  };
  document.addEventListener("keydown", onKey); // the focus may be anywhere in the dialog, or nowhere
  // Closing with unsaved changes asks first: "Close" (or Escape) once arms it, a second time discards.
  let discardArmed = false;
  const askBeforeClosing = () => {
    if (!dirty || readOnly || discardArmed) return false;
    discardArmed = true;
    closeButton.textContent = "Discard changes?";
    closeButton.classList.add("btn-danger", "armed");
    problem.textContent = 'Unsaved changes: "Save" keeps them, "Discard changes?" drops them.';
    return true;
  };
  dialog.addEventListener("cancel", (event) => {
    if (drawing) {
      event.preventDefault(); // Escape ends the shape being drawn, a second Escape closes the editor
      cancelShape();
    } else if (askBeforeClosing()) {
      event.preventDefault();
    }
  });

  startButton.addEventListener("click", startShape);
  finishButton.addEventListener("click", finishShape);
  undoButton.addEventListener("click", () => {
    drawing?.points.pop();
    render();
  });
  cancelButton.addEventListener("click", cancelShape);
  kind.addEventListener("change", () => {
    nameField.hidden = kind.value !== "zone";
  });
  refreshButton.addEventListener("click", loadPicture);

  // -- drawing the overlay and the list ------------------------------------------------------------
  const placeHandle = (el, [x, y]) => {
    el.style.left = `${x * 100}%`;
    el.style.top = `${y * 100}%`;
  };

  const polygonPoints = (points) => points.map(([x, y]) => `${x * SIZE},${y * SIZE}`).join(" ");

  const drawOverlay = () => {
    overlay.replaceChildren();
    shapes.forEach((shape, i) => {
      overlay.append(
        svg("polygon", {
          points: polygonPoints(shape.points),
          class: `zone-shape zone-${shape.kind}${i === selected ? " zone-selected" : ""}`,
          "vector-effect": "non-scaling-stroke",
          "data-index": i,
        }),
      );
    });
    if (drawing && drawing.points.length) {
      overlay.append(
        svg("polyline", {
          points: polygonPoints(drawing.points),
          class: `zone-drawing zone-${drawing.kind}`,
          "vector-effect": "non-scaling-stroke",
        }),
      );
    }
  };

  const centre = (points) => [
    points.reduce((a, p) => a + p[0], 0) / points.length,
    points.reduce((a, p) => a + p[1], 0) / points.length,
  ];

  const drawMarks = () => {
    marks.replaceChildren();
    shapes.forEach((shape, i) => {
      if (shape.kind === "zone") {
        const label = h("span", { class: "zone-label", text: shape.name });
        placeHandle(label, centre(shape.points));
        marks.append(label);
      }
      if (i === selected && !readOnly && !drawing) {
        shape.points.forEach((point, index) => {
          const handle = h("span", { class: "zone-point", dataset: { shape: i, index }, title: "Drag to move this point" });
          placeHandle(handle, point);
          marks.append(handle);
        });
      }
    });
    if (drawing) {
      drawing.points.forEach((point, index) => {
        const dot = h("span", { class: ["zone-point", "zone-point-new", index === 0 && "zone-point-first"] });
        placeHandle(dot, point);
        marks.append(dot);
      });
    }
  };

  const drawList = () => {
    const rows = shapes.map((shape, i) =>
      h(
        "li",
        { class: ["zone-item", i === selected && "zone-item-selected"], dataset: { kind: shape.kind, index: i } },
        h("span", { class: ["zone-swatch", `zone-swatch-${shape.kind}`] }),
        h(
          "button",
          { type: "button", class: "btn-link zone-select", on: { click: () => { selected = i; render(); } } },
          shape.kind === "zone" ? `Zone ${shape.name}` : KINDS[shape.kind].label,
        ),
        h("small", { class: "muted", text: `${shape.points.length} points` }),
        readOnly
          ? null
          : h("button", {
              type: "button",
              class: "btn btn-small btn-danger zone-remove",
              text: "Remove",
              on: {
                click: () => {
                  shapes.splice(i, 1);
                  selected = null;
                  changed();
                },
              },
            }),
      ),
    );
    replaceChildren(list, rows.length ? rows : h("li", { class: "empty", text: "No zones or masks: the whole frame counts." }));
  };

  const render = () => {
    drawOverlay();
    drawMarks();
    drawList();
    stage.classList.toggle("zone-stage-drawing", Boolean(drawing));
    finishButton.disabled = !drawing || drawing.points.length < 3;
    undoButton.disabled = !drawing || !drawing.points.length;
    cancelButton.disabled = !drawing;
    startButton.disabled = Boolean(drawing);
    kind.disabled = Boolean(drawing);
    name.disabled = Boolean(drawing);
    saveButton.disabled = Boolean(drawing) || !dirty;
    hint.textContent = readOnly
      ? ""
      : drawing
        ? `Drawing ${drawing.kind === "zone" ? `zone ${drawing.name}` : `a ${KINDS[drawing.kind].label.toLowerCase()}`}: ` +
          `click on the picture to add points (${drawing.points.length} so far); Enter, "Finish shape" or a click on the first point closes it.`
        : `Choose what to draw (${KINDS[kind.value].hint}) and press "New shape"; select a shape in the list to drag its points.`;
  };

  // -- saving ---------------------------------------------------------------------------------------
  saveButton.addEventListener("click", async () => {
    const wanted = limits.read();
    if (wanted.problems.length) {
      problem.textContent = wanted.problems.join("; ");
      return;
    }
    saveButton.disabled = true;
    problem.textContent = "";
    try {
      await api(`/cameras/${encodeURIComponent(camera.id)}`, { method: "PATCH", json: { detection: detectionOf(shapes, wanted.thresholds) } });
      dirty = false;
      toast(`${camera.name}: zones and masks saved`, "ok");
      dialog.close();
      if (onSaved) await onSaved();
    } catch (err) {
      problem.textContent = err instanceof ApiError ? err.message : String(err);
      saveButton.disabled = false;
    }
  });
  closeButton.addEventListener("click", () => {
    if (!askBeforeClosing()) dialog.close();
  });
  dialog.addEventListener("close", () => {
    document.removeEventListener("keydown", onKey);
    if (pictureUrl) URL.revokeObjectURL(pictureUrl);
    dialog.remove();
  });

  document.body.append(dialog);
  nameField.hidden = kind.value !== "zone";
  render();
  dialog.showModal();
  loadPicture();
  return dialog;
}
