#!/usr/bin/env bash
# Runs walletwatch's whole test suite, including the tests against a real
# local Solana node and a real local EVM node (anvil). Idempotent: builds the
# node harness only when its sources changed, installs anvil once, and starts
# the services the tests need when absent.
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

build_localnet
install_anvil
log "running the test suite"
cargo test --workspace --locked "$@"
