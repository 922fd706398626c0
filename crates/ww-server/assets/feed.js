// The live feed: events over /ws as they are stored, newest first. It keeps
// its connection while other pages are shown, resumes with `?after=` after
// every disconnect (and after being told it lagged), and never shows an
// event twice: a repeat is counted (data-duplicates) and dropped.

import { api, wsUrl } from "./api.js";
import { h, movement, signed, short, time, txLink, accountLink } from "./format.js";

const KEPT = 500;
const FIRST_PAGE = 50;
const MAX_BACKOFF_MS = 10000;
// Scrolled further than this from the top: new events wait (the list does
// not move under the reader).
const PAUSE_SCROLL_PX = 120;

// Scanned at most for the first page (a reader's events may be sparse
// among everyone's).
const FIRST_PAGE_SCAN = 5000;
// A connection that stays up this long resets the reconnect backoff.
const STABLE_MS = 10000;

const state = {
  generation: 0,
  stableTimer: null,
  me: null,
  running: false,
  events: [],
  seen: new Set(),
  resumeAfter: 0,
  lastRetraction: null,
  duplicates: 0,
  missed: 0,
  socket: null,
  retries: 0,
  timer: null,
  status: "connecting",
  notice: "",
  held: 0,
  pausedByUser: false,
  labels: new Map(),
  labelsReadAt: 0,
  view: null,
};

function walletKey(chain, address) {
  return `${chain}:${address}`;
}

async function readLabels() {
  state.labelsReadAt = Date.now();
  try {
    const wallets = await api("/wallets");
    state.labels = new Map(wallets.map((wallet) => [walletKey(wallet.chain, wallet.address), wallet.label]));
  } catch (error) {
    // Labels are a nicety: the feed shows addresses without them.
  }
}

export async function startFeed(me) {
  stopFeed();
  // A sign-out or another sign-in while this one waits ends it.
  const generation = ++state.generation;
  Object.assign(state, {
    me,
    running: true,
    events: [],
    seen: new Set(),
    duplicates: 0,
    missed: 0,
    retries: 0,
    status: "connecting",
    notice: "",
    held: 0,
    lastRetraction: null,
  });
  await readLabels();
  if (generation !== state.generation) return;
  // The newest page, then live from the number read with it: nothing
  // between the two is lost, nothing is shown twice. The page is read back
  // from that number until it holds FIRST_PAGE events this user may see.
  state.resumeAfter = me.last_event_seq;
  try {
    let before = me.last_event_seq + 1;
    let scanned = 0;
    while (state.events.length < FIRST_PAGE && before > 1 && scanned < FIRST_PAGE_SCAN) {
      const page = await api(`/events?before=${before}&limit=500`);
      if (generation !== state.generation) return;
      for (const stored of page.events.slice(-(FIRST_PAGE - state.events.length))) accept(stored, false);
      scanned += 500;
      if (page.next_before === null || page.next_before >= before) break;
      before = page.next_before;
    }
  } catch (error) {
    state.notice = `The newest events could not be read: ${error.message}`;
  }
  if (generation !== state.generation) return;
  render();
  connect();
}

export function stopFeed() {
  state.running = false;
  state.generation += 1;
  clearTimeout(state.timer);
  clearTimeout(state.stableTimer);
  if (state.socket) {
    state.socket.onclose = null;
    state.socket.close();
    state.socket = null;
  }
}

function setStatus(status, notice) {
  state.status = status;
  if (notice !== undefined) state.notice = notice;
  renderStatus();
}

function connect() {
  if (!state.running) return;
  const topic = state.me.admin ? "transactions" : `user:${state.me.user}`;
  const params = { subscriptions: `${topic},status`, after: String(state.resumeAfter) };
  if (state.lastRetraction !== null) params.retractions_after = String(state.lastRetraction);
  const socket = new WebSocket(wsUrl(params));
  state.socket = socket;
  socket.onopen = () => {
    // The backoff resets once the connection has stayed up: a server that
    // accepts and closes at once is not hammered.
    clearTimeout(state.stableTimer);
    state.stableTimer = setTimeout(() => {
      state.retries = 0;
    }, STABLE_MS);
    setStatus("live", state.status === "reconnecting" ? "Reconnected; caught up from the store." : state.notice);
  };
  socket.onmessage = (message) => {
    let parsed;
    try {
      parsed = JSON.parse(message.data);
    } catch (error) {
      return;
    }
    receive(parsed);
  };
  socket.onclose = () => {
    if (state.socket !== socket) return;
    state.socket = null;
    clearTimeout(state.stableTimer);
    scheduleReconnect();
  };
}

