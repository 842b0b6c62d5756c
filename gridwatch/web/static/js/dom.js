// Building DOM without HTML strings: every text goes in through textContent or a text node, so a camera
// name such as `<img src=x onerror=...>` shows as those characters and never becomes markup.

const FORBIDDEN_ATTRS = /^(on|style$|srcdoc$)/i;

/**
 * h("button", {class: "btn", on: {click: fn}, dataset: {id: "x"}, type: "button"}, "Text", child, ...)
 * Attributes: `class`, `text` (textContent), `on` (event listeners), `dataset`, `props` (DOM properties such
 * as `value` or `checked`); anything else is set with setAttribute (never event handlers or style).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "on") for (const [name, fn] of Object.entries(value)) el.addEventListener(name, fn);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "props") Object.assign(el, value);
    else if (FORBIDDEN_ATTRS.test(key)) throw new Error(`h(): attribute ${key} is not allowed`);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replaceChildren(el, ...children) {
  clear(el);
  return append(el, children);
}

/** A labelled form field: {name, label, type, value, options: [[value, text]], required, placeholder}. */
export function field(spec) {
  const id = `f-${spec.form || "x"}-${spec.name}`;
  let input;
  if (spec.type === "select") {
    input = h("select", { id, name: spec.name, required: spec.required });
    for (const [value, text] of spec.options || []) {
      input.append(h("option", { value, text, props: { selected: String(value) === String(spec.value ?? "") } }));
    }
  } else if (spec.type === "checkbox") {
    input = h("input", { id, name: spec.name, type: "checkbox", props: { checked: Boolean(spec.value) } });
    return h("label", { class: "field field-check", for: id }, input, h("span", { text: spec.label }));
  } else if (spec.type === "textarea") {
    input = h("textarea", { id, name: spec.name, rows: spec.rows || 4, placeholder: spec.placeholder });
    input.value = spec.value ?? "";
  } else {
    input = h("input", {
      id,
      name: spec.name,
      type: spec.type || "text",
      required: spec.required,
      placeholder: spec.placeholder,
      autocomplete: spec.autocomplete || "off",
      step: spec.step,
      min: spec.min,
      max: spec.max,
      pattern: spec.pattern,
    });
    if (spec.value !== undefined && spec.value !== null) input.value = String(spec.value);
  }
  return h("label", { class: "field", for: id }, h("span", { class: "field-label", text: spec.label }), input);
}

/** The values of a form's named controls (checkboxes as booleans, numbers as numbers, empty as ""). */
export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.type === "number") out[el.name] = el.value === "" ? "" : Number(el.value);
    else out[el.name] = el.value.trim();
  }
  return out;
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = h("div", { class: ["toast", `toast-${kind}`], text: message });
  box.append(item);
  setTimeout(() => item.classList.add("toast-out"), 4500);
  setTimeout(() => item.remove(), 5000);
}

export function formatTime(iso) {
  if (!iso) return "—";
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return String(iso);
  const today = new Date();
  const sameDay = at.toDateString() === today.toDateString();
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return sameDay ? time : `${at.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

export function ago(iso) {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return "";
  const s = Math.max(0, Math.round((Date.now() - at) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** The first letter in capitals, the rest as it is (labels: "traffic light", "fire"). */
export function capitalize(text) {
  const s = String(text ?? "");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** A status or state for display: "on_scene" -> "On scene". */
export function titleCase(text) {
  const s = String(text ?? "").replaceAll("_", " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}
