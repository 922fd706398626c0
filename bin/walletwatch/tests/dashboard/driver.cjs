// Drives walletwatch's dashboard in headless Chromium (playwright-core) for
// bin/walletwatch/tests/dashboard.rs. It reads one JSON command per line on
// stdin ({"id", "action", ...}) and answers one JSON line on stdout
// ({"id", "ok", "value"} or {"id", "ok": false, "error"}). The Rust test
// decides what to check; this file only acts on the page and reads it.
"use strict";

const readline = require("node:readline");
const { chromium } = require("playwright-core");

let browser = null;
let context = null;
let page = null;
// Requests to anything but the walletwatch under test: there must be none.
const external = [];
const consoleErrors = [];
let origin = null;

const TIMEOUT = 30000;

async function launch({ executable, width = 1280, height = 800 }) {
  browser = await chromium.launch({
    executablePath: executable,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context = await browser.newContext({ viewport: { width, height } });
  page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("request", (request) => {
    const url = request.url();
    if (origin && !url.startsWith(origin) && !url.startsWith(origin.replace(/^http/, "ws")) && !url.startsWith("data:")) {
      external.push(url);
    }
  });
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  return true;
}

async function visible(selector) {
  return page.locator(selector).first().isVisible().catch(() => false);
}

const actions = {
  launch,
  async open({ url }) {
    origin = new URL(url).origin;
    await page.goto(url);
    await page.waitForSelector("#token, header.top:not([hidden])");
    return page.url();
  },
  async signIn({ token }) {
    await page.waitForSelector("#token");
    await page.fill("#token", token);
    await page.click("form.sign-in button[type=submit]");
    await page.waitForFunction(
      () =>
        !document.querySelector("header.top").hidden ||
        (document.querySelector("form.sign-in .error") && !document.querySelector("form.sign-in .error").hidden),
    );
    const signedIn = !(await page.locator("header.top").isHidden());
    const error = signedIn ? null : await page.locator("form.sign-in .error").innerText();
    return { signedIn, error, who: signedIn ? await page.locator("#who").innerText() : null };
  },
  async signInMessage() {
    await page.waitForSelector("form.sign-in");
    const error = page.locator("form.sign-in .error");
    return (await error.isVisible()) ? error.innerText() : null;
  },
  async signOut() {
    await page.click("#sign-out");
    await page.waitForSelector("form.sign-in");
    return true;
  },
  async nav({ hash }) {
    await page.evaluate((target) => {
      location.hash = target;
    }, hash);
    await page.waitForTimeout(300);
    return page.url();
  },
  async keyboardNav({ page: name }) {
    // Tab from the top of the document until the nav link has focus, then
    // press Enter: the pages are reachable without a mouse.
    await page.keyboard.press("Home");
    await page.evaluate(() => document.activeElement?.blur());
    for (let presses = 0; presses < 30; presses += 1) {
      await page.keyboard.press("Tab");
      const focused = await page.evaluate(() => document.activeElement?.dataset?.page ?? null);
      if (focused === name) {
        await page.keyboard.press("Enter");
        await page.waitForTimeout(300);
        return { presses: presses + 1, url: page.url() };
      }
    }
    return { presses: null, url: page.url() };
  },
  async feed() {
    return page.evaluate(() => {
      const status = document.querySelector(".feed-status");
      return {
        state: status?.dataset.state ?? null,
        duplicates: Number(status?.dataset.duplicates ?? -1),
        missed: Number(status?.dataset.missed ?? -1),
        notice: status?.querySelector(".notice")?.textContent ?? "",
        rows: [...document.querySelectorAll("ol.events li.event")].map((row) => ({
          seq: Number(row.dataset.seq),
          signature: row.dataset.signature,
          wallet: row.dataset.wallet,
          text: row.innerText,
        })),
      };
    });
  },
  async track({ address, chain, label }) {
    await page.waitForSelector("#track-address");
    await page.fill("#track-address", address);
    if (chain) await page.selectOption("#track-chain", chain);
    await page.fill("#track-label", label ?? "");
    await page.click("form.track button[type=submit]");
    await page.waitForFunction(
      () => !document.getElementById("track-error").hidden || document.querySelector("form.track .ok").textContent !== "",
    );
    const errorVisible = await visible("#track-error");
    return {
      error: errorVisible ? await page.locator("#track-error").innerText() : null,
      message: await page.locator("form.track .ok").innerText().catch(() => ""),
      invalid: await page.getAttribute("#track-address", "aria-invalid"),
    };
  },
  async walletRows() {
    return page.evaluate(() =>
      [...document.querySelectorAll("table.wallets tbody tr[data-address]")].map((row) => ({
        address: row.dataset.address,
        chain: row.dataset.chain,
        text: row.innerText,
        untrack: !!row.querySelector("button.danger"),
      })),
    );
  },
  async search({ text }) {
    await page.fill("#wallet-search", text);
    return actions.walletRows();
  },
  async untrack({ address }) {
    await page.click(`table.wallets tr[data-address="${address}"] button.danger`);
    await page.waitForSelector("dialog#confirm[open]");
    await page.click("#confirm-ok");
    await page.waitForSelector(`table.wallets tr[data-address="${address}"]`, { state: "detached" });
    return true;
  },
  async deadLetters() {
    return page.evaluate(() =>
      [...document.querySelectorAll("table.jobs.dead tbody tr[data-job]")].map((row) => ({
        id: Number(row.dataset.job),
        text: row.innerText,
      })),
    );
  },
  async retryDead({ job }) {
    await page.click(`table.jobs.dead tr[data-job="${job}"] button[aria-label="Retry dead letter ${job}"]`);
    await page.waitForSelector(`table.jobs.dead tr[data-job="${job}"]`, { state: "detached" });
    return true;
  },
  async adminControls() {
    return page.evaluate(() => {
      const shown = (element) => !!(element.offsetWidth || element.offsetHeight || element.getClientRects().length);
      const selectors = ["form.track", "button.danger", ".admin-only", "a[data-page=alerts]"];
      return selectors.flatMap((selector) => [...document.querySelectorAll(selector)].filter(shown).map(() => selector));
    });
  },
  async editSubscription({ user, label, minNative, direction }) {
    const form = page.locator(`form.subscription[data-user="${user}"]`);
    await form.locator("input[id$='-label']").fill(label);
    await form.locator("input[id$='-min_native']").fill(String(minNative));
    await form.locator("select[id$='-direction']").selectOption(direction);
    await form.locator("button[type=submit]").click();
    await page.waitForFunction(
      (who) => {
        const element = document.querySelector(`form.subscription[data-user="${who}"]`);
        return element.querySelector(".ok").textContent !== "" || !element.querySelector(".error").hidden;
      },
      user,
    );
    return {
      saved: await form.locator(".ok").innerText(),
      error: (await form.locator(".error").isVisible()) ? await form.locator(".error").innerText() : null,
    };
  },
  async click({ selector }) {
    await page.click(selector);
    return true;
  },
  async held() {
    return page.evaluate(() => {
      const button = document.querySelector("button.held");
      return { hidden: button.hidden, text: button.textContent };
    });
  },
  async text({ selector }) {
    await page.waitForSelector(selector);
    return page.locator(selector).first().innerText();
  },
  async waitFor({ selector, state = "visible" }) {
    await page.waitForSelector(selector, { state });
    return true;
  },
  async reload() {
    await page.reload();
    await page.waitForSelector("#token, header.top:not([hidden])");
    return true;
  },
  async viewport({ width, height }) {
    await page.setViewportSize({ width, height });
    return true;
  },
  async scrollWidth() {
    return page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  },
  async screenshot({ path, fullPage = false }) {
    await page.screenshot({ path, fullPage });
    return path;
  },
  async diagnostics() {
    return { external, consoleErrors };
  },
  async close() {
    await browser?.close();
    return true;
  },
};

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    let command;
    try {
      command = JSON.parse(line);
    } catch (error) {
      process.stdout.write(JSON.stringify({ id: null, ok: false, error: `bad command: ${error}` }) + "\n");
      return;
    }
    try {
      const action = actions[command.action];
      if (!action) throw new Error(`no action ${command.action}`);
      const value = await action(command);
      process.stdout.write(JSON.stringify({ id: command.id, ok: true, value: value ?? null }) + "\n");
    } catch (error) {
      process.stdout.write(JSON.stringify({ id: command.id, ok: false, error: String(error?.stack ?? error) }) + "\n");
    }
  });
});
lines.on("close", () => {
  queue.then(() => browser?.close()).finally(() => process.exit(0));
});