function scheduleReconnect(notice) {
  if (!state.running) return;
  state.retries += 1;
  const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(state.retries - 1, 5));
  const jittered = delay / 2 + Math.random() * (delay / 2);
  setStatus("reconnecting", notice ?? `Connection lost; reconnecting (attempt ${state.retries})…`);
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => {
    if (state.retries >= 3) {
      // A refused token signs the user out (api.js); anything else retries.
      try {
        await api("/me");
      } catch (error) {
        if (error.status === 401) return;
      }
    }
    connect();
  }, jittered);
}

function receive(message) {
  switch (message.type) {
    case "TransactionUpdate":
      accept(message.data, true);
      break;
    case "UserActivity":
      accept(message.data.event, true);
      break;
    case "TransactionRetracted":
      retract(message.data);
      break;
    case "UserActivityRetracted":
      retract(message.data.event);
      break;
    case "lagged":
      // The server dropped messages this client could not take: reconnect
      // (with the same backoff as after a disconnect) and resume from the
      // last event shown, which fills the gap from the store.
      state.missed += message.missed;
      if (state.socket) {
        const socket = state.socket;
        state.socket = null;
        socket.onclose = null;
        socket.close();
      }
      clearTimeout(state.stableTimer);
      scheduleReconnect(`Fell behind the stream (${message.missed} events not sent); catching up…`);
      break;
    case "Notification":
      if (message.data?.message && message.data.message !== "heartbeat" && message.data.message !== "subscribed") {
        setStatus(state.status, message.data.message);
      }
      break;
    default:
      break;
  }
}

function accept(stored, live) {
  if (state.seen.has(stored.seq)) {
    state.duplicates += 1;
    renderStatus();
    return;
  }
  state.seen.add(stored.seq);
  state.resumeAfter = Math.max(state.resumeAfter, stored.seq);
  state.events.unshift(stored);
  state.events.sort((a, b) => b.seq - a.seq);
  if (state.events.length > KEPT) {
    state.events.length = KEPT;
    // Older numbers never come again (the stream resumes after the newest).
    const oldest = state.events[KEPT - 1].seq;
    for (const seq of state.seen) if (seq < oldest) state.seen.delete(seq);
  }
  const key = walletKey(stored.chain, stored.wallet);
  // A wallet tracked since the labels were read: read them again (at most
  // every 2 s) and relabel the rows shown.
  if (live && !state.labels.has(key) && Date.now() - state.labelsReadAt > 2000) readLabels().then(relabel);
  if (live) showNew(stored);
}

function relabel() {
  for (const link of state.view?.list.querySelectorAll("li.event") ?? []) {
    const label = state.labels.get(walletKey(link.dataset.chain, link.dataset.wallet));
    const anchor = link.querySelector("a.wallet");
    if (label && anchor && anchor.textContent !== label) anchor.textContent = label;
  }
}

function retract(stored) {
  if (stored.retraction_seq !== undefined && stored.retraction_seq !== null) {
    state.lastRetraction = Math.max(state.lastRetraction ?? 0, stored.retraction_seq);
  }
  const shown = state.events.find((event) => event.seq === stored.seq);
  if (!shown) {
    // Stored and retracted while this page was away: it is shown, marked.
    if (!state.seen.has(stored.seq) && stored.seq > (state.events.at(-1)?.seq ?? 0)) accept(stored, true);
    return;
  }
  shown.retracted_at = stored.retracted_at;
  const row = state.view?.list.querySelector(`[data-seq="${stored.seq}"]`);
  if (row) row.replaceWith(eventRow(shown ?? stored));
}

function paused() {
  return state.pausedByUser || window.scrollY > PAUSE_SCROLL_PX;
}

