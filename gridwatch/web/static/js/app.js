// The app shell: who is logged in, the top bar, and hash routing to the pages by role
// (operators and admins: the dashboard; patrol members: their grid; admins also the admin pages).

import { ApiError, api, onUnauthorized, setCsrf } from "./api.js";
import * as admin from "./admin.js";
import * as detail from "./detail.js";
import { h, replaceChildren, titleCase, toast } from "./dom.js";
import { showLogin } from "./login.js";
import * as operator from "./operator.js";
import * as patrol from "./patrol.js";
import { listenToWorker, registerWorker } from "./push.js";
import { soundToggle, wakeOnGesture } from "./sound.js";

const view = document.getElementById("view");
const topbar = document.getElementById("topbar");
const nav = document.getElementById("nav");
const sessionBox = document.getElementById("session-box");
let session = null;
let unmount = () => {};

function homeOf(user) {
  return user.role === "patrol" ? "#/patrol" : "#/operator";
}

function links(user) {
  const out = [];
  if (user.role !== "patrol") out.push(["#/operator", "Dashboard"]);
  out.push(["#/patrol", user.role === "patrol" ? "My grid" : "Patrol view"]);
  if (user.role === "admin") out.push(["#/admin/cameras", "Admin"]);
  return out;
}

function renderTopbar() {
  topbar.hidden = !session;
  if (!session) return;
  const route = location.hash || homeOf(session);
  replaceChildren(
    nav,
    links(session).map(([href, text]) =>
      h("a", { href, class: ["nav-link", route.startsWith(href.split("/").slice(0, 2).join("/")) && "active"], text }),
    ),
  );
  const logout = h("button", { type: "button", class: "btn btn-ghost", id: "logout", text: "Log out" });
  logout.addEventListener("click", async () => {
    try {
      await api("/logout", { method: "POST" });
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
    }
    loggedOut("You are logged out.");
  });
  replaceChildren(
    sessionBox,
    session.role !== "patrol" ? soundToggle() : null,
    h(
      "span",
      { class: "who", title: session.user_id },
      h("strong", { id: "who-name", text: session.name }),
      h("span", { class: ["tag", `role-${session.role}`], id: "who-role", text: session.role }),
    ),
    logout,
  );
}

function route() {
  unmount();
  unmount = () => {};
  if (!session) return;
  const hash = location.hash || "";
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const [page, arg] = parts;
  document.body.dataset.page = page || "home";
  renderTopbar();
  if (page === "alerts" && arg) unmount = detail.mount(view, session, decodeURIComponent(arg));
  else if (page === "admin" && session.role === "admin") unmount = admin.mount(view, session, arg);
  else if (page === "patrol") unmount = patrol.mount(view, session);
  else if (page === "operator" && session.role !== "patrol") unmount = operator.mount(view, session);
  else {
    const home = homeOf(session);
    if (hash !== home) {
      location.replace(home);
      return;
    }
  }
  document.title = `GridWatch · ${titleCase(page || "home")}`;
}

function loggedIn(user) {
  session = user;
  setCsrf(user.csrf_token);
  registerWorker();
  if (!location.hash || location.hash === "#/login") location.replace(homeOf(user)); // routes on hashchange
  else route();
}

async function loggedOut(message, problem) {
  unmount();
  unmount = () => {};
  session = null;
  setCsrf(null);
  renderTopbar();
  document.body.dataset.page = "login";
  let setupNeeded = false;
  try {
    const response = await fetch("/ui/bootstrap.json", { credentials: "same-origin" });
    setupNeeded = Boolean((await response.json()).setup_needed);
  } catch {
    // the login form works without it
  }
  showLogin(view, { onLogin: loggedIn, setupNeeded, message, problem });
}

async function boot() {
  wakeOnGesture();
  listenToWorker();
  onUnauthorized(() => {
    if (session) {
      toast("Your session has ended; log in again.", "error");
      loggedOut(undefined, "Your session has ended; log in again.");
    }
  });
  window.addEventListener("hashchange", route);
  try {
    loggedIn(await api("/session"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) loggedOut();
    else replaceChildren(view, h("p", { class: "form-error", text: `GridWatch is unreachable: ${err.message}` }));
  }
}

boot();
