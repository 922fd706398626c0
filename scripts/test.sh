#!/usr/bin/env bash
# Runs walletwatch's whole test suite, including the tests against a real
# local Solana node, a real local EVM node (anvil) and a real PostgreSQL on
# loopback, and redis-server. Idempotent: builds the node harness only when
# its sources changed, installs anvil once, installs and starts PostgreSQL
# when absent, and installs redis-server when missing (the tests start their
# own servers on free ports), and installs Chromium and playwright-core for
# the dashboard's browser test.
#
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cache_dir="${WALLETWATCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/walletwatch}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_dir/main-target}"
mkdir -p "$cache_dir"

log() { printf '==> %s\n' "$*" >&2; }

# --- the local Solana node harness (surfpool-core), cached by source hash ---
build_localnet() {
  local key bin_dir
  key="$( (cat tools/localnet/Cargo.toml tools/localnet/Cargo.lock; find tools/localnet/src -type f -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-16)"
  bin_dir="$cache_dir/localnet-bin/$key"
  if [[ ! -x "$bin_dir/walletwatch-localnet" ]]; then
    log "building walletwatch-localnet ($key); the first build takes ~30 minutes on 2 cores"
    CARGO_TARGET_DIR="$cache_dir/target" cargo build --release --locked \
      --manifest-path tools/localnet/Cargo.toml
    mkdir -p "$bin_dir"
    cp "$cache_dir/target/release/walletwatch-localnet" "$bin_dir/walletwatch-localnet.tmp"
    mv "$bin_dir/walletwatch-localnet.tmp" "$bin_dir/walletwatch-localnet"
  else
    log "walletwatch-localnet $key is cached"
  fi
  export WALLETWATCH_LOCALNET_BIN="$bin_dir/walletwatch-localnet"
}

# --- the local EVM node (anvil, from npm), cached by version ---
ANVIL_VERSION=1.7.1
install_anvil() {
  local dir="$cache_dir/anvil-$ANVIL_VERSION"
  local bin="$dir/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
  if [[ ! -x "$bin" ]]; then
    if ! command -v npm >/dev/null 2>&1; then
      log "error: npm is needed to install anvil (the local EVM node); install Node.js (e.g. apt-get install nodejs npm)"
      exit 1
    fi
    log "installing anvil $ANVIL_VERSION with npm"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent "@foundry-rs/anvil-linux-amd64@$ANVIL_VERSION" >&2
  else
    log "anvil $ANVIL_VERSION is cached"
  fi
  export WALLETWATCH_ANVIL_BIN="$bin"
}

# --- PostgreSQL on loopback, for the PostgreSQL store's tests ---
export WALLETWATCH_TEST_POSTGRES_URL="${WALLETWATCH_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
as_postgres() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
      log "installing PostgreSQL"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    log "starting PostgreSQL"
    local version
    for version in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster "$version" main start >&2 || true
    done
    for _ in $(seq 1 30); do
      pg_isready -q -h 127.0.0.1 -p 5432 && break
      sleep 1
    done
  fi
  if ! psql "$WALLETWATCH_TEST_POSTGRES_URL" -Atqc 'SELECT 1' >/dev/null 2>&1; then
    # A fresh install asks loopback clients for a password: trust them (a
    # CI machine's own server) and create the test database.
    log "opening PostgreSQL to loopback tests (database test, trust on 127.0.0.1)"
    local hba
    hba="$(as_postgres psql -Atqc 'SHOW hba_file')"
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
      as_postgres psql -Atqc 'SELECT pg_reload_conf()' >/dev/null
    fi
    as_postgres psql -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
      || as_postgres createdb test
  fi
  psql "$WALLETWATCH_TEST_POSTGRES_URL" -Atqc 'SELECT 1' >/dev/null \
    || { log "error: PostgreSQL at $WALLETWATCH_TEST_POSTGRES_URL cannot be reached"; exit 1; }
  log "PostgreSQL is up ($WALLETWATCH_TEST_POSTGRES_URL)"
}

# --- redis-server, which tests start on ports of their own ---
ensure_redis_server() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
  fi
  log "redis-server: $(redis-server --version | cut -d' ' -f3)"
}

# --- headless Chromium (Debian) and playwright-core (npm), for the dashboard test ---
PLAYWRIGHT_VERSION=1.64.1
ensure_browser() {
  local chromium="${WALLETWATCH_CHROMIUM:-/usr/bin/chromium}"
  if [[ ! -x "$chromium" ]]; then
    log "installing Chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  fi
  export WALLETWATCH_CHROMIUM="$chromium"
  local dir="$cache_dir/playwright-core-$PLAYWRIGHT_VERSION"
  if [[ ! -f "$dir/node_modules/playwright-core/package.json" ]]; then
    log "installing playwright-core $PLAYWRIGHT_VERSION with npm"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION" >&2
  else
    log "playwright-core $PLAYWRIGHT_VERSION is cached"
  fi
  export WALLETWATCH_PLAYWRIGHT_DIR="$dir"
}

build_localnet
install_anvil
ensure_browser
ensure_postgres
ensure_redis_server
log "running the test suite"
cargo test --workspace --locked "$@"
