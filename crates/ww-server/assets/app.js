// walletwatch's dashboard: sign-in, then the pages by URL hash
// (#/feed, #/wallets, #/wallet/<chain>/<address>, #/alerts, #/health).

import { api, token, setToken, whenRefused } from "./api.js";
import { setChains } from "./format.js";
import { startFeed, stopFeed, feedPage } from "./feed.js";
import { signInPage, walletsPage, walletPage, alertsPage, healthPage } from "./pages.js";

const main = document.getElementById("main");
const header = document.querySelector("header.top");
let me = null;
let leave = () => {};

function signedOut(message) {
  stopFeed();
  setToken(null);
  me = null;
  header.hidden = true;
  document.body.classList.remove("admin");
  leave();
  leave = signInPage(main, { message, onToken: signedIn });
}

async function signedIn(value, who) {
  setToken(value);
  me = who;
  setChains(me.chains);
  header.hidden = false;
  document.body.classList.toggle("admin", me.admin);
  for (const element of header.querySelectorAll(".admin-only")) element.hidden = !me.admin;
  document.getElementById("who").textContent = `${me.user}${me.admin ? " (admin)" : " (read-only)"}`;
  if (!location.hash || location.hash === "#/") location.hash = "#/feed";
  route();
  startFeed(me);
}

function route() {
  if (!me) return;
  leave();
  let parts;
  try {
    parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  } catch (error) {
    parts = ["feed"];
  }
  let page = parts[0] || "feed";
  if (page === "wallet" && !(parts[1] && parts[2])) page = "wallets";
  for (const link of header.querySelectorAll("nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  switch (page) {
    case "wallets":
      leave = walletsPage(main, me);
      document.title = "Wallets · walletwatch";
      break;
    case "wallet":
      leave = walletPage(main, me, parts[1], parts[2]);
      document.title = `${parts[2]} · walletwatch`;
      break;
    case "alerts":
      leave = alertsPage(main, me);
      document.title = "Alerts · walletwatch";
      break;
    case "health":
      leave = healthPage(main);
      document.title = "Health · walletwatch";
      break;
    default:
      leave = feedPage(main);
      document.title = "Live · walletwatch";
  }
  main.focus({ preventScroll: true });
}

whenRefused((failure) => {
  const text = failure.code === "token_expired" ? "Your token has expired; sign in with another." : "Your token was refused (revoked or unknown); sign in again.";
  signedOut(text);
});
document.getElementById("sign-out").addEventListener("click", () => signedOut());
window.addEventListener("hashchange", route);

(async () => {
  const saved = token();
  if (!saved) {
    signedOut();
    return;
  }
  try {
    await signedIn(saved, await api("/me"));
  } catch (failure) {
    if (failure.status !== 401) signedOut(failure.message);
  }
})();
