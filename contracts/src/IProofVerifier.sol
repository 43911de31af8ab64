// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Checks a workflow's final proof on-chain. The ProofMarket uses it to settle and to
/// slash on an invalid proof. The Groth16/BN254 implementation wraps the verifier generated from
/// the prover's verifying key (see operator/prover).
interface IProofVerifier {
    /// @param proof the proof bytes exactly as `proofmesh-prover` writes `final.proof`'s
    ///        on-chain form: abi.encode(uint256[8]) (a, b, c in the EIP-197 order).
    /// @param publicInputs the proof's public inputs, each a BN254 scalar.
    /// @return ok true iff the proof verifies.
    function verifyProof(bytes calldata proof, uint256[] calldata publicInputs) external view returns (bool ok);
}
