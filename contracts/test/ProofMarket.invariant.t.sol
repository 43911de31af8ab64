// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test, Vm} from "./utils/Test.sol";
import {ProofMarket} from "../src/ProofMarket.sol";
import {TestVerifier} from "./mocks/TestVerifier.sol";

/// Drives the market with random but well-formed calls from a small set of actors, and keeps
/// ghost accounting of everything that went in and out.
contract Handler {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    ProofMarket public market;
    TestVerifier public verifier;
    uint256 internal constant N_OPS = 3;
    uint32 internal constant TASKS = 8;
    uint256[N_OPS] internal keys = [uint256(0x1001), 0x1002, 0x1003];
    address[] public actors; // operators, then requester, settler, reporter
    address public requester = address(0xBEEF1);
    address public settler = address(0xBEEF2);
    address public reporter = address(0xBEEF3);
    bytes32[] public wfs;

    // ghosts
    mapping(bytes32 => mapping(uint256 => uint256)) public timesPaid; // wf => task => count
    mapping(bytes32 => uint256) public timesSlashed; // attempt key => count
    bytes32[] public slashKeys;
    uint256 public maxTimesPaid;
    uint256 public settled; // successful settlements (progress check)
    uint256 public settledAfterClose; // settlements of a refunded or released escrow (must stay 0)
    mapping(address => uint256) public stakeIn; // deposited as stake
    mapping(address => uint256) public stakeOut; // withdrawn or slashed

    constructor(ProofMarket m, TestVerifier v) {
        market = m;
        verifier = v;
        for (uint256 i = 0; i < N_OPS; ++i) {
            actors.push(vm.addr(keys[i]));
        }
        actors.push(requester);
        actors.push(settler);
        actors.push(reporter);
        wfs.push(keccak256(abi.encode("wf", uint256(0))));
    }

    function wfCount() external view returns (uint256) {
        return wfs.length;
    }

    function _wf(uint256 seed) internal view returns (bytes32) {
        // Mostly the newest escrows, which are the ones still open.
        uint256 n = wfs.length;
        return wfs[n - 1 - (seed % (n < 3 ? n : 3))];
    }

    function actorCount() external view returns (uint256) {
        return actors.length;
    }

    function _op(uint256 seed) internal view returns (address, uint256) {
        uint256 i = seed % N_OPS;
        return (actors[i], keys[i]);
    }

    function register(uint256 seed, uint96 amount) external {
        (address op,) = _op(seed);
        (,,, uint64 registeredAt,,,) = _rep(op);
        if (registeredAt != 0) return;
        uint256 a = 1 ether + uint256(amount) % (10 ether);
        vm.deal(op, op.balance + a);
        vm.prank(op);
        market.register{value: a}(keccak256(abi.encode(op)), ProofMarket.Capacity(8, 32, 1, 24), new bytes(64));
        stakeIn[op] += a;
    }

    function stake(uint256 seed, uint96 amount) external {
        (address op,) = _op(seed);
        if (!_registered(op)) return;
        uint256 a = 1 + uint256(amount) % (5 ether);
        vm.deal(op, op.balance + a);
        vm.prank(op);
        market.stake{value: a}();
        stakeIn[op] += a;
    }

    function unbond(uint256 seed, uint128 amount) external {
        (address op,) = _op(seed);
        ProofMarket.Reputation memory r = market.reputation(op);
        if (r.stake == 0) return;
        vm.prank(op);
        market.requestUnbond(uint128(1 + amount % r.stake));
    }

    function withdraw(uint256 seed) external {
        (address op,) = _op(seed);
        ProofMarket.Reputation memory r = market.reputation(op);
        if (r.unbonding == 0) return;
        (,, uint64 unbondAt) = market.operatorInfo(op);
        if (block.timestamp < unbondAt) vm.warp(unbondAt);
        vm.prank(op);
        market.withdraw();
        stakeOut[op] += r.unbonding;
    }

    function openEscrow(uint96 amount, uint32 duration) external {
        if (wfs.length >= 24) return;
        bytes32 wf = keccak256(abi.encode("wf", wfs.length));
        wfs.push(wf);
        uint256 a = 1 + uint256(amount) % (50 ether);
        vm.deal(requester, requester.balance + a);
        vm.prank(requester);
        market.openEscrow{value: a}(wf, settler, uint64(block.timestamp + 1 + duration % 3 days), TASKS);
    }

    /// Pays tasks, including ones already paid (which must be refused).
    function settle(uint256 seed, uint128 amount, uint8 task, uint8 attempt) external {
        bytes32 wf = _wf(seed);
        (address op,) = _op(seed >> 8);
        if (!_registered(op)) this.register(seed >> 8, uint96(amount));
        ProofMarket.Payout[] memory ps = new ProofMarket.Payout[](1);
        ps[0].operator = op;
        ps[0].amount = uint128(amount % (5 ether));
        ps[0].tasks = new uint40[](1);
        uint256 t = task % TASKS;
        ps[0].tasks[0] = uint40((t << 8) | (1 + attempt % 3));
        bool closed = market.escrow(wf).refunded;
        vm.prank(settler);
        try market.settle(wf, ps) {
            if (closed) settledAfterClose += 1;
            timesPaid[wf][t] += 1;
            settled += 1;
            if (timesPaid[wf][t] > maxTimesPaid) maxTimesPaid = timesPaid[wf][t];
        } catch {}
    }

    function refund(uint256 seed) external {
        bytes32 wf = _wf(seed);
        ProofMarket.Escrow memory e = market.escrow(wf);
        if (e.requester == address(0) || e.refunded) return;
        if (block.timestamp <= e.deadline) vm.warp(uint256(e.deadline) + 1);
        vm.prank(requester);
        market.refund(wf);
    }

    /// A settler closes an escrow early; settling it afterwards must be refused.
    function release(uint256 seed) external {
        bytes32 wf = _wf(seed);
        ProofMarket.Escrow memory e = market.escrow(wf);
        if (e.requester == address(0) || e.refunded) return;
        vm.prank(settler);
        market.release(wf);
    }

    function slashMissed(uint256 seed, uint8 task, uint8 attempt, bool asSettler) external {
        bytes32 wf = _wf(seed);
        (address op, uint256 key) = _op(seed >> 8);
        ProofMarket.Escrow memory e = market.escrow(wf);
        if (e.requester == address(0)) return;
        ProofMarket.Acceptance memory acc =
            ProofMarket.Acceptance(wf, uint32(task % TASKS), 1 + uint32(attempt % 3), uint64(block.timestamp), 1);
        bytes memory sig = _sign(key, market.hashAcceptance(acc));
        vm.warp(block.timestamp + 1);
        uint256 before = _slashable(op);
        vm.prank(asSettler ? settler : reporter);
        try market.slashMissedDeadline(op, acc, sig) {
            _recordSlash(op, wf, acc.task, acc.attempt, before);
        } catch {}
    }

    function slashInvalid(uint256 seed, uint8 task, uint8 attempt, uint256 input) external {
        bytes32 wf = _wf(seed);
        (address op, uint256 key) = _op(seed >> 8);
        if (market.escrow(wf).requester == address(0)) return;
        ProofMarket.ClaimRef memory c = ProofMarket.ClaimRef(wf, uint32(task % TASKS), 1 + uint32(attempt % 3));
        uint256[] memory inputs = new uint256[](1);
        inputs[0] = input;
        bytes memory proof = abi.encode(input); // never the valid proof
        bytes memory sig = _sign(key, market.hashProofClaim(c, proof, inputs));
        uint256 before = _slashable(op);
        vm.prank(reporter);
        try market.slashInvalidProof(op, c, proof, inputs, sig) {
            _recordSlash(op, wf, c.task, c.attempt, before);
        } catch {}
    }

    function declareFailure(uint256 seed, uint8 task, uint8 attempt) external {
        bytes32 wf = _wf(seed);
        (address op,) = _op(seed >> 8);
        ProofMarket.Acceptance memory acc =
            ProofMarket.Acceptance(wf, uint32(task % TASKS), 1 + uint32(attempt % 3), uint64(block.timestamp + 10), 1);
        uint256 before = _slashable(op);
        vm.prank(op);
        try market.declareFailure(acc) {
            _recordSlash(op, wf, acc.task, acc.attempt, before);
        } catch {}
    }

    function claim(uint256 seed) external {
        address a = actors[seed % actors.length];
        if (market.claimable(a) == 0) return;
        vm.prank(a);
        market.claim();
    }

    function warp(uint32 by) external {
        vm.warp(block.timestamp + by % 2 days);
    }

    function slashKeyCount() external view returns (uint256) {
        return slashKeys.length;
    }

    // ---------------------------------------------------------------- helpers

    function _recordSlash(address op, bytes32 wf, uint32 task, uint32 attempt, uint256 before) internal {
        bytes32 k = market.attemptKey(op, wf, task, attempt);
        if (timesSlashed[k] == 0) slashKeys.push(k);
        timesSlashed[k] += 1;
        stakeOut[op] += before - _slashable(op);
    }

    function _slashable(address op) internal view returns (uint256) {
        ProofMarket.Reputation memory r = market.reputation(op);
        return uint256(r.stake) + r.unbonding;
    }

    function _registered(address op) internal view returns (bool) {
        return market.reputation(op).registeredAt != 0;
    }

    function _rep(address op) internal view returns (uint32, uint32, uint32, uint64, uint128, uint128, uint256) {
        ProofMarket.Reputation memory r = market.reputation(op);
        return (r.completed, r.failed, r.slashed, r.registeredAt, r.stake, r.unbonding, r.stakeTime);
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }
}

