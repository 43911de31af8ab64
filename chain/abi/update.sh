#!/usr/bin/env bash
# Rebuilds the contracts and refreshes the artifacts the Rust bindings compile from
# (abi + creation bytecode only). Run after changing contracts/src; the chain crate's
# `artifacts_are_fresh` test fails until you do.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FORGE="${PROOFMESH_FORGE:-$ROOT/.tools/bin/forge}"
[[ -x "$FORGE" ]] || { echo "forge not found at $FORGE: run scripts/install-foundry" >&2; exit 1; }
(cd "$ROOT/contracts" && "$FORGE" build --quiet)
for c in ProofMarket:ProofMarket TestVerifier:TestVerifier Groth16ProofVerifier:Groth16ProofVerifier; do
    file="${c%%:*}"; name="${c##*:}"
    node -e '
const fs = require("fs");
const a = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
const trimmed = { abi: a.abi, bytecode: { object: a.bytecode.object } };
fs.writeFileSync(process.argv[2], JSON.stringify(trimmed, null, 1) + "\n");
' "$ROOT/contracts/out/$file.sol/$name.json" "$HERE/$name.json"
    echo "wrote chain/abi/$name.json"
done
