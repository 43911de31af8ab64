// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IProofVerifier} from "../../src/IProofVerifier.sol";

/// Test-only fault-injection double for the Groth16 verifier: a proof is valid iff it equals
/// `abi.encode(keccak256(abi.encode(publicInputs)))`. An empty proof reverts (malformed input);
/// a proof of exactly 1 byte burns all gas (to test the out-of-gas guard). Never deploy it
/// outside tests.
contract TestVerifier is IProofVerifier {
    error Malformed();

    function verifyProof(bytes calldata proof, uint256[] calldata publicInputs) external view returns (bool) {
        if (proof.length == 0) revert Malformed();
        if (proof.length == 1) {
            // Burn everything we were given.
            uint256 x;
            while (gasleft() > 0) {
                x = uint256(keccak256(abi.encode(x, block.timestamp)));
            }
            return x == 0;
        }
        return keccak256(proof) == keccak256(abi.encode(keccak256(abi.encode(publicInputs))));
    }

    /// The proof this double accepts for `publicInputs`.
    function validProof(uint256[] calldata publicInputs) external pure returns (bytes memory) {
        return abi.encode(keccak256(abi.encode(publicInputs)));
    }
}
