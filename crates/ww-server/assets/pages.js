// The pages other than the live feed: sign-in, wallets, one wallet, alerts
// and health. Each renders into `main` and returns a function that stops
// its timers when another page is shown.

import { api, walletPath, ApiFailure } from "./api.js";
import { h, units, short, time, ago, count, chainInfo, chainNames, txLink, accountLink } from "./format.js";
import { eventRow } from "./feed.js";

const REFRESH_MS = 5000;
// Larger than any sequence number: "the newest".
const NEWEST = "9007199254740991";

// Asks the user to confirm `text` in the page's dialog; resolves to true
// when they do.
export function confirmAction(text, action = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  ok.textContent = action;
  return new Promise((resolve) => {
    const finish = (answer) => {
      ok.removeEventListener("click", yes);
      cancel.removeEventListener("click", no);
      dialog.removeEventListener("cancel", no);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const yes = () => finish(true);
    const no = () => finish(false);
    ok.addEventListener("click", yes);
    cancel.addEventListener("click", no);
    dialog.addEventListener("cancel", no);
    dialog.showModal();
    cancel.focus();
  });
}

// Redraws `container` with `draw` and gives the keyboard focus back to the
// control that had it (same row key, same label), so a refresh never takes
// a keyboard user's place away.
function keepingFocus(container, draw) {
  const active = document.activeElement;
  let key = null;
  if (active && container.contains(active) && active !== container) {
    const row = active.closest("[data-address], [data-job]");
    key = {
      row: row ? row.dataset.address ?? row.dataset.job : null,
      label: active.getAttribute("aria-label") ?? active.textContent,
      tag: active.tagName,
    };
  }
  draw();
  if (!key) return;
  for (const candidate of container.querySelectorAll(key.tag)) {
    const row = candidate.closest("[data-address], [data-job]");
    const rowKey = row ? row.dataset.address ?? row.dataset.job : null;
    if (rowKey === key.row && (candidate.getAttribute("aria-label") ?? candidate.textContent) === key.label) {
      candidate.focus();
      return;
    }
  }
}

function errorBox() {
  return h("p", { class: "error", role: "alert", hidden: true });
}

function showError(box, error) {
  box.hidden = !error;
  box.textContent = error ? (error instanceof ApiFailure ? error.message : String(error)) : "";
}

function statusBadge(wallet) {
  const status = wallet.subscription_status ?? "Pending";
  const kind = { Active: "good", Polling: "warn", Reconnecting: "warn", Failed: "bad", Disconnected: "bad" }[status] ?? "";
  const transport = wallet.transport ? ` · ${wallet.transport}` : "";
  return h("span", { class: `badge ${kind}`, title: wallet.status_reason ?? "" }, `${status}${transport}`);
}

function nativeText(wallet) {
  const balance = wallet.native_balance;
  if (!balance) return "—";
  const info = chainInfo(wallet.chain);
  return `${units(balance.amount, info.native_decimals, 4)} ${info.native_symbol}`;
}

function walletHref(wallet) {
  return `#/wallet/${encodeURIComponent(wallet.chain)}/${encodeURIComponent(wallet.address)}`;
}

// ---------------------------------------------------------------- sign-in

export function signInPage(main, { message, onToken }) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "ww_…",
    "aria-describedby": "token-help",
  });
  const error = errorBox();
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "card sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in to walletwatch"),
    h("label", { for: "token" }, "API token"),
    input,
    h(
      "p",
      { id: "token-help", class: "help" },
      "Create one with ",
      h("code", {}, "walletwatch token create --user NAME"),
      " (add ",
      h("code", {}, "--admin"),
      " to manage wallets and alerts). It is kept for this browser tab only.",
    ),
    error,
    button,
  );
  main.replaceChildren(form);
  if (message) showError(error, message);
  form.addEventListener("submit", async (submitted) => {
    submitted.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    button.disabled = true;
    showError(error, null);
    try {
      const me = await api("/me", { tokenOverride: value });
      await onToken(value, me);
    } catch (failure) {
      const text =
        failure.code === "unauthorized"
          ? "This token is not valid: it is unknown or was revoked."
          : failure.code === "token_expired"
            ? "This token has expired. Create a new one with walletwatch token create."
            : failure.message;
      showError(error, text);
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  input.focus();
  return () => {};
}

// ---------------------------------------------------------------- wallets

const COLUMNS = [
  { key: "label", title: "Label", value: (w) => (w.label ?? "").toLowerCase() },
  { key: "chain", title: "Chain", value: (w) => w.chain },
  { key: "status", title: "Status", value: (w) => w.subscription_status ?? "" },
  { key: "tier", title: "Activity", value: (w) => ({ high: 0, medium: 1, low: 2 })[w.activity_tier] ?? 3 },
  { key: "balance", title: "Balance", value: (w) => Number(w.native_balance?.amount ?? -1) },
  { key: "last", title: "Last activity", value: (w) => w.last_transaction?.at ?? 0 },
  { key: "users", title: "Users", value: (w) => (w.tracking_users ?? []).length },
];

export function walletsPage(main, me) {
  let wallets = [];
  let sort = { key: "last", descending: true };
  const search = h("input", {
    type: "search",
    id: "wallet-search",
    placeholder: "Search label, address, chain, status",
    "aria-label": "Search wallets",
  });
  const error = errorBox();
  const body = h("tbody");
  const headRow = h("tr");
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  const table = h("div", { class: "table-wrap" }, h("table", { class: "wallets" }, h("thead", {}, headRow), body));
  const parts = [h("div", { class: "page-head" }, h("h1", {}, "Wallets"), summary)];
  if (me.admin) parts.push(trackForm(me, () => load()));
  parts.push(h("div", { class: "toolbar" }, search), error, table);
  main.replaceChildren(...parts);

  for (const column of COLUMNS) {
    const button = h("button", { type: "button", class: "sort" }, column.title);
    const th = h("th", { scope: "col", dataset: { key: column.key } }, button);
    button.addEventListener("click", () => {
      sort = { key: column.key, descending: sort.key === column.key ? !sort.descending : column.key === "last" };
      draw();
    });
    headRow.append(th);
  }
  headRow.prepend(h("th", { scope: "col" }, "Wallet"));
  if (me.admin) headRow.append(h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")));

  function draw() {
    const needle = search.value.trim().toLowerCase();
    const column = COLUMNS.find((c) => c.key === sort.key);
    const shown = wallets
      .filter((w) =>
        !needle ||
        [w.label, w.address, w.chain, w.subscription_status, w.transport, w.activity_tier]
          .some((field) => String(field ?? "").toLowerCase().includes(needle)),
      )
      .sort((a, b) => {
        const [x, y] = [column.value(a), column.value(b)];
        const order = x < y ? -1 : x > y ? 1 : 0;
        return sort.descending ? -order : order;
      });
    for (const th of headRow.querySelectorAll("th[data-key]")) {
      th.setAttribute("aria-sort", th.dataset.key === sort.key ? (sort.descending ? "descending" : "ascending") : "none");
    }
    summary.textContent = `${shown.length} of ${wallets.length} wallet${wallets.length === 1 ? "" : "s"}`;
    keepingFocus(body, () => fill(shown));
  }

  function fill(shown) {
    body.replaceChildren(
      ...shown.map((w) =>
        h(
          "tr",
          { dataset: { address: w.address, chain: w.chain } },
          h("th", { scope: "row" }, h("a", { href: walletHref(w), class: "mono" }, short(w.address))),
          h("td", { "data-label": "Label" }, w.label ?? ""),
          h("td", { "data-label": "Chain" }, w.chain),
          h("td", { "data-label": "Status" }, statusBadge(w)),
          h("td", { "data-label": "Activity" }, w.activity_tier ?? ""),
          h("td", { "data-label": "Balance", class: "num" }, nativeText(w)),
          h("td", { "data-label": "Last activity", title: time(w.last_transaction?.at) }, ago(w.last_transaction?.at)),
          h("td", { "data-label": "Users" }, (w.tracking_users ?? []).join(", ")),
          me.admin ? h("td", {}, untrackButton(w, () => load(), error)) : null,
        ),
      ),
    );
    if (shown.length === 0) {
      body.append(h("tr", {}, h("td", { colspan: 10, class: "empty" }, wallets.length ? "No wallet matches." : "No wallets tracked yet.")));
    }
  }

  async function load() {
    try {
      wallets = await api("/wallets");
      showError(error, null);
    } catch (failure) {
      showError(error, failure);
    }
    draw();
  }

  search.addEventListener("input", draw);
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => clearInterval(timer);
}

function untrackButton(wallet, done, error) {
  const button = h("button", { type: "button", class: "danger small admin-only" }, "Untrack");
  button.setAttribute("aria-label", `Untrack ${wallet.label ?? wallet.address}`);
  button.addEventListener("click", async () => {
    const users = wallet.tracking_users ?? [];
    const name = wallet.label ? `${wallet.label} (${short(wallet.address)})` : wallet.address;
    const ok = await confirmAction(
      `Stop tracking ${name} for ${users.join(", ")}? Its stored events stay; no new ones are recorded.`,
      "Untrack",
    );
    if (!ok) return;
    const failures = [];
    for (const user of users) {
      try {
        await api(`${walletPath(wallet.chain, wallet.address)}&user=${encodeURIComponent(user)}`, { method: "DELETE" });
      } catch (failure) {
        failures.push(`${user}: ${failure.message}`);
      }
    }
    showError(error, failures.length ? `Not untracked for ${failures.join("; ")}` : null);
    done();
  });
  return button;
}

function trackForm(me, done) {
  const address = h("input", { id: "track-address", name: "address", required: true, autocomplete: "off", spellcheck: "false" });
  const chain = h("select", { id: "track-chain", name: "chain" }, chainNames().map((name) => h("option", { value: name }, name)));
  const label = h("input", { id: "track-label", name: "label", autocomplete: "off", maxlength: 64 });
  const error = errorBox();
  error.id = "track-error";
  const result = h("p", { class: "ok", role: "status" });
  const button = h("button", { type: "submit" }, "Track");
  const form = h(
    "form",
    { class: "card track admin-only", "aria-label": "Track a wallet" },
    h("h2", {}, "Track a wallet"),
    h("div", { class: "fields" },
      h("div", {}, h("label", { for: "track-address" }, "Address"), address),
      h("div", {}, h("label", { for: "track-chain" }, "Chain"), chain),
      h("div", {}, h("label", { for: "track-label" }, "Label (optional)"), label),
      h("div", { class: "submit" }, button)),
    error,
    result,
  );
  form.addEventListener("submit", async (submitted) => {
    submitted.preventDefault();
    button.disabled = true;
    result.textContent = "";
    showError(error, null);
    try {
      const body = { address: address.value.trim(), chain: chain.value };
      if (label.value.trim()) body.label = label.value.trim();
      const answer = await api("/wallets", { method: "POST", body });
      showError(error, null);
      address.removeAttribute("aria-invalid");
      // The API's message starts with a status emoji the chat front ends show.
      result.textContent = answer.message.replace(/^\p{Extended_Pictographic}\s*/u, "");
      address.value = "";
      label.value = "";
      done();
    } catch (failure) {
      showError(error, failure);
      address.setAttribute("aria-invalid", "true");
      address.setAttribute("aria-describedby", "track-error");
      address.focus();
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

// ---------------------------------------------------------------- one wallet

export function walletPage(main, me, chain, address) {
  const error = errorBox();
  const head = h("div", { class: "page-head" }, h("h1", {}, short(address)));
  const facts = h("dl", { class: "facts" });
  const chart = h("div", { class: "chart", role: "img", "aria-label": "Native balance over time" });
  const tokens = h("div", { class: "table-wrap" });
  const subscriptions = h("div", { class: "subscriptions" });
  const events = h("ol", { class: "events", "aria-label": "The wallet's events, newest first" });
  const older = h("button", { type: "button", class: "quiet" }, "Older events");
  main.replaceChildren(
    h("p", {}, h("a", { href: "#/wallets" }, "← Wallets")),
    head,
    error,
    h("section", { class: "card" }, h("h2", {}, "Overview"), facts),
    h("section", { class: "card" }, h("h2", {}, "Balance history"), chart),
    h("section", { class: "card" }, h("h2", {}, "Token balances"), tokens),
    h("section", { class: "card" }, h("h2", {}, "Subscriptions and filters"), subscriptions),
    h("section", { class: "card" }, h("h2", {}, "Events"), events, older),
  );
  const decimals = new Map();
  let before = NEWEST;
  let plot = null;
  let left = false;
  let subscriptionsDrawn = false;

  async function loadEvents() {
    older.disabled = true;
    try {
      const page = await api(`${walletPath(chain, address, "/activity")}&before=${before}&limit=25`);
      for (const stored of page.events) {
        for (const delta of stored.token_deltas ?? []) decimals.set(delta.mint, delta.decimals);
      }
      events.querySelector(".empty")?.remove();
      events.append(...page.events.slice().reverse().map(eventRow));
      if (page.events.length === 0 && events.children.length === 0) {
        events.append(h("li", { class: "empty" }, "No events stored for this wallet yet."));
      }
      before = page.next_before ?? before;
      older.hidden = page.events.length < 25;
    } catch (failure) {
      showError(error, failure);
    } finally {
      older.disabled = false;
    }
  }

  async function loadWallet() {
    const wallet = await api(walletPath(chain, address));
    head.replaceChildren(h("h1", {}, wallet.label ? `${wallet.label}` : short(address)), statusBadge(wallet));
    const coverage = wallet.coverage ?? {};
    const from = coverage.from_slot !== null && coverage.from_slot !== undefined
      ? `${chain === "solana" ? "slot" : "block"} ${count(coverage.from_slot)}`
      : `${time(coverage.from_time)}`;
    const through = coverage.through
      ? coverage.through.slot !== undefined
        ? `slot ${count(coverage.through.slot)}`
        : `block ${count(coverage.through.block)}`
      : "its first stored transaction (nothing read yet)";
    const rows = [
      ["Address", accountLink(chain, address, address)],
      ["Chain", chain],
      ["Balance", nativeText(wallet)],
      ["Activity", wallet.activity_tier],
      ["Transactions", count(wallet.transaction_count)],
      ["Last activity", wallet.last_transaction ? [ago(wallet.last_transaction.at), " · ", txLink(chain, wallet.last_transaction.signature)] : "never"],
      ["Tracked since", time(wallet.added_at)],
      ["Coverage", `Every transaction from ${from} through ${through} is stored.`],
      ["Users", (wallet.tracking_users ?? []).join(", ")],
    ];
    facts.replaceChildren(...rows.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
    // Drawn once (and after a save): a refresh never wipes an edit in progress.
    if (!subscriptionsDrawn) {
      subscriptionsDrawn = true;
      drawSubscriptions(wallet);
    }
  }

  function drawSubscriptions(wallet) {
    const own = (wallet.subscriptions ?? []);
    if (own.length === 0) {
      subscriptions.replaceChildren(h("p", {}, "No subscription of yours on this wallet."));
      return;
    }
    subscriptions.replaceChildren(...own.map((subscription) => subscriptionCard(wallet, subscription)));
  }

  function subscriptionCard(wallet, subscription) {
    const filter = subscription.filter ?? {};
    const mine = subscription.user === me.user;
    const editable = me.admin;
    const id = (name) => `sub-${subscription.user}-${name}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const field = (name, title, input) => h("div", {}, h("label", { for: id(name) }, title), input);
    const inputs = {
      label: h("input", { id: id("label"), value: subscription.label ?? "", maxlength: 64 }),
      direction: h("select", { id: id("direction") }, ["any", "in", "out"].map((d) => h("option", { value: d, selected: filter.direction === d }, d))),
      min_native: h("input", { id: id("min_native"), type: "number", step: "any", min: "0", value: filter.min_native ?? "" }),
      min_token_amount: h("input", { id: id("min_token_amount"), type: "number", step: "any", min: "0", value: filter.min_token_amount ?? "" }),
      min_usd: h("input", { id: id("min_usd"), type: "number", step: "any", min: "0", value: filter.min_usd ?? "" }),
      mints_allow: h("input", { id: id("mints_allow"), value: (filter.mints_allow ?? []).join(", "), placeholder: "mint, mint…" }),
      mints_deny: h("input", { id: id("mints_deny"), value: (filter.mints_deny ?? []).join(", "), placeholder: "mint, mint…" }),
      include_failed: h("input", { id: id("include_failed"), type: "checkbox", checked: !!filter.include_failed }),
      muted: h("input", { id: id("muted"), type: "checkbox", checked: !!filter.muted }),
    };
    for (const input of Object.values(inputs)) if (!editable) input.disabled = true;
    const error = errorBox();
    const saved = h("p", { class: "ok", role: "status" });
    const info = chainInfo(wallet.chain);
    const form = h(
      "form",
      { class: "subscription", dataset: { user: subscription.user } },
      h("h3", {}, mine ? `Yours (${subscription.user})` : subscription.user),
      h("p", { class: "help" }, `Destinations: ${(subscription.destinations ?? []).join(", ") || "the user's defaults"}`),
      h("div", { class: "fields" },
        field("label", "Label", inputs.label),
        field("direction", "Direction", inputs.direction),
        field("min_native", `Smallest ${info.native_symbol} movement`, inputs.min_native),
        field("min_token_amount", "Smallest token movement", inputs.min_token_amount),
        field("min_usd", "Smallest USD value", inputs.min_usd),
        field("mints_allow", "Only these tokens", inputs.mints_allow),
        field("mints_deny", "Never these tokens", inputs.mints_deny),
        h("div", { class: "check" }, inputs.include_failed, h("label", { for: id("include_failed") }, "Alert on failed transactions")),
        h("div", { class: "check" }, inputs.muted, h("label", { for: id("muted") }, "Muted (record, no alerts)"))),
      error,
      saved,
      editable ? h("button", { type: "submit", class: "admin-only" }, "Save") : null,
    );
    form.addEventListener("submit", async (submitted) => {
      submitted.preventDefault();
      const number = (input) => (input.value.trim() === "" ? null : Number(input.value));
      const list = (input) => input.value.split(/[\s,]+/).map((text) => text.trim()).filter(Boolean);
      const body = {
        filter: {
          ...filter,
          direction: inputs.direction.value,
          min_native: number(inputs.min_native),
          min_token_amount: number(inputs.min_token_amount),
          min_usd: number(inputs.min_usd),
          mints_allow: list(inputs.mints_allow),
          mints_deny: list(inputs.mints_deny),
          include_failed: inputs.include_failed.checked,
          muted: inputs.muted.checked,
        },
      };
      // An empty label clears the user's own label.
      body.label = inputs.label.value.trim() || null;
      try {
        await api(`${walletPath(wallet.chain, wallet.address, "/subscription")}&user=${encodeURIComponent(subscription.user)}`, { method: "PUT", body });
        showError(error, null);
        saved.textContent = "Saved.";
      } catch (failure) {
        saved.textContent = "";
        showError(error, failure);
      }
    });
    return form;
  }

  async function loadBalances() {
    const answer = await api(walletPath(chain, address, "/balances"));
    const isNative = (record) => (record.asset.kind === "sol" || record.asset.kind === "native") && record.address === record.wallet;
    const info = chainInfo(chain);
    const points = answer.history
      .filter(isNative)
      .map((record) => [Number(record.observed_at) / 1000, Number(units(record.amount, info.native_decimals, 9).replaceAll(",", ""))])
      .sort((a, b) => a[0] - b[0]);
    drawChart(points, info.native_symbol);
    const tokenRows = answer.balances.filter((record) => record.asset.kind === "token");
    if (tokenRows.length === 0) {
      tokens.replaceChildren(h("p", {}, "No token accounts seen."));
      return;
    }
    tokens.replaceChildren(
      h("table", {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Token"), h("th", { scope: "col" }, "Account"), h("th", { scope: "col", class: "num" }, "Balance"), h("th", { scope: "col" }, "Read"))),
        h("tbody", {}, tokenRows.map((record) => {
          const places = decimals.get(record.asset.mint);
          return h("tr", {},
            h("td", { "data-label": "Token" }, accountLink(chain, record.asset.mint)),
            h("td", { "data-label": "Account" }, accountLink(chain, record.address)),
            h("td", { "data-label": "Balance", class: "num" }, places === undefined ? `${units(record.amount, 0)} base units` : units(record.amount, places)),
            h("td", { "data-label": "Read" }, ago(record.observed_at)));
        }))),
    );
  }

  function drawChart(points, symbol) {
    if (left) return;
    plot?.destroy();
    plot = null;
    if (points.length < 2 || typeof uPlot === "undefined") {
      chart.replaceChildren(h("p", { class: "help" }, points.length < 2 ? "Not enough balance readings yet for a chart." : "The chart library did not load."));
      return;
    }
    chart.replaceChildren();
    const width = Math.max(260, Math.min(chart.clientWidth || 600, 900));
    plot = new uPlot(
      {
        width,
        height: 220,
        scales: { x: { time: true } },
        axes: [{}, { label: symbol, size: 70 }],
        series: [{}, { label: symbol, stroke: "#1f6f5c", width: 2, fill: "rgba(31,111,92,0.08)" }],
        legend: { live: false },
      },
      [points.map((p) => p[0]), points.map((p) => p[1])],
      chart,
    );
  }

  older.addEventListener("click", loadEvents);
  (async () => {
    try {
      await loadWallet();
      await loadEvents();
      await loadBalances();
    } catch (failure) {
      showError(error, failure);
    }
  })();
  const timer = setInterval(() => loadWallet().catch((failure) => showError(error, failure)), REFRESH_MS * 2);
  return () => {
    left = true;
    clearInterval(timer);
    plot?.destroy();
  };
}

// ---------------------------------------------------------------- alerts

export function alertsPage(main, me) {
  if (!me.admin) {
    main.replaceChildren(h("h1", {}, "Alerts"), h("p", {}, "The outbox and dead letters need an admin token."));
    return () => {};
  }
  const error = errorBox();
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  const retryAll = h("button", { type: "button", class: "admin-only" }, "Retry every dead letter");
  const dead = h("div", { class: "table-wrap" });
  const outbox = h("div", { class: "table-wrap" });
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Alerts"), summary),
    error,
    h("section", { class: "card" }, h("div", { class: "section-head" }, h("h2", {}, "Dead letters"), retryAll), dead),
    h("section", { class: "card" }, h("h2", {}, "Outbox (waiting to be sent)"), outbox),
  );

  function jobTable(jobs, kind) {
    if (jobs.length === 0) return h("p", { class: "empty" }, kind === "dead" ? "No dead letters." : "Nothing waiting.");
    return h("table", { class: `jobs ${kind}` },
      h("thead", {}, h("tr", {},
        ["Job", "Destination", "Wallet", "Transaction", "Attempts", kind === "dead" ? "Died" : "Next try", "Last error", ""].map((title) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, jobs.map(({ job, died_at }) => h("tr", { dataset: { job: job.id } },
        h("td", { "data-label": "Job" }, String(job.id)),
        h("td", { "data-label": "Destination" }, String(job.destination)),
        h("td", { "data-label": "Wallet" }, h("span", { class: "mono" }, short(job.wallet))),
        h("td", { "data-label": "Transaction" }, String(job.wallet).startsWith("0x") ? h("span", { class: "mono" }, short(job.signature)) : txLink("solana", job.signature)),
        h("td", { "data-label": "Attempts" }, String(job.attempts)),
        h("td", { "data-label": kind === "dead" ? "Died" : "Next try" }, time(kind === "dead" ? died_at : job.next_attempt_at)),
        h("td", { "data-label": "Last error", class: "error-text" }, job.last_error ?? ""),
        h("td", { class: "actions" },
          kind === "dead" ? action("Retry", `Retry dead letter ${job.id}`, () => api("/outbox/dead/retry", { method: "POST", body: { ids: [job.id] } })) : null,
          action("Drop", `Drop job ${job.id}`, async () => {
            if (await confirmAction(`Drop job ${job.id}? Its alert to ${job.destination} will never be sent.`, "Drop")) {
              await api(`/outbox/jobs/${job.id}`, { method: "DELETE" });
            }
          }, "danger"))))));
  }

  function action(text, label, run, kind = "") {
    const button = h("button", { type: "button", class: `small admin-only ${kind}`, "aria-label": label }, text);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await run();
        showError(error, null);
      } catch (failure) {
        showError(error, failure);
      }
      await load();
    });
    return button;
  }

  async function load() {
    try {
      const [queue, letters] = await Promise.all([api("/outbox"), api("/outbox/dead")]);
      summary.textContent = `${count(queue.depth)} waiting · ${count(queue.dead_letters)} dead`;
      keepingFocus(dead, () => dead.replaceChildren(jobTable(letters.dead_letters, "dead")));
      keepingFocus(outbox, () => outbox.replaceChildren(jobTable(queue.jobs.map((job) => ({ job })), "outbox")));
      retryAll.disabled = letters.dead_letters.length === 0;
      showError(error, null);
    } catch (failure) {
      showError(error, failure);
    }
  }

  retryAll.addEventListener("click", async () => {
    try {
      await api("/outbox/dead/retry", { method: "POST", body: {} });
    } catch (failure) {
      showError(error, failure);
    }
    load();
  });
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------- health

export function healthPage(main) {
  const error = errorBox();
  const banner = h("section", { class: "banner", role: "status", "aria-live": "polite" });
  const grid = h("div", { class: "grid" });
  main.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Health")), error, banner, grid);
  let previous = null;

  function card(title, ...content) {
    return h("section", { class: "card" }, h("h2", {}, title), ...content);
  }

  function wide(section) {
    section.classList.add("wide");
    return section;
  }

  function table(rows, headings) {
    if (rows.length === 0) return h("p", { class: "empty" }, "None yet.");
    return h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, headings.map((title) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell, index) => h(index === 0 ? "th" : "td", index === 0 ? { scope: "row" } : { class: "num" }, cell)))))));
  }

  function counts(map) {
    return h("dl", { class: "facts" }, Object.entries(map ?? {}).flatMap(([key, value]) => [h("dt", {}, key), h("dd", {}, count(value))]));
  }

  async function load() {
    let status;
    try {
      status = await api("/status");
      showError(error, null);
    } catch (failure) {
      showError(error, failure);
      return;
    }
    const now = Date.now();
    banner.className = `banner ${status.ready ? "good" : "bad"}`;
    banner.dataset.ready = String(status.ready);
    banner.replaceChildren(
      ...[h("strong", {}, status.ready ? "Ready" : "Not ready"),
      status.reasons.length ? h("ul", { class: "reasons" }, status.reasons.map((reason) => h("li", {}, reason))) : null,
      status.degraded.length ? h("ul", { class: "degraded" }, status.degraded.map((reason) => h("li", {}, `Degraded: ${reason}`))) : null].filter(Boolean),
    );
    const rpc = status.rpc;
    const rpcRows = rpc ? Object.entries(rpc.calls).map(([method, calls]) => [method, count(rpc.calls_per_hour[method]), count(calls)]) : [];
    const elapsedMinutes = previous ? (now - previous.at) / 60000 : null;
    const deliveryRows = Object.entries(status.deliveries ?? {}).map(([sink, outcomes]) => {
      const before = previous?.deliveries?.[sink] ?? {};
      const rate = (outcome) => (elapsedMinutes ? ((outcomes[outcome] ?? 0) - (before[outcome] ?? 0)) / elapsedMinutes : null);
      const perMinute = rate("delivered");
      return [sink, count(outcomes.delivered), perMinute === null ? "…" : perMinute.toFixed(1), count(outcomes.retry), count(outcomes.dead_lettered), count(outcomes.filtered)];
    });
    const round = rpc?.last_balance_round;
    grid.replaceChildren(...[
      card("Connections",
        h("dl", { class: "facts" },
          h("dt", {}, "Connected"), h("dd", { dataset: { metric: "connected" } }, count(status.connections.connected)),
          h("dt", {}, "Connecting or reconnecting"), h("dd", {}, count(status.connections.reconnecting)),
          h("dt", {}, "Total"), h("dd", {}, count(status.connections.total)),
          h("dt", {}, "WebSocket clients"), h("dd", {}, count(status.websocket.clients)))),
      card("Processing",
        h("dl", { class: "facts" },
          h("dt", {}, "Lag"), h("dd", {}, `${(status.processing_lag_ms / 1000).toFixed(1)} s`),
          h("dt", {}, "Catching up"), h("dd", {}, `${count(status.wallets_catching_up)} addresses`),
          h("dt", {}, "Fetches pending"), h("dd", {}, count(status.work?.fetches_pending)),
          h("dt", {}, "Unresolved retrying"), h("dd", {}, count(status.work?.unresolved_retrying)))),
      card("Wallets by status", counts(status.wallets.by_status)),
      card("Wallets by transport and activity", counts({ ...status.wallets.by_transport, ...Object.fromEntries(Object.entries(status.wallets.by_tier).map(([tier, n]) => [`${tier} activity`, n])) })),
      wide(card("JSON-RPC calls", table(rpcRows, ["Method", "Per hour (average)", "Since start"]),
        rpc ? h("p", { class: "help" }, `Since ${time(rpc.started_at)} (${rpc.server_id}).`) : null)),
      card("Balance rounds",
        h("dl", { class: "facts" },
          h("dt", {}, "Last round"), h("dd", {}, rpc?.last_balance_refresh ? ago(rpc.last_balance_refresh) : "none yet"),
          h("dt", {}, "Accounts read"), h("dd", {}, round ? count(round.accounts) : "—"),
          h("dt", {}, "Calls"), h("dd", {}, round ? count(round.calls) : "—"))),
      status.outbox
        ? wide(card("Deliveries", table(deliveryRows, ["Sink", "Delivered", "Per minute", "Retries", "Dead", "Filtered"]),
          h("p", { class: "help" }, `${count(status.outbox.depth)} waiting · ${count(status.outbox.dead_letters)} dead letters`)))
        : null,
      Object.keys(status.evm ?? {}).length
        ? card("EVM chains", table(Object.entries(status.evm).map(([name, evm]) => [name, evm.reachable === false ? "unreachable" : evm.streaming ? "streaming" : "polling", count(evm.head), count(evm.scanned), count(evm.wallets)]), ["Chain", "State", "Head", "Scanned", "Wallets"]))
        : null,
    ].filter(Boolean));
    previous = { at: now, deliveries: status.deliveries ?? {} };
  }

  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => clearInterval(timer);
}