contract ProofMarketInvariantTest is Test {
    ProofMarket internal market;
    Handler internal handler;

    function setUp() public {
        TestVerifier verifier = new TestVerifier();
        market = new ProofMarket(
            verifier,
            ProofMarket.Params({
                minStake: 1 ether,
                unbondingDelay: 4 days,
                maxEscrowDuration: 3 days + 1,
                missedDeadlinePenalty: 0.7 ether,
                invalidProofPenalty: 2 ether,
                failurePenalty: 0.2 ether,
                requesterShareBps: 5000,
                reporterShareBps: 3000
            })
        );
        handler = new Handler(market, verifier);
        targetContract(address(handler));
    }

    /// The contract holds exactly escrows + stakes + claimable + burned, to the wei.
    function invariant_balanceIsAccounted() public view {
        uint256 sum = market.totalBurned();
        uint256 w = handler.wfCount();
        for (uint256 i = 0; i < w; ++i) {
            sum += market.escrow(handler.wfs(i)).held;
        }
        uint256 n = handler.actorCount();
        for (uint256 i = 0; i < n; ++i) {
            address a = handler.actors(i);
            ProofMarket.Reputation memory r = market.reputation(a);
            sum += uint256(r.stake) + r.unbonding + market.claimable(a);
        }
        vm.assertEq(address(market).balance, sum, "balance != escrows + stakes + claimable + burned");
    }

    /// A refunded or released escrow holds nothing and pays nothing more.
    function invariant_closedEscrowsAreEmpty() public view {
        uint256 w = handler.wfCount();
        for (uint256 i = 0; i < w; ++i) {
            ProofMarket.Escrow memory e = market.escrow(handler.wfs(i));
            if (e.refunded) vm.assertEq(e.held, 0, "a closed escrow still holds wei");
        }
        vm.assertEq(handler.settledAfterClose(), 0, "a closed escrow was settled");
    }

    function invariant_noTaskPaidTwice() public view {
        vm.assertLe(handler.maxTimesPaid(), 1, "a task was paid twice");
    }

    function invariant_noEvidenceSlashesTwice() public view {
        uint256 n = handler.slashKeyCount();
        for (uint256 i = 0; i < n; ++i) {
            vm.assertEq(handler.timesSlashed(handler.slashKeys(i)), 1, "evidence used twice");
        }
    }

    /// Stake never goes negative: what an operator holds is exactly what went in minus what
    /// went out (an underflow would break this equality or revert).
    function invariant_stakeConserved() public view {
        for (uint256 i = 0; i < 3; ++i) {
            address a = handler.actors(i);
            ProofMarket.Reputation memory r = market.reputation(a);
            vm.assertEq(uint256(r.stake) + r.unbonding, handler.stakeIn(a) - handler.stakeOut(a), "stake != in - out");
        }
    }
}
