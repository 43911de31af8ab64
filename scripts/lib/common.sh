# Shared helpers for scripts/*. Source it; do not run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Where cargo puts binaries (honours CARGO_TARGET_DIR, e.g. a shared build cache).
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export PATH="$ROOT/.tools/bin:$HOME/.cargo/bin:$PATH"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs what proofmesh needs that a machine with only the Rust toolchain lacks.
# Idempotent: each check is cheap when the tool is already there.
ensure_tools() {
    command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        rustup component add rustfmt clippy
    fi
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        step "installing Node.js and npm (Debian packages) for Foundry and solc"
        apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    fi
    "$ROOT/scripts/install-foundry"
}
