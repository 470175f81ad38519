// The console's shell: the token, the navigation between the four views.

import { api, onUnauthorized, saveToken, session, Unauthorized } from "./api.js";
import { DeadLettersView } from "./deadletters.js";
import { OverviewView } from "./overview.js";
import { RegistrationsView } from "./registrations.js";
import { TailView } from "./tail.js";

const $ = (id) => document.getElementById(id);
const views = {
  overview: new OverviewView(),
  registrations: new RegistrationsView(),
  "dead-letters": new DeadLettersView(),
  tail: new TailView(),
};
let current = null;

function showOnly(id) {
  for (const section of document.querySelectorAll("main > section, #loading, #fatal")) {
    section.hidden = section.id !== id;
  }
}

function leaveView() {
  if (current) current.hide();
  current = null;
}

function showLogin(message) {
  leaveView();
  $("nav").hidden = true;
  $("forget-token").hidden = true;
  $("relay-state").textContent = "";
  $("login-error").textContent = message || "";
  $("login-error").hidden = !message;
  showOnly("login");
  $("token").focus();
}

function route() {
  if (!session.info) return;
  const name = location.hash.slice(1) in views ? location.hash.slice(1) : "overview";
  leaveView();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  showOnly(`view-${name}`);
  current = views[name];
  current.show();
}

async function start() {
  try {
    session.info = await api("/api/v1/console");
  } catch (error) {
    session.info = null;
    if (error instanceof Unauthorized) {
      showLogin(session.token ? "That token was refused." : "");
    } else {
      $("fatal").textContent = `The relay did not answer: ${error.message}`;
      showOnly("fatal");
    }
    return;
  }
  session.offset = session.info.now - Date.now() / 1000;
  $("nav").hidden = false;
  $("forget-token").hidden = !session.token;
  $("relay-state").textContent = `cfylogs ${session.info.version}`;
  route();
}

onUnauthorized(() => {
  session.info = null;
  showLogin(session.token ? "The relay refused the token." : "");
});

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  saveToken($("token").value.trim());
  $("token").value = "";
  start();
});

$("forget-token").addEventListener("click", () => {
  saveToken(null);
  session.info = null;
  showLogin("");
});

window.addEventListener("hashchange", route);
start();
