// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {ProofMarket} from "../src/ProofMarket.sol";

/// The issue's target: a 512-task workflow over 32 operators settles in at most 10,000 gas per
/// task, amortized. Measured cold (every operator's claimable and counters first touched here),
/// i.e. the worst case; the chain crate's anvil test measures the same batch as a real
/// transaction, including the 21,000 base cost and calldata.
contract ProofMarketGasTest is Base {
    uint256 internal constant TASKS = 512;
    uint256 internal constant OPS = 32;
    address[] internal ops;

    function setUp() public override {
        super.setUp();
        for (uint256 i = 0; i < OPS; ++i) {
            address a = address(uint160(0x10000 + i));
            vm.deal(a, 2 ether);
            registerOp(a, 1 ether);
            ops.push(a);
        }
        openEscrow(WF, 100 ether, uint64(block.timestamp + 1 days), uint32(TASKS));
    }

    function _batch() internal view returns (ProofMarket.Payout[] memory ps) {
        ps = new ProofMarket.Payout[](OPS);
        uint256 per = TASKS / OPS;
        for (uint256 i = 0; i < OPS; ++i) {
            // Interleaved like a real schedule: operator i ran tasks i, i+32, i+64, ...
            ps[i].operator = ops[i];
            ps[i].amount = uint128(per * 0.01 ether);
            ps[i].tasks = new uint40[](per);
            for (uint256 j = 0; j < per; ++j) {
                ps[i].tasks[j] = uint40(((i + j * OPS) << 8) | 1);
            }
        }
    }

    function test_gas_settle512Tasks32Operators() public {
        ProofMarket.Payout[] memory ps = _batch();
        vm.prank(settler);
        uint256 g = gasleft();
        market.settle(WF, ps);
        uint256 used = g - gasleft();
        emit log_named_uint("settle gas (execution, 512 tasks / 32 operators)", used);
        emit log_named_uint("amortized gas per task", used / TASKS);
        vm.assertLe(used / TASKS, 10_000, "amortized settlement gas per task exceeds 10,000");
        for (uint256 i = 0; i < OPS; ++i) {
            vm.assertEq(market.claimable(ops[i]), 16 * 0.01 ether, "each operator credited");
            vm.assertEq(market.reputation(ops[i]).completed, 16, "each operator's count");
        }
        vm.assertEq(market.escrow(WF).paid, 5.12 ether, "paid");
    }
}
