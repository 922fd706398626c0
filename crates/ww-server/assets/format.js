// Formatting and DOM helpers shared by the pages.

// Creates an element: h("a", {href: "#"}, "text", child). Attributes named
// on* are not accepted (no inline handlers); use addEventListener.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on")) throw new Error(`no inline handler ${name}`);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

// Formats base units (a decimal string or bigint) with `decimals`: at most
// `digits` significant fraction digits, thousands grouped.
export function units(amount, decimals, digits = 6) {
  let value = BigInt(amount ?? 0);
  const negative = value < 0n;
  if (negative) value = -value;
  const scale = 10n ** BigInt(decimals);
  const whole = value / scale;
  let fraction = (value % scale).toString().padStart(decimals, "0").replace(/0+$/, "");
  if (fraction.length > digits) fraction = fraction.slice(0, digits).replace(/0+$/, "");
  const grouped = whole.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${negative ? "-" : ""}${grouped}${fraction ? "." + fraction : ""}`;
}

// "+1.5" / "-0.25": a signed change.
export function signed(amount, decimals) {
  const text = units(amount, decimals);
  return text.startsWith("-") ? text : `+${text}`;
}

export function short(address) {
  const text = String(address ?? "");
  return text.length > 14 ? `${text.slice(0, 6)}…${text.slice(-4)}` : text;
}

export function time(millis) {
  if (millis === null || millis === undefined) return "—";
  const date = new Date(Number(millis));
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function ago(millis) {
  if (millis === null || millis === undefined) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - Number(millis)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function count(value) {
  return Number(value ?? 0).toLocaleString();
}

// The chains `/api/me` named, by name.
let chains = new Map();
export function setChains(list) {
  chains = new Map((list ?? []).map((chain) => [chain.chain, chain]));
}

export function chainInfo(name) {
  return (
    chains.get(name) ?? {
      chain: name,
      native_symbol: name === "solana" ? "SOL" : "ETH",
      native_decimals: name === "solana" ? 9 : 18,
      explorer_tx_url: "",
      explorer_account_url: "",
    }
  );
}

export function chainNames() {
  return [...chains.keys()];
}

// A link to the chain's explorer, or plain text when none is configured.
function explorerLink(template, placeholder, value, text) {
  if (!template) return h("span", { class: "mono" }, text);
  let url = template;
  for (const name of placeholder) url = url.replaceAll(`{${name}}`, encodeURIComponent(value));
  if (!/^https?:\/\//.test(url)) return h("span", { class: "mono" }, text);
  return h("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "mono" }, text);
}

export function txLink(chain, signature, text = short(signature)) {
  return explorerLink(chainInfo(chain).explorer_tx_url, ["signature", "hash"], signature, text);
}

export function accountLink(chain, address, text = short(address)) {
  return explorerLink(chainInfo(chain).explorer_account_url, ["address"], address, text);
}

// What an event did to its wallet: direction, the main amount and unit.
export function movement(event) {
  const info = chainInfo(event.chain);
  const native = BigInt(event.native_delta ?? event.sol_delta ?? 0);
  const fee = BigInt(event.native_fee ?? event.fee ?? 0);
  const tokens = (event.token_deltas ?? []).filter((delta) => BigInt(delta.delta) !== 0n);
  const parts = [];
  // A wallet that paid the fee sees it in its native change: show the
  // transfer without it when the fee is all that moved.
  const paidFee = event.fee_payer === event.wallet;
  const nativeMoved = paidFee ? native + fee : native;
  if (nativeMoved !== 0n || tokens.length === 0) {
    parts.push({ amount: nativeMoved, decimals: info.native_decimals, unit: info.native_symbol });
  }
  for (const delta of tokens) {
    parts.push({
      amount: BigInt(delta.delta),
      decimals: delta.decimals,
      unit: delta.symbol ?? short(delta.mint),
      mint: delta.mint,
    });
  }
  const main = parts.find((part) => part.amount !== 0n) ?? parts[0];
  const direction = main.amount > 0n ? "in" : main.amount < 0n ? "out" : "none";
  return { direction, parts };
}
