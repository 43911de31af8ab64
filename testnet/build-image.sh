#!/usr/bin/env bash
# Builds the `proofmesh:dev` image FROM scratch: no base image can be pulled here, so the build
# assembles a root filesystem of the release binaries (proofmesh, proofmesh-prover, anvil, cast),
# exactly the shared libraries `ldd` says they load, a static busybox (the deployer's and the
# healthchecks' shell), the compiled contracts, and warm proving-key caches.
#   SKIP_CARGO_BUILD=1 testnet/build-image.sh   reuse target/release as it is
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
cd "$ROOT"

IMAGE="${IMAGE:-proofmesh:dev}"

"$ROOT/scripts/install-foundry"
if [[ "${SKIP_CARGO_BUILD:-0}" != 1 ]]; then
    step "release build"
    cargo build --release --locked -p proofmesh-node -p proofmesh-prover
fi
for b in proofmesh proofmesh-prover; do
    [[ -x "$TARGET_DIR/release/$b" ]] || die "target/release/$b missing: run without SKIP_CARGO_BUILD"
done
if [[ ! -f contracts/out/ProofMarket.sol/ProofMarket.json ]]; then
    step "forge build (contracts)"
    (cd contracts && forge build)
fi
if [[ ! -x /bin/busybox ]]; then
    step "installing busybox-static (Debian) for the image's shell"
    apt-get install -y -qq busybox-static >/dev/null
fi

CTX="$ROOT/testnet/.build"
ROOTFS="$CTX/rootfs"
rm -rf "$CTX"
mkdir -p "$ROOTFS/bin" "$ROOTFS/tmp" "$ROOTFS/data" "$ROOTFS/etc" "$ROOTFS/contracts"
chmod 1777 "$ROOTFS/tmp"

step "assemble the root filesystem"
bins=("$TARGET_DIR/release/proofmesh" "$TARGET_DIR/release/proofmesh-prover"
      "$(readlink -f "$ROOT/.tools/bin/anvil")" "$(readlink -f "$ROOT/.tools/bin/cast")")
for b in "${bins[@]}"; do
    cp "$b" "$ROOTFS/bin/"
    # Debug info is most of each binary; vfs copies the whole image per container.
    if command -v strip >/dev/null; then strip --strip-debug "$ROOTFS/bin/$(basename "$b")"; fi
    # Copy each shared library to the path the dynamic loader will look for it at.
    ldd "$b" | awk '/=>/ { print $3 } /^[ \t]*\// { print $1 }' | while read -r lib; do
        [[ -f "$lib" ]] || continue
        mkdir -p "$ROOTFS$(dirname "$lib")"
        cp -L -n "$lib" "$ROOTFS$lib"
    done
done
# busybox is static: sh for the deployer, wget for healthchecks, nothing else is needed.
cp /bin/busybox "$ROOTFS/bin/busybox"
for applet in sh cat echo grep ls mkdir sed sleep test tr wget; do ln -s busybox "$ROOTFS/bin/$applet"; done
cp "$ROOT/testnet/deploy-contracts.sh" "$ROOTFS/bin/deploy-contracts"
chmod 755 "$ROOTFS/bin/deploy-contracts"
# Creation bytecode of the contracts the deployer sends (hex, no 0x).
for c in Groth16ProofVerifier ProofMarket; do
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytecode"]["object"].removeprefix("0x"))' \
        "contracts/out/$c.sol/$c.json" > "$ROOTFS/contracts/$c.bin"
done
# cast refuses to build its HTTP client without a CA bundle, even for plain-http anvil.
mkdir -p "$ROOTFS/etc/ssl/certs"
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/"
printf 'root:x:0:0:root:/data:/bin/sh\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\n' > "$ROOTFS/etc/group"

# Proving keys are deterministic and take minutes to derive on a small machine: derive them once
# here (a local run of the demo pipeline) so no operator container repeats the setup.
step "warm the proving-key cache (demo pipeline, 4 leaves)"
mkdir -p "$ROOTFS/prover-cache"
if [[ -d "$HOME/.cache/proofmesh-prover" ]]; then
    cp "$HOME/.cache/proofmesh-prover/"*.pk "$ROOTFS/prover-cache/" 2>/dev/null || true
fi
PROOFMESH_PROVER_CACHE="$ROOTFS/prover-cache" "$TARGET_DIR/release/proofmesh-prover" \
    pipeline --leaves 4 --block 1 --out "$CTX/pipeline" >/dev/null
rm -rf "$CTX/pipeline"
chmod -R a+rX "$ROOTFS/prover-cache"

cp "$ROOT/testnet/Dockerfile" "$CTX/Dockerfile"

step "docker build $IMAGE (FROM scratch)"
docker build -q -t "$IMAGE" "$CTX"
docker image ls "$IMAGE"
