// Logging in, and first-run setup (the first admin, with the one-time setup token from the server's log).

import { api } from "./api.js";
import { field, formValues, h, replaceChildren } from "./dom.js";

function card(title, subtitle, form) {
  return h(
    "section",
    { class: "page login-page" },
    h(
      "div",
      { class: "login-card card" },
      h("div", { class: "login-brand" }, h("img", { src: "/ui/icon.svg", alt: "", width: 48, height: 48 }), h("span", { text: "GridWatch" })),
      h("h1", { text: title }),
      subtitle ? h("p", { class: "muted", text: subtitle }) : null,
      form,
    ),
  );
}

/** The login form; `onLogin(session)` once the API accepted it. */
export function showLogin(view, { onLogin, setupNeeded, message, problem }) {
  const notice = h("p", { class: "form-notice", role: "status", text: message || "" });
  const error = h("p", { class: "form-error", role: "alert", text: problem || "" });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block", text: "Log in" });
  const form = h(
    "form",
    { class: "stack", id: "login-form" },
    field({ form: "login", name: "username", label: "User id", required: true, autocomplete: "username" }),
    field({ form: "login", name: "password", label: "Password", type: "password", required: true, autocomplete: "current-password" }),
    notice,
    error,
    submit,
  );
  if (setupNeeded) {
    const link = h("button", { type: "button", class: "btn btn-link", text: "First run: create the first admin" });
    link.addEventListener("click", () => showSetup(view, { onLogin }));
    form.append(h("p", { class: "muted setup-hint" }, "No admin can log in yet. ", link));
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value; // as typed: spaces may be part of it
    submit.disabled = true;
    error.textContent = "";
    notice.textContent = "";
    try {
      onLogin(await api("/login", { method: "POST", json: { username, password } }));
    } catch (err) {
      error.textContent = err.status === 401 ? "Wrong user id or password." : err.message;
      form.elements.password.value = "";
      submit.disabled = false;
    }
  });
  replaceChildren(view, card("Log in", "Village camera alerts", form));
  form.elements.username.focus();
}

export function showSetup(view, { onLogin }) {
  const error = h("p", { class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block", text: "Create the admin and log in" });
  const form = h(
    "form",
    { class: "stack", id: "setup-form" },
    field({ form: "setup", name: "setup_token", label: "Setup token (from the server's log)", required: true }),
    field({ form: "setup", name: "user_id", label: "Admin user id", required: true, placeholder: "admin", pattern: "[a-z0-9][a-z0-9_\\-]{0,62}" }),
    field({ form: "setup", name: "name", label: "Name", required: true }),
    field({ form: "setup", name: "password", label: "Password (a long passphrase)", type: "password", required: true, autocomplete: "new-password" }),
    error,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = formValues(form);
    const password = form.elements.password.value;
    submit.disabled = true;
    error.textContent = "";
    try {
      await api("/setup", {
        method: "POST",
        json: { setup_token: values.setup_token, user_id: values.user_id, name: values.name, password },
      });
      onLogin(await api("/login", { method: "POST", json: { username: values.user_id, password } }));
    } catch (err) {
      error.textContent = err.message;
      submit.disabled = false;
    }
  });
  const back = h("button", { type: "button", class: "btn btn-link", text: "Back to log in" });
  back.addEventListener("click", () => showLogin(view, { onLogin, setupNeeded: true }));
  form.append(back);
  replaceChildren(view, card("First-run setup", "Create the first admin. The setup token is in the server's log.", form));
}
