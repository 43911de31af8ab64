// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {Groth16ProofVerifier} from "../src/generated/Groth16ProofVerifier.sol";
import {FinalProofFixture} from "./fixtures/FinalProofFixture.sol";

/// The real final proof written by `proofmesh-prover pipeline --leaves 4` (fixtures/final.proof,
/// converted by `proofmesh-prover calldata --sol`), checked by the generated verifier through the
/// IProofVerifier adapter. A Rust test keeps the fixture in sync with final.proof.
contract Groth16VerifierTest is Test {
    Groth16ProofVerifier internal verifier;

    function setUp() public {
        verifier = new Groth16ProofVerifier();
    }

    function test_acceptsRealFinalProof() public view {
        bool ok = verifier.verifyProof(FinalProofFixture.PROOF, FinalProofFixture.publicInputs());
        vm.assertTrue(ok, "the committed final proof must verify on-chain");
    }

    /// Flipping one bit of any byte of the proof makes it invalid, and the adapter returns false
    /// instead of reverting (whether the point leaves the curve or the pairing check fails).
    function test_rejectsEveryOneByteTamperOfTheProof() public view {
        bytes memory proof = FinalProofFixture.PROOF;
        uint256[] memory inputs = FinalProofFixture.publicInputs();
        for (uint256 i = 0; i < proof.length; i++) {
            bytes memory tampered = bytes.concat(proof);
            tampered[i] = bytes1(uint8(tampered[i]) ^ 0x01);
            vm.assertFalse(verifier.verifyProof(tampered, inputs), "a tampered proof must not verify");
        }
    }

    function test_rejectsTamperedPublicInputs() public view {
        bytes memory proof = FinalProofFixture.PROOF;
        for (uint256 i = 0; i < 4; i++) {
            uint256[] memory inputs = FinalProofFixture.publicInputs();
            inputs[i] ^= 1;
            vm.assertFalse(verifier.verifyProof(proof, inputs), "tampered public input must not verify");
        }
        // A public input outside the scalar field: the generated verifier reverts, the adapter says false.
        uint256[] memory big = FinalProofFixture.publicInputs();
        big[0] = type(uint256).max;
        vm.assertFalse(verifier.verifyProof(proof, big), "unreduced public input must not verify");
    }

    function test_rejectsMalformedShapes() public view {
        uint256[] memory inputs = FinalProofFixture.publicInputs();
        vm.assertFalse(verifier.verifyProof(hex"", inputs), "empty proof");
        vm.assertFalse(verifier.verifyProof(bytes.concat(FinalProofFixture.PROOF, hex"00"), inputs), "long proof");
        uint256[] memory three = new uint256[](3);
        vm.assertFalse(verifier.verifyProof(FinalProofFixture.PROOF, three), "wrong input count");
        vm.assertFalse(verifier.verifyProof(new bytes(256), inputs), "all-zero proof");
    }

    /// Too little gas must revert, never return false: otherwise anyone could make an honest
    /// proof look invalid (e.g. as slashing evidence) by starving the pairing check.
    function test_revertsWhenStarvedOfGas() public view {
        bytes memory call_ = abi.encodeCall(
            Groth16ProofVerifier.verifyProof, (FinalProofFixture.PROOF, FinalProofFixture.publicInputs())
        );
        (bool success, bytes memory ret) = address(verifier).staticcall{gas: 200_000}(call_);
        vm.assertFalse(success, "a starved verification must revert");
        vm.assertEq(bytes4(ret), Groth16ProofVerifier.InsufficientGasForVerification.selector, "revert reason");
        (success, ret) = address(verifier).staticcall{gas: 1_000_000}(call_);
        vm.assertTrue(success && abi.decode(ret, (bool)), "with enough gas the same call verifies");
    }

    /// Gas of one on-chain verification through the adapter (reported by --gas-report and here).
    function test_gasOfVerification() public {
        uint256[] memory inputs = FinalProofFixture.publicInputs();
        bytes memory proof = FinalProofFixture.PROOF;
        uint256 before = gasleft();
        bool ok = verifier.verifyProof(proof, inputs);
        uint256 used = before - gasleft();
        vm.assertTrue(ok, "fixture verifies");
        emit log_named_uint("adapter verifyProof gas", used);
        vm.assertLt(used, 300_000, "verification should stay well under 300k gas");
    }
}
