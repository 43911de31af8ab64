// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {ProofMarket} from "../src/ProofMarket.sol";
import {TestVerifier} from "./mocks/TestVerifier.sol";

/// Shared fixture: a market over the test verifier, funded actors, signing helpers.
abstract contract Base is Test {
    ProofMarket internal market;
    TestVerifier internal verifier;

    uint128 internal constant MIN_STAKE = 1 ether;
    uint64 internal constant UNBONDING = 8 days;
    uint64 internal constant MAX_ESCROW = 7 days;
    uint128 internal constant MISSED = 0.5 ether;
    uint128 internal constant INVALID = 1 ether;
    uint128 internal constant FAILURE = 0.1 ether;
    uint16 internal constant REQ_BPS = 5000;
    uint16 internal constant REP_BPS = 3000;

    uint256 internal constant OP_KEY = 0xA11CE;
    uint256 internal constant OP2_KEY = 0xB0B;
    address internal op;
    address internal op2;
    address internal requester = address(0x5EC);
    address internal settler = address(0x5E77);
    address internal reporter = address(0x4E9);

    bytes32 internal constant WF = keccak256("workflow-1");
    bytes32 internal constant NODE_KEY = keccak256("ed25519-node-key");
    bytes internal nodeSig = new bytes(64);

    function setUp() public virtual {
        verifier = new TestVerifier();
        market = new ProofMarket(verifier, params());
        op = vm.addr(OP_KEY);
        op2 = vm.addr(OP2_KEY);
        vm.deal(op, 100 ether);
        vm.deal(op2, 100 ether);
        vm.deal(requester, 1000 ether);
        vm.warp(1_700_000_000);
    }

    function params() internal pure returns (ProofMarket.Params memory) {
        return ProofMarket.Params({
            minStake: MIN_STAKE,
            unbondingDelay: UNBONDING,
            maxEscrowDuration: MAX_ESCROW,
            missedDeadlinePenalty: MISSED,
            invalidProofPenalty: INVALID,
            failurePenalty: FAILURE,
            requesterShareBps: REQ_BPS,
            reporterShareBps: REP_BPS
        });
    }

    function cap() internal pure returns (ProofMarket.Capacity memory) {
        return ProofMarket.Capacity({cpuCores: 16, memoryGb: 128, gpus: 1, vramGbPerGpu: 80});
    }

    function registerOp(address who, uint256 amount) internal {
        vm.prank(who);
        market.register{value: amount}(keccak256(abi.encode(who)), cap(), nodeSig);
    }

    function openEscrow(bytes32 wf, uint256 amount, uint64 deadline, uint32 tasks) internal {
        vm.prank(requester);
        market.openEscrow{value: amount}(wf, settler, deadline, tasks);
    }

    function acceptance(bytes32 wf, uint32 task, uint32 attempt, uint64 deadline)
        internal
        pure
        returns (ProofMarket.Acceptance memory)
    {
        return ProofMarket.Acceptance({workflowId: wf, task: task, attempt: attempt, deadline: deadline, price: 1e15});
    }

    function signDigest(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function signAcceptance(uint256 key, ProofMarket.Acceptance memory acc) internal view returns (bytes memory) {
        return signDigest(key, market.hashAcceptance(acc));
    }

    function signClaim(uint256 key, ProofMarket.ClaimRef memory c, bytes memory proof, uint256[] memory inputs)
        internal
        view
        returns (bytes memory)
    {
        return signDigest(key, market.hashProofClaim(c, proof, inputs));
    }

    function payout(address who, uint128 amount, uint256 firstTask, uint256 n, uint256 attempt)
        internal
        pure
        returns (ProofMarket.Payout memory p)
    {
        p.operator = who;
        p.amount = amount;
        p.tasks = new uint40[](n);
        for (uint256 i = 0; i < n; ++i) {
            p.tasks[i] = uint40(((firstTask + i) << 8) | attempt);
        }
    }

    function one(ProofMarket.Payout memory p) internal pure returns (ProofMarket.Payout[] memory ps) {
        ps = new ProofMarket.Payout[](1);
        ps[0] = p;
    }

    function inputs1(uint256 x) internal pure returns (uint256[] memory a) {
        a = new uint256[](1);
        a[0] = x;
    }
}
