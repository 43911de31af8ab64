#!/usr/bin/env bash
# Builds the `proofmesh:dev` image FROM scratch: no base image can be pulled here, so the build
# assembles a root filesystem of the release binaries (proofmesh, proofmesh-prover, anvil, cast)
# and exactly the shared libraries `ldd` says they load.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
cd "$ROOT"

ensure_tools
step "release build"
cargo build --release --locked -p proofmesh-node -p proofmesh-prover

CTX="$ROOT/testnet/.build"
ROOTFS="$CTX/rootfs"
rm -rf "$CTX"
mkdir -p "$ROOTFS/bin" "$ROOTFS/tmp" "$ROOTFS/data" "$ROOTFS/etc"
chmod 1777 "$ROOTFS/tmp"

bins=("$ROOT/target/release/proofmesh" "$ROOT/target/release/proofmesh-prover"
      "$(readlink -f "$ROOT/.tools/bin/anvil")" "$(readlink -f "$ROOT/.tools/bin/cast")")
for b in "${bins[@]}"; do
    cp "$b" "$ROOTFS/bin/"
    # Copy each shared library to the path the dynamic loader will look for it at.
    ldd "$b" | awk '/=>/ { print $3 } /^\s*\/lib/ { print $1 }' | while read -r lib; do
        [ -f "$lib" ] || continue
        mkdir -p "$ROOTFS$(dirname "$lib")"
        cp -L -n "$lib" "$ROOTFS$lib"
    done
done
# The prover caches its proving keys under $HOME; give it a writable one.
printf 'root:x:0:0:root:/data:/bin/proofmesh\n' > "$ROOTFS/etc/passwd"
cp "$ROOT/testnet/Dockerfile" "$CTX/Dockerfile"

step "docker build (FROM scratch)"
docker build -q -t proofmesh:dev "$CTX"
docker image ls proofmesh:dev