function showNew(stored) {
  if (!state.view) return;
  if (paused()) {
    state.held += 1;
    renderStatus();
    return;
  }
  state.view.list.prepend(eventRow(stored));
  while (state.view.list.children.length > KEPT) state.view.list.lastElementChild.remove();
  state.view.list.querySelector(".empty")?.remove();
}

export function eventRow(stored) {
  const { direction, parts } = movement(stored);
  const failed = stored.outcome?.status === "failed";
  const label = state.labels.get(walletKey(stored.chain, stored.wallet));
  const when = stored.block_time ? stored.block_time * 1000 : stored.received_at;
  const arrow = { in: "↓ in", out: "↑ out", none: "· none" }[direction];
  return h(
    "li",
    {
      class: `event ${direction}${failed ? " failed" : ""}${stored.retracted_at ? " retracted" : ""}`,
      dataset: { seq: stored.seq, signature: stored.signature, wallet: stored.wallet, chain: stored.chain },
    },
    h("span", { class: "when" }, time(when)),
    h("span", { class: "chain badge" }, stored.chain),
    h(
      "a",
      { class: "wallet", href: `#/wallet/${encodeURIComponent(stored.chain)}/${encodeURIComponent(stored.wallet)}` },
      label || short(stored.wallet),
    ),
    h("span", { class: `direction ${direction}`, "aria-label": `direction ${direction}` }, arrow),
    h(
      "span",
      { class: "amount" },
      parts.map((part) => h("span", { class: "part" }, `${signed(part.amount, part.decimals)} ${part.unit}`)),
    ),
    h(
      "span",
      { class: "counterparty" },
      stored.counterparty ? [direction === "in" ? "from " : "to ", accountLink(stored.chain, stored.counterparty)] : "",
    ),
    failed ? h("span", { class: "badge bad", title: stored.outcome.error ?? "" }, "failed") : null,
    stored.retracted_at ? h("span", { class: "badge warn" }, "retracted (reorg)") : null,
    h("span", { class: "link" }, txLink(stored.chain, stored.signature, "explorer ↗")),
  );
}

function renderStatus() {
  const view = state.view;
  if (!view) return;
  const labels = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…" };
  view.status.dataset.state = state.status;
  view.status.dataset.duplicates = String(state.duplicates);
  view.status.dataset.missed = String(state.missed);
  view.state.textContent = labels[state.status] ?? state.status;
  view.notice.textContent = state.notice;
  view.held.hidden = state.held === 0;
  view.held.textContent = `${state.held} new event${state.held === 1 ? "" : "s"} — show`;
  view.pause.textContent = state.pausedByUser ? "Resume" : "Pause";
  view.pause.setAttribute("aria-pressed", String(state.pausedByUser));
}

function render() {
  const view = state.view;
  if (!view) return;
  state.held = 0;
  view.list.replaceChildren(...state.events.map(eventRow));
  if (state.events.length === 0) {
    view.list.append(h("li", { class: "empty" }, "No events yet. They appear here the moment they are stored."));
  }
  renderStatus();
}

function onScroll() {
  if (state.view && state.held > 0 && !paused()) render();
}

// Renders the feed page into `main`.
export function feedPage(main) {
  const status = h(
    "div",
    { class: "feed-status", role: "status", "aria-live": "polite" },
    h("span", { class: "dot", "aria-hidden": "true" }),
    h("strong", { class: "state" }),
    h("span", { class: "notice" }),
  );
  const held = h("button", { type: "button", class: "held", hidden: true });
  const pause = h("button", { type: "button", class: "quiet pause", "aria-pressed": "false" }, "Pause");
  const list = h("ol", { class: "events", "aria-label": "Events, newest first" });
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Live feed"), pause),
    status,
    held,
    list,
  );
  state.view = { status, state: status.querySelector(".state"), notice: status.querySelector(".notice"), held, pause, list };
  held.addEventListener("click", () => {
    state.pausedByUser = false;
    window.scrollTo({ top: 0 });
    render();
  });
  pause.addEventListener("click", () => {
    state.pausedByUser = !state.pausedByUser;
    if (!state.pausedByUser) render();
    else renderStatus();
  });
  window.addEventListener("scroll", onScroll, { passive: true });
  render();
  return () => {
    window.removeEventListener("scroll", onScroll);
    state.view = null;
  };
}

