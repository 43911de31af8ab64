// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {ProofMarket} from "../src/ProofMarket.sol";
import {IProofVerifier} from "../src/IProofVerifier.sol";

/// Refuses ether, to exercise TransferFailed.
contract Rejecter {
    function claimFrom(ProofMarket m) external {
        m.claim();
    }
}

contract ProofMarketTest is Base {
    // ------------------------------------------------------------ constructor

    function _expectBadParams(ProofMarket.Params memory p, string memory what) internal {
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.InvalidParams.selector, what));
        new ProofMarket(verifier, p);
    }

    function test_constructor_setsParams() public view {
        vm.assertEq(address(market.verifier()), address(verifier), "verifier");
        vm.assertEq(market.minStake(), MIN_STAKE, "minStake");
        vm.assertEq(market.unbondingDelay(), UNBONDING, "unbonding");
        vm.assertEq(market.failurePenalty(), FAILURE, "failure");
    }

    function test_constructor_rejectsBadParams() public {
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.InvalidParams.selector, "verifier is zero"));
        new ProofMarket(IProofVerifier(address(0)), params());
        ProofMarket.Params memory p = params();
        p.minStake = 0;
        _expectBadParams(p, "minStake is zero");
        p = params();
        p.maxEscrowDuration = 0;
        _expectBadParams(p, "maxEscrowDuration is zero");
        p = params();
        p.unbondingDelay = p.maxEscrowDuration;
        _expectBadParams(p, "unbondingDelay <= maxEscrowDuration");
        p = params();
        p.failurePenalty = p.missedDeadlinePenalty;
        _expectBadParams(p, "failurePenalty >= missedDeadlinePenalty");
        p = params();
        p.requesterShareBps = 6000;
        p.reporterShareBps = 4001;
        _expectBadParams(p, "shares exceed 100%");
    }

    // ----------------------------------------------------------- registration

    function test_register_bindsKeyStakeCapacity() public {
        vm.expectEmit(true, true, false, true);
        emit ProofMarket.OperatorRegistered(op, NODE_KEY, 2 ether, cap(), nodeSig);
        vm.prank(op);
        market.register{value: 2 ether}(NODE_KEY, cap(), nodeSig);
        (bytes32 key, ProofMarket.Capacity memory c, uint64 unbondAt) = market.operatorInfo(op);
        vm.assertEq(key, NODE_KEY, "node key");
        vm.assertEq(c.vramGbPerGpu, 80, "vram");
        vm.assertEq(unbondAt, 0, "unbondAt");
        ProofMarket.Reputation memory r = market.reputation(op);
        vm.assertEq(r.stake, 2 ether, "stake");
        vm.assertEq(r.registeredAt, block.timestamp, "registeredAt");
        vm.assertEq(address(market).balance, 2 ether, "balance");
    }

    function test_register_reverts() public {
        registerOp(op, 1 ether);
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.AlreadyRegistered.selector, op));
        market.register{value: 1 ether}(NODE_KEY, cap(), nodeSig);

        vm.startPrank(op2);
        vm.expectRevert(ProofMarket.ZeroNodeKey.selector);
        market.register{value: 1 ether}(bytes32(0), cap(), nodeSig);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.BadNodeKeySig.selector, 63));
        market.register{value: 1 ether}(NODE_KEY, cap(), new bytes(63));
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.StakeTooLow.selector, 1 ether - 1, MIN_STAKE));
        market.register{value: 1 ether - 1}(NODE_KEY, cap(), nodeSig);
        vm.stopPrank();
    }

    function test_updateCapacity() public {
        registerOp(op, 1 ether);
        ProofMarket.Capacity memory c = ProofMarket.Capacity({cpuCores: 2, memoryGb: 4, gpus: 0, vramGbPerGpu: 0});
        vm.expectEmit(true, false, false, true);
        emit ProofMarket.CapacityUpdated(op, c);
        vm.prank(op);
        market.updateCapacity(c);
        (, ProofMarket.Capacity memory got,) = market.operatorInfo(op);
        vm.assertEq(got.cpuCores, 2, "cpu");
        vm.assertEq(got.gpus, 0, "gpus");
        vm.prank(op2);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotRegistered.selector, op2));
        market.updateCapacity(c);
    }

    // ------------------------------------------------------------------ stake

    function test_stake_addsAndAccruesStakeTime() public {
        registerOp(op, 1 ether);
        vm.warp(block.timestamp + 100);
        vm.expectEmit(true, false, false, true);
        emit ProofMarket.Staked(op, 3 ether, 4 ether);
        vm.prank(op);
        market.stake{value: 3 ether}();
        vm.warp(block.timestamp + 10);
        ProofMarket.Reputation memory r = market.reputation(op);
        vm.assertEq(r.stake, 4 ether, "stake");
        vm.assertEq(r.stakeTime, 1 ether * 100 + 4 ether * 10, "stakeTime");
    }

    function test_stake_reverts() public {
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotRegistered.selector, op));
        market.stake{value: 1}();
        registerOp(op, 1 ether);
        vm.prank(op);
        vm.expectRevert(ProofMarket.ZeroAmount.selector);
        market.stake();
    }

    function test_unbond_withdraw_afterDelay() public {
        registerOp(op, 3 ether);
        uint256 before = op.balance;
        vm.prank(op);
        vm.expectEmit(true, false, false, true);
        emit ProofMarket.UnbondRequested(op, 2 ether, 2 ether, uint64(block.timestamp) + UNBONDING);
        market.requestUnbond(2 ether);
        ProofMarket.Reputation memory r = market.reputation(op);
        vm.assertEq(r.stake, 1 ether, "stake after unbond");
        vm.assertEq(r.unbonding, 2 ether, "unbonding");

        vm.warp(block.timestamp + UNBONDING - 1);
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.StillUnbonding.selector, uint64(block.timestamp + 1)));
        market.withdraw();

        vm.warp(block.timestamp + 1);
        vm.expectEmit(true, false, false, true);
        emit ProofMarket.Withdrawn(op, 2 ether);
        vm.prank(op);
        market.withdraw();
        vm.assertEq(op.balance, before + 2 ether, "op balance");
        vm.assertEq(address(market).balance, 1 ether, "market balance");
        vm.prank(op);
        vm.expectRevert(ProofMarket.NothingUnbonding.selector);
        market.withdraw();
    }

    function test_unbond_reverts() public {
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotRegistered.selector, op));
        market.requestUnbond(1);
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotRegistered.selector, op));
        market.withdraw();
        registerOp(op, 1 ether);
        vm.startPrank(op);
        vm.expectRevert(ProofMarket.ZeroAmount.selector);
        market.requestUnbond(0);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.InsufficientStake.selector, 1 ether + 1, 1 ether));
        market.requestUnbond(1 ether + 1);
        vm.stopPrank();
    }

    function testFuzz_unbond_amounts(uint96 stakeAmt, uint96 unbondAmt) public {
        uint256 s = bound(stakeAmt, MIN_STAKE, 50 ether);
        uint256 u = bound(unbondAmt, 1, s);
        registerOp(op, s);
        vm.prank(op);
        market.requestUnbond(uint128(u));
        ProofMarket.Reputation memory r = market.reputation(op);
        vm.assertEq(r.stake + r.unbonding, s, "conserved");
        vm.assertEq(r.unbonding, u, "unbonding");
        vm.warp(block.timestamp + UNBONDING);
        uint256 before = op.balance;
        vm.prank(op);
        market.withdraw();
        vm.assertEq(op.balance - before, u, "withdrawn");
        vm.assertEq(address(market).balance, s - u, "left");
    }

    // ---------------------------------------------------------------- escrows

    function test_openEscrow_records() public {
        uint64 deadline = uint64(block.timestamp + 1 days);
        vm.expectEmit(true, true, true, true);
        emit ProofMarket.EscrowOpened(WF, requester, settler, 5 ether, deadline, 512);
        openEscrow(WF, 5 ether, deadline, 512);
        ProofMarket.Escrow memory e = market.escrow(WF);
        vm.assertEq(e.requester, requester, "requester");
        vm.assertEq(e.settler, settler, "settler");
        vm.assertEq(e.held, 5 ether, "held");
        vm.assertEq(e.deadline, deadline, "deadline");
        vm.assertEq(e.taskCount, 512, "tasks");
    }

    function test_openEscrow_reverts() public {
        uint64 deadline = uint64(block.timestamp + 1 days);
        openEscrow(WF, 1 ether, deadline, 4);
        vm.startPrank(requester);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.EscrowExists.selector, WF));
        market.openEscrow{value: 1 ether}(WF, settler, deadline, 4);
        bytes32 wf2 = keccak256("wf2");
        vm.expectRevert(ProofMarket.ZeroAmount.selector);
        market.openEscrow(wf2, settler, deadline, 4);
        vm.expectRevert(ProofMarket.ZeroSettler.selector);
        market.openEscrow{value: 1}(wf2, address(0), deadline, 4);
        vm.expectRevert(ProofMarket.ZeroTasks.selector);
        market.openEscrow{value: 1}(wf2, settler, deadline, 0);
        uint64 latest = uint64(block.timestamp) + MAX_ESCROW;
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.BadDeadline.selector, uint64(block.timestamp), latest));
        market.openEscrow{value: 1}(wf2, settler, uint64(block.timestamp), 4);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.BadDeadline.selector, latest + 1, latest));
        market.openEscrow{value: 1}(wf2, settler, latest + 1, 4);
        vm.stopPrank();
    }

    function testFuzz_openEscrow_deadlines(uint64 offset, uint96 amount) public {
        uint256 a = bound(amount, 1, 500 ether);
        bool valid = offset > 0 && offset <= MAX_ESCROW;
        uint64 deadline = uint64(block.timestamp) + uint64(bound(offset, 0, 2 * MAX_ESCROW));
        valid = deadline > block.timestamp && deadline <= block.timestamp + MAX_ESCROW;
        vm.prank(requester);
        if (!valid) {
            vm.expectRevert(
                abi.encodeWithSelector(ProofMarket.BadDeadline.selector, deadline, uint64(block.timestamp) + MAX_ESCROW)
            );
        }
        market.openEscrow{value: a}(WF, settler, deadline, 1);
        vm.assertEq(address(market).balance, valid ? a : 0, "held");
    }

    function test_refund_afterDeadline() public {
        uint64 deadline = uint64(block.timestamp + 1 days);
        openEscrow(WF, 5 ether, deadline, 4);
        registerOp(op, 1 ether);
        vm.prank(settler);
        market.settle(WF, one(payout(op, 1.5 ether, 0, 2, 1)));
        uint256 before = requester.balance;
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.EscrowNotExpired.selector, deadline));
        market.refund(WF);
        vm.warp(deadline + 1);
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotRequester.selector, settler));
        market.refund(WF);
        vm.expectEmit(true, true, false, true);
        emit ProofMarket.EscrowRefunded(WF, requester, 3.5 ether);
        vm.prank(requester);
        market.refund(WF);
        vm.assertEq(requester.balance - before, 3.5 ether, "refund to the wei");
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.AlreadyRefunded.selector, WF));
        market.refund(WF);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.UnknownEscrow.selector, bytes32(0)));
        market.refund(bytes32(0));
    }

    function test_release_creditsTheRestToTheRequester_andClosesTheEscrow() public {
        uint64 deadline = uint64(block.timestamp + 1 days);
        openEscrow(WF, 5 ether, deadline, 4);
        registerOp(op, 1 ether);
        vm.prank(settler);
        market.settle(WF, one(payout(op, 1.5 ether, 0, 2, 1)));
        // Only a settler, and only an escrow that exists.
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotSettler.selector, requester));
        market.release(WF);
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.UnknownEscrow.selector, bytes32(uint256(1))));
        market.release(bytes32(uint256(1)));
        // Before the deadline, by a backup settler too; the rest goes to the requester's claimable.
        address backup = address(0xBAC);
        address[] memory s = new address[](1);
        s[0] = backup;
        vm.prank(requester);
        market.addSettlers(WF, s);
        uint256 balanceBefore = address(market).balance;
        vm.expectEmit(true, true, true, true);
        emit ProofMarket.EscrowReleased(WF, backup, requester, 3.5 ether);
        vm.prank(backup);
        market.release(WF);
        ProofMarket.Escrow memory e = market.escrow(WF);
        vm.assertEq(e.held, 0, "nothing held");
        vm.assertEq(e.paid, 1.5 ether, "what was paid stays paid");
        vm.assertTrue(e.refunded, "closed");
        vm.assertEq(market.claimable(requester), 3.5 ether, "the rest, to the wei");
        vm.assertEq(market.claimable(op), 1.5 ether, "the operator keeps its pay");
        vm.assertEq(address(market).balance, balanceBefore, "credited, not sent");
        // Closed: no more settling, releasing or refunding.
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.EscrowClosed.selector, WF));
        market.settle(WF, one(payout(op, 1 ether, 2, 1, 1)));
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.AlreadyRefunded.selector, WF));
        market.release(WF);
        vm.warp(deadline + 1);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.AlreadyRefunded.selector, WF));
        market.refund(WF);
        // The requester takes it out with claim.
        uint256 before = requester.balance;
        vm.prank(requester);
        market.claim();
        vm.assertEq(requester.balance - before, 3.5 ether, "claimed to the wei");
    }

    /// An attempt the settler called back (superseded, or its workflow failed or was cancelled)
    /// is unpaid and past its deadline, but after a release nobody else may slash it.
    function test_release_leavesMissedDeadlineReportsToSettlers() public {
        registerOp(op, 1 ether);
        uint64 escrowDeadline = uint64(block.timestamp + 2 days);
        openEscrow(WF, 5 ether, escrowDeadline, 4);
        ProofMarket.Acceptance memory acc = acceptance(WF, 1, 1, uint64(block.timestamp + 1 hours));
        bytes memory sig = signAcceptance(OP_KEY, acc);
        vm.prank(settler);
        market.release(WF);
        vm.warp(escrowDeadline + 1);
        vm.prank(reporter);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.OnlySettlerAfterRelease.selector, WF));
        market.slashMissedDeadline(op, acc, sig);
        // The settler still may: it knows which attempts were really missed.
        vm.prank(settler);
        market.slashMissedDeadline(op, acc, sig);
        vm.assertEq(market.reputation(op).slashed, 1, "slashed by the settler");
    }

    function test_release_afterRefund_reverts() public {
        uint64 deadline = uint64(block.timestamp + 1 days);
        openEscrow(WF, 2 ether, deadline, 4);
        vm.warp(deadline + 1);
        vm.prank(requester);
        market.refund(WF);
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.AlreadyRefunded.selector, WF));
        market.release(WF);
    }

    // ------------------------------------------------------------- settlement

    function test_settle_paysAndRecords() public {
        registerOp(op, 1 ether);
        registerOp(op2, 1 ether);
        openEscrow(WF, 10 ether, uint64(block.timestamp + 1 days), 8);
        ProofMarket.Payout[] memory ps = new ProofMarket.Payout[](2);
        ps[0] = payout(op, 3 ether, 0, 3, 1);
        ps[1] = payout(op2, 2 ether, 3, 2, 2);
        vm.expectEmit(true, false, false, true);
        emit ProofMarket.BatchSettled(WF, 2, 5, 5 ether, 5 ether);
        vm.prank(settler);
        market.settle(WF, ps);
        vm.assertEq(market.claimable(op), 3 ether, "op claimable");
        vm.assertEq(market.claimable(op2), 2 ether, "op2 claimable");
        vm.assertEq(market.reputation(op).completed, 3, "op completed");
        vm.assertEq(market.reputation(op2).completed, 2, "op2 completed");
        vm.assertEq(market.paidAttempt(WF, 0), 1, "task 0 attempt");
        vm.assertEq(market.paidAttempt(WF, 4), 2, "task 4 attempt");
        vm.assertEq(market.paidAttempt(WF, 5), 0, "task 5 unpaid");
        ProofMarket.Escrow memory e = market.escrow(WF);
        vm.assertEq(e.held, 5 ether, "held");
        vm.assertEq(e.paid, 5 ether, "paid");

        // A second batch pays the rest; the claim moves the money out.
        vm.prank(settler);
        market.settle(WF, one(payout(op, 1 ether, 5, 3, 1)));
        vm.assertEq(market.reputation(op).completed, 6, "op completed after 2nd batch");
        uint256 before = op.balance;
        vm.prank(op);
        market.claim();
        vm.assertEq(op.balance - before, 4 ether, "claimed");
        vm.assertEq(market.claimable(op), 0, "claimable cleared");
    }

    function test_addSettlers_backupSettlesAndReports_onceOnly() public {
        registerOp(op, 1 ether);
        uint64 deadline = uint64(block.timestamp + 1 days);
        openEscrow(WF, 1 ether, deadline, 4);
        address backup = address(0xBAC);
        address[] memory s = new address[](1);
        s[0] = backup;
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotRequester.selector, settler));
        market.addSettlers(WF, s);
        vm.prank(backup);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotSettler.selector, backup));
        market.settle(WF, one(payout(op, 1, 0, 1, 1)));
        vm.prank(requester);
        market.addSettlers(WF, s);
        vm.assertTrue(market.isSettler(WF, backup), "backup is a settler");
        vm.assertTrue(market.isSettler(WF, settler), "settler still is");
        vm.prank(settler);
        market.settle(WF, one(payout(op, 0.25 ether, 0, 1, 1)));
        // The backup takes over: the task the settler paid cannot be paid again.
        vm.startPrank(backup);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.TaskAlreadyPaid.selector, 0));
        market.settle(WF, one(payout(op, 0.25 ether, 0, 1, 2)));
        market.settle(WF, one(payout(op, 0.25 ether, 1, 1, 1)));
        vm.stopPrank();
        vm.assertEq(market.claimable(op), 0.5 ether, "paid once per task");
        // A backup settler may report a missed deadline before the escrow deadline.
        ProofMarket.Acceptance memory acc = acceptance(WF, 2, 1, uint64(block.timestamp + 10));
        bytes memory sig = signAcceptance(OP_KEY, acc);
        vm.warp(block.timestamp + 11);
        vm.prank(backup);
        market.slashMissedDeadline(op, acc, sig);
        vm.assertEq(market.reputation(op).slashed, 1, "slashed by the backup");
        address[] memory zero = new address[](1);
        vm.prank(requester);
        vm.expectRevert(ProofMarket.ZeroSettler.selector);
        market.addSettlers(WF, zero);
    }

    function test_settle_reverts() public {
        registerOp(op, 1 ether);
        uint64 deadline = uint64(block.timestamp + 1 days);
        openEscrow(WF, 1 ether, deadline, 4);
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.UnknownEscrow.selector, bytes32(uint256(1))));
        market.settle(bytes32(uint256(1)), one(payout(op, 1, 0, 1, 1)));
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotSettler.selector, requester));
        market.settle(WF, one(payout(op, 1, 0, 1, 1)));
        vm.startPrank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotRegistered.selector, op2));
        market.settle(WF, one(payout(op2, 1, 0, 1, 1)));
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.TaskOutOfRange.selector, 4, 4));
        market.settle(WF, one(payout(op, 1, 4, 1, 1)));
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.BadAttempt.selector, 0));
        market.settle(WF, one(payout(op, 1, 0, 1, 0)));
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.BadAttempt.selector, 255));
        market.settle(WF, one(payout(op, 1, 0, 1, 255)));
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.ExceedsEscrow.selector, 1 ether + 1, 1 ether));
        market.settle(WF, one(payout(op, 1 ether + 1, 0, 1, 1)));
        // Twice in one batch, then across batches, on any attempt.
        ProofMarket.Payout memory dup = payout(op, 1, 0, 2, 1);
        dup.tasks[1] = dup.tasks[0];
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.TaskAlreadyPaid.selector, 0));
        market.settle(WF, one(dup));
        market.settle(WF, one(payout(op, 1, 0, 1, 1)));
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.TaskAlreadyPaid.selector, 0));
        market.settle(WF, one(payout(op, 1, 0, 1, 2)));
        vm.warp(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.EscrowExpired.selector, deadline));
        market.settle(WF, one(payout(op, 1, 1, 1, 1)));
        vm.stopPrank();
    }

    function testFuzz_settle_amounts(uint128 escrowAmt, uint128 a1, uint128 a2) public {
        uint256 held = bound(escrowAmt, 1, 1000 ether);
        uint128 x = uint128(bound(a1, 0, held));
        uint128 y = uint128(bound(a2, 0, 2 * held));
        registerOp(op, 1 ether);
        registerOp(op2, 1 ether);
        openEscrow(WF, held, uint64(block.timestamp + 1 hours), 64);
        ProofMarket.Payout[] memory ps = new ProofMarket.Payout[](2);
        ps[0] = payout(op, x, 0, 10, 1);
        ps[1] = payout(op2, y, 10, 10, 3);
        vm.prank(settler);
        if (uint256(x) + y > held) {
            vm.expectRevert(abi.encodeWithSelector(ProofMarket.ExceedsEscrow.selector, uint256(x) + y, held));
            market.settle(WF, ps);
            vm.assertEq(market.claimable(op), 0, "nothing credited on revert");
        } else {
            market.settle(WF, ps);
            vm.assertEq(market.claimable(op) + market.claimable(op2), uint256(x) + y, "credited");
            vm.assertEq(market.escrow(WF).held, held - x - y, "held");
        }
        vm.assertEq(address(market).balance, held + 2 ether, "balance unchanged by settlement");
    }

    // ------------------------------------------------------------ final proof

    function test_submitFinalProof() public {
        openEscrow(WF, 1 ether, uint64(block.timestamp + 1 days), 1);
        uint256[] memory inp = inputs1(42);
        bytes memory good = verifier.validProof(inp);
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotSettler.selector, op));
        market.submitFinalProof(WF, good, inp);
        vm.prank(settler);
        vm.expectRevert(ProofMarket.InvalidProof.selector);
        market.submitFinalProof(WF, abi.encode(uint256(1)), inp);
        vm.expectEmit(true, false, false, true);
        emit ProofMarket.FinalProofAccepted(WF, keccak256(good));
        vm.prank(requester);
        market.submitFinalProof(WF, good, inp);
        vm.assertTrue(market.escrow(WF).proofAccepted, "accepted");
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.UnknownEscrow.selector, bytes32(0)));
        market.submitFinalProof(bytes32(0), good, inp);
    }

    // --------------------------------------------------- slash: missed deadline

    function _missedSetup() internal returns (ProofMarket.Acceptance memory acc, bytes memory sig) {
        registerOp(op, 2 ether);
        openEscrow(WF, 1 ether, uint64(block.timestamp + 1 days), 4);
        acc = acceptance(WF, 2, 1, uint64(block.timestamp + 1 hours));
        sig = signAcceptance(OP_KEY, acc);
    }

    function test_slashMissed_bySettler_toTheWei() public {
        (ProofMarket.Acceptance memory acc, bytes memory sig) = _missedSetup();
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.DeadlineNotPassed.selector, acc.deadline));
        market.slashMissedDeadline(op, acc, sig);
        vm.warp(acc.deadline + 1);
        uint256 toReq = uint256(MISSED) * REQ_BPS / 10_000;
        uint256 toRep = uint256(MISSED) * REP_BPS / 10_000;
        vm.expectEmit(true, true, true, true);
        emit ProofMarket.Slashed(
            op, WF, settler, ProofMarket.SlashKind.MissedDeadline, 2, 1, MISSED, toReq, toRep, MISSED - toReq - toRep
        );
        vm.prank(settler);
        market.slashMissedDeadline(op, acc, sig);
        ProofMarket.Reputation memory r = market.reputation(op);
        vm.assertEq(r.stake, 2 ether - MISSED, "stake");
        vm.assertEq(r.slashed, 1, "slashed");
        vm.assertEq(r.failed, 1, "failed");
        vm.assertEq(market.claimable(requester), toReq, "requester share");
        vm.assertEq(market.claimable(settler), toRep, "reporter share");
        vm.assertEq(market.totalBurned(), MISSED - toReq - toRep, "burned");
        vm.assertEq(market.paidAttempt(WF, 2), 255, "closed");
        vm.assertTrue(market.attemptClosed(market.attemptKey(op, WF, 2, 1)), "evidence used");
        // Same evidence twice: never.
        bytes32 key = market.attemptKey(op, WF, 2, 1);
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.EvidenceUsed.selector, key));
        market.slashMissedDeadline(op, acc, sig);
        // The closed attempt cannot be paid; another attempt of the same task can.
        registerOp(op2, 1 ether);
        vm.startPrank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.TaskAlreadyPaid.selector, 2));
        market.settle(WF, one(payout(op, 1, 2, 1, 1)));
        market.settle(WF, one(payout(op2, 1, 2, 1, 2)));
        vm.stopPrank();
        vm.assertEq(market.paidAttempt(WF, 2), 2, "paid on attempt 2");
    }

    function test_slashMissed_reporterOnlyAfterEscrowDeadline() public {
        (ProofMarket.Acceptance memory acc, bytes memory sig) = _missedSetup();
        vm.warp(acc.deadline + 1);
        uint64 escrowDeadline = market.escrow(WF).deadline;
        vm.prank(reporter);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.OnlySettlerBeforeEscrowDeadline.selector, escrowDeadline));
        market.slashMissedDeadline(op, acc, sig);
        vm.warp(escrowDeadline + 1);
        vm.prank(reporter);
        market.slashMissedDeadline(op, acc, sig);
        vm.assertEq(market.claimable(reporter), uint256(MISSED) * REP_BPS / 10_000, "reporter share");
    }

    function test_slashMissed_reverts() public {
        (ProofMarket.Acceptance memory acc, bytes memory sig) = _missedSetup();
        vm.warp(acc.deadline + 1);
        vm.startPrank(settler);
        // Wrong signer, malformed signature, high-s signature.
        bytes memory s1 = signAcceptance(OP2_KEY, acc);
        vm.expectRevert(ProofMarket.BadSignature.selector);
        market.slashMissedDeadline(op, acc, s1);
        vm.expectRevert(ProofMarket.BadSignature.selector);
        market.slashMissedDeadline(op, acc, new bytes(64));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(OP_KEY, market.hashAcceptance(acc));
        bytes32 highS = bytes32(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 - uint256(s));
        vm.expectRevert(ProofMarket.BadSignature.selector);
        market.slashMissedDeadline(op, acc, abi.encodePacked(r, highS, v == 27 ? uint8(28) : uint8(27)));
        // Tampered evidence: a different price than the one signed.
        ProofMarket.Acceptance memory tampered = acceptance(WF, 2, 1, acc.deadline);
        tampered.price = acc.price + 1;
        vm.expectRevert(ProofMarket.BadSignature.selector);
        market.slashMissedDeadline(op, tampered, sig);
        // Out-of-range task / attempt.
        ProofMarket.Acceptance memory bad = acceptance(WF, 4, 1, acc.deadline);
        bytes memory s2 = signAcceptance(OP_KEY, bad);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.TaskOutOfRange.selector, 4, 4));
        market.slashMissedDeadline(op, bad, s2);
        bad = acceptance(WF, 0, 255, acc.deadline);
        bytes memory s3 = signAcceptance(OP_KEY, bad);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.BadAttempt.selector, 255));
        market.slashMissedDeadline(op, bad, s3);
        // Unknown escrow.
        bad = acceptance(bytes32(uint256(7)), 0, 1, acc.deadline);
        bytes memory s4 = signAcceptance(OP_KEY, bad);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.UnknownEscrow.selector, bytes32(uint256(7))));
        market.slashMissedDeadline(op, bad, s4);
        // Unregistered signer.
        bad = acceptance(WF, 0, 1, acc.deadline);
        bytes memory s5 = signAcceptance(OP2_KEY, bad);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotRegistered.selector, op2));
        market.slashMissedDeadline(op2, bad, s5);
        // Fulfilled: the attempt was paid.
        market.settle(WF, one(payout(op, 1, 2, 1, 1)));
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.TaskFulfilled.selector, 2, 1));
        market.slashMissedDeadline(op, acc, sig);
        vm.stopPrank();
    }

    function test_slash_takesUnbondingThenCaps() public {
        (ProofMarket.Acceptance memory acc, bytes memory sig) = _missedSetup();
        vm.prank(op);
        market.requestUnbond(1.8 ether); // 0.2 bonded, 1.8 unbonding
        vm.warp(acc.deadline + 1);
        vm.prank(settler);
        market.slashMissedDeadline(op, acc, sig);
        ProofMarket.Reputation memory r = market.reputation(op);
        vm.assertEq(r.stake, 0, "bonded first");
        vm.assertEq(r.unbonding, 1.5 ether, "then unbonding");
        // Slashes larger than what is left take everything and no more.
        uint256[] memory inp = inputs1(1);
        bytes memory badProof = abi.encode(uint256(3));
        for (uint32 task = 0; task < 2; ++task) {
            ProofMarket.ClaimRef memory c = ProofMarket.ClaimRef(WF, task, 1);
            bytes memory csig = signClaim(OP_KEY, c, badProof, inp);
            vm.prank(reporter);
            market.slashInvalidProof(op, c, badProof, inp, csig);
        }
        r = market.reputation(op);
        vm.assertEq(r.unbonding, 0, "all taken");
        vm.assertEq(r.slashed, 3, "three slashes");
        // 0.5 + 1.0 + 0.5 (capped) = 2 ether slashed in total, nothing created or lost.
        uint256 total =
            market.claimable(requester) + market.claimable(reporter) + market.claimable(settler) + market.totalBurned();
        vm.assertEq(total, 2 ether, "slashed total");
        vm.assertEq(address(market).balance, 2 ether + 1 ether, "balance: escrow + slashed credits");
    }

    // ----------------------------------------------------- slash: invalid proof

    function _claimSetup()
        internal
        returns (ProofMarket.ClaimRef memory c, bytes memory proof, uint256[] memory inp, bytes memory sig)
    {
        registerOp(op, 2 ether);
        openEscrow(WF, 1 ether, uint64(block.timestamp + 1 days), 4);
        c = ProofMarket.ClaimRef(WF, 3, 1);
        inp = inputs1(99);
        proof = abi.encode(uint256(12345)); // not the valid proof for inp
        sig = signClaim(OP_KEY, c, proof, inp);
    }

    function test_slashInvalidProof_anyone_toTheWei() public {
        (ProofMarket.ClaimRef memory c, bytes memory proof, uint256[] memory inp, bytes memory sig) = _claimSetup();
        uint256 toReq = uint256(INVALID) * REQ_BPS / 10_000;
        uint256 toRep = uint256(INVALID) * REP_BPS / 10_000;
        vm.prank(reporter);
        market.slashInvalidProof(op, c, proof, inp, sig);
        vm.assertEq(market.reputation(op).stake, 1 ether, "stake");
        vm.assertEq(market.reputation(op).slashed, 1, "slashed");
        vm.assertEq(market.claimable(requester), toReq, "requester");
        vm.assertEq(market.claimable(reporter), toRep, "reporter");
        bytes32 key = market.attemptKey(op, WF, 3, 1);
        vm.prank(reporter);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.EvidenceUsed.selector, key));
        market.slashInvalidProof(op, c, proof, inp, sig);
        // The same attempt cannot also be slashed for a missed deadline.
        ProofMarket.Acceptance memory acc = acceptance(WF, 3, 1, uint64(block.timestamp + 1));
        bytes memory asig = signAcceptance(OP_KEY, acc);
        vm.warp(block.timestamp + 2);
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.EvidenceUsed.selector, key));
        market.slashMissedDeadline(op, acc, asig);
    }

    function test_slashInvalidProof_reverts() public {
        (ProofMarket.ClaimRef memory c, bytes memory proof, uint256[] memory inp, bytes memory sig) = _claimSetup();
        vm.startPrank(reporter);
        // A valid proof is no evidence.
        bytes memory good = verifier.validProof(inp);
        bytes memory s6 = signClaim(OP_KEY, c, good, inp);
        vm.expectRevert(ProofMarket.ProofIsValid.selector);
        market.slashInvalidProof(op, c, good, inp, s6);
        // Signature must cover exactly this proof and these inputs.
        vm.expectRevert(ProofMarket.BadSignature.selector);
        market.slashInvalidProof(op, c, proof, inputs1(100), sig);
        vm.expectRevert(ProofMarket.BadSignature.selector);
        market.slashInvalidProof(op, c, abi.encode(uint256(1)), inp, sig);
        bytes memory s7 = signClaim(OP2_KEY, c, proof, inp);
        vm.expectRevert(ProofMarket.BadSignature.selector);
        market.slashInvalidProof(op, c, proof, inp, s7);
        // A verifier starved of gas does not count as a rejection.
        bytes memory burn = new bytes(1);
        bytes memory bsig = signClaim(OP_KEY, c, burn, inp);
        vm.expectRevert(ProofMarket.VerifierOutOfGas.selector);
        market.slashInvalidProof{gas: 300_000}(op, c, burn, inp, bsig);
        // Unknown escrow, bad ids, unregistered operator.
        ProofMarket.ClaimRef memory bad = ProofMarket.ClaimRef(bytes32(uint256(9)), 0, 1);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.UnknownEscrow.selector, bytes32(uint256(9))));
        market.slashInvalidProof(op, bad, proof, inp, sig);
        bad = ProofMarket.ClaimRef(WF, 0, 0);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.BadAttempt.selector, 0));
        market.slashInvalidProof(op, bad, proof, inp, sig);
        bad = ProofMarket.ClaimRef(WF, 0, 1);
        bytes memory s8 = signClaim(OP2_KEY, bad, proof, inp);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotRegistered.selector, op2));
        market.slashInvalidProof(op2, bad, proof, inp, s8);
        vm.stopPrank();
    }

    function test_slashInvalidProof_malformedProofCounts() public {
        (ProofMarket.ClaimRef memory c,, uint256[] memory inp,) = _claimSetup();
        bytes memory empty = "";
        bytes memory sig = signClaim(OP_KEY, c, empty, inp);
        vm.prank(reporter);
        market.slashInvalidProof(op, c, empty, inp, sig);
        vm.assertEq(market.reputation(op).slashed, 1, "a proof the verifier rejects by reverting is invalid");
    }

    // --------------------------------------------------------------- fail fast

    function test_declareFailure_costsLessAndClosesAttempt() public {
        (ProofMarket.Acceptance memory acc, bytes memory sig) = _missedSetup();
        vm.expectEmit(true, true, false, true);
        emit ProofMarket.FailureDeclared(op, WF, 2, 1, FAILURE);
        vm.prank(op);
        market.declareFailure(acc);
        ProofMarket.Reputation memory r = market.reputation(op);
        vm.assertEq(r.stake, 2 ether - FAILURE, "stake");
        vm.assertEq(r.failed, 1, "failed");
        vm.assertEq(r.slashed, 0, "not slashed");
        uint256 toReq = uint256(FAILURE) * REQ_BPS / 10_000;
        vm.assertEq(market.claimable(requester), toReq, "requester share");
        vm.assertEq(market.totalBurned(), FAILURE - toReq, "rest burned");
        vm.assertLt(FAILURE, MISSED, "fail fast loses less");
        // The declared attempt can no longer be slashed.
        vm.warp(acc.deadline + 1);
        bytes32 key = market.attemptKey(op, WF, 2, 1);
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.EvidenceUsed.selector, key));
        market.slashMissedDeadline(op, acc, sig);
    }

    function test_declareFailure_reverts() public {
        (ProofMarket.Acceptance memory acc,) = _missedSetup();
        vm.prank(op2);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.NotRegistered.selector, op2));
        market.declareFailure(acc);
        ProofMarket.Acceptance memory bad = acceptance(bytes32(uint256(5)), 0, 1, acc.deadline);
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.UnknownEscrow.selector, bytes32(uint256(5))));
        market.declareFailure(bad);
        bad = acceptance(WF, 9, 1, acc.deadline);
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.TaskOutOfRange.selector, 9, 4));
        market.declareFailure(bad);
        vm.prank(settler);
        market.settle(WF, one(payout(op, 1, 2, 1, 1)));
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.TaskFulfilled.selector, 2, 1));
        market.declareFailure(acc);
        bad = acceptance(WF, 1, 1, acc.deadline);
        vm.prank(op);
        market.declareFailure(bad);
        bytes32 key = market.attemptKey(op, WF, 1, 1);
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.EvidenceUsed.selector, key));
        market.declareFailure(bad);
        vm.warp(acc.deadline + 1);
        bad = acceptance(WF, 0, 1, acc.deadline);
        vm.prank(op);
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.DeadlinePassed.selector, acc.deadline));
        market.declareFailure(bad);
    }

    function testFuzz_failFastAlwaysCheaper(uint96 stakeAmt) public {
        uint256 s = bound(stakeAmt, MIN_STAKE, 10 ether);
        registerOp(op, s);
        registerOp(op2, s);
        openEscrow(WF, 1 ether, uint64(block.timestamp + 1 days), 2);
        ProofMarket.Acceptance memory a1 = acceptance(WF, 0, 1, uint64(block.timestamp + 10));
        ProofMarket.Acceptance memory a2 = acceptance(WF, 1, 1, uint64(block.timestamp + 10));
        vm.prank(op);
        market.declareFailure(a1);
        bytes memory sig2 = signAcceptance(OP2_KEY, a2);
        vm.warp(block.timestamp + 11);
        vm.prank(settler);
        market.slashMissedDeadline(op2, a2, sig2);
        vm.assertGt(market.reputation(op).stake, market.reputation(op2).stake, "fail fast keeps more stake");
    }

    // ------------------------------------------------------------------ claims

    function test_claim_reverts() public {
        vm.prank(op);
        vm.expectRevert(ProofMarket.NothingToClaim.selector);
        market.claim();
        Rejecter rej = new Rejecter();
        registerOp(op, 2 ether);
        openEscrow(WF, 1 ether, uint64(block.timestamp + 1 days), 4);
        ProofMarket.ClaimRef memory c = ProofMarket.ClaimRef(WF, 0, 1);
        bytes memory proof = abi.encode(uint256(5));
        uint256[] memory inp = inputs1(5);
        bytes memory sig = signClaim(OP_KEY, c, proof, inp);
        vm.prank(address(rej));
        market.slashInvalidProof(op, c, proof, inp, sig);
        uint256 owed = market.claimable(address(rej));
        vm.expectRevert(abi.encodeWithSelector(ProofMarket.TransferFailed.selector, address(rej), owed));
        rej.claimFrom(market);
    }

    // -------------------------------------------------------------- reputation

    function test_reputations_batchRead() public {
        registerOp(op, 1 ether);
        registerOp(op2, 3 ether);
        address[] memory ops = new address[](3);
        ops[0] = op;
        ops[1] = op2;
        ops[2] = reporter;
        vm.warp(block.timestamp + 10);
        ProofMarket.Reputation[] memory rs = market.reputations(ops);
        vm.assertEq(rs.length, 3, "len");
        vm.assertEq(rs[1].stake, 3 ether, "op2 stake");
        vm.assertEq(rs[1].stakeTime, 30 ether, "op2 stake-time");
        vm.assertEq(rs[2].registeredAt, 0, "unregistered reads as zero");
    }

    function test_domainSeparator_followsChainId() public view {
        bytes32 d = market.domainSeparator();
        vm.assertEq(d, market.domainSeparator(), "stable");
        ProofMarket.Acceptance memory acc = acceptance(WF, 0, 1, 1);
        bytes32 h1 = market.hashAcceptance(acc);
        acc.attempt = 2;
        vm.assertTrue(h1 != market.hashAcceptance(acc), "attempt is signed");
    }
}
