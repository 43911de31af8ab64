#!/bin/sh
# The testnet's one-shot deployer (busybox sh inside the proofmesh image, installed as
# /bin/deploy-contracts): deploys the Groth16 final-proof verifier and the ProofMarket from
# anvil's first dev account. That account's nonces 0 and 1 fix both addresses, which is what lets
# the node configs name the contract before it exists; the deployer fails if they differ (anvil
# was not fresh), rather than leave nodes pointed at the wrong contract.
#   env: RPC_URL (anvil), DEPLOYER_KEY (hex private key), OUT (file to write addresses to)
set -eu
RPC_URL="${RPC_URL:-http://anvil:8545}"
# anvil's well-known dev account 0: public test key, worthless outside a local chain.
DEPLOYER_KEY="${DEPLOYER_KEY:-0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80}"
EXPECT_VERIFIER=0x5FbDB2315678afecb367f032d93F642f64180aa3
EXPECT_MARKET=0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512
# MarketParams::devnet(): 1 ETH min stake, 2-day unbonding, 1-day escrows, penalties 0.5/1/0.1 ETH,
# slash shares 50% requester, 30% reporter.
PARAMS="(1000000000000000000,172800,86400,500000000000000000,1000000000000000000,100000000000000000,5000,3000)"

deploy() { # CODE [SIG ARGS...] -> prints the new contract's address
    code="$1"; shift
    cast send --rpc-url "$RPC_URL" --private-key "$DEPLOYER_KEY" --json --create "$code" "$@" \
        | sed -n 's/.*"contractAddress":"\(0x[0-9a-fA-F]\{40\}\)".*/\1/p'
}

same() { [ "$(echo "$1" | tr 'A-F' 'a-f')" = "$(echo "$2" | tr 'A-F' 'a-f')" ]; }

if [ -n "$(cast code --rpc-url "$RPC_URL" "$EXPECT_MARKET" | sed 's/^0x$//')" ]; then
    echo "deployer: ProofMarket already at $EXPECT_MARKET; nothing to do"
else
    verifier="$(deploy "0x$(cat ${CONTRACTS:-/contracts}/Groth16ProofVerifier.bin)")"
    same "$verifier" "$EXPECT_VERIFIER" || { echo "deployer: verifier at '$verifier', expected $EXPECT_VERIFIER (anvil not fresh?)" >&2; exit 1; }
    market="$(deploy "0x$(cat ${CONTRACTS:-/contracts}/ProofMarket.bin)" \
        "constructor(address,(uint128,uint64,uint64,uint128,uint128,uint128,uint16,uint16))" \
        "$verifier" "$PARAMS")"
    same "$market" "$EXPECT_MARKET" || { echo "deployer: market at '$market', expected $EXPECT_MARKET" >&2; exit 1; }
fi
[ -n "$(cast code --rpc-url "$RPC_URL" "$EXPECT_MARKET" | sed 's/^0x$//')" ] \
    || { echo "deployer: no code at $EXPECT_MARKET after deployment" >&2; exit 1; }
echo "verifier=$EXPECT_VERIFIER market=$EXPECT_MARKET chain_id=$(cast chain-id --rpc-url "$RPC_URL")"
if [ -n "${OUT:-}" ]; then
    printf 'verifier=%s\nmarket=%s\n' "$EXPECT_VERIFIER" "$EXPECT_MARKET" > "$OUT"
fi
