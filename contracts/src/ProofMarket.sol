// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IProofVerifier} from "./IProofVerifier.sol";

/// @title ProofMarket
/// @notice Settlement layer of proofmesh: staked operators, per-workflow escrows, batched
/// payment by the workflow's settler, and slashing on signed evidence. See contracts/README.md
/// for the trust model.
///
/// Keys: an operator's Ethereum account (msg.sender at registration) signs on-chain evidence
/// (EIP-712, checked with ecrecover); its ed25519 node key signs off-chain protocol messages.
/// Both are bound at registration; the ed25519 signature over the binding is emitted for
/// indexers to check (the EVM has no cheap ed25519).
///
/// Money never leaves except by `claim`, `withdraw` and `refund`; every internal movement is a
/// credit, so the balance always equals escrows held + stakes + claimable + burned.
contract ProofMarket {
    // ------------------------------------------------------------------ types

    /// Advertised machine capacity (informational; the matchmaker reads it).
    struct Capacity {
        uint32 cpuCores;
        uint32 memoryGb;
        uint32 gpus;
        uint32 vramGbPerGpu;
    }

    /// Constructor parameters (all immutable afterwards).
    struct Params {
        uint128 minStake;
        /// Delay between `requestUnbond` and `withdraw`. Must exceed `maxEscrowDuration`, so
        /// that stake cannot leave before every escrow open at the time of the request ends.
        uint64 unbondingDelay;
        uint64 maxEscrowDuration;
        uint128 missedDeadlinePenalty;
        uint128 invalidProofPenalty;
        /// Penalty for a failure the operator declares before its deadline; must be lower than
        /// `missedDeadlinePenalty` (fail fast pays).
        uint128 failurePenalty;
        /// Shares of a slash credited to the workflow's requester and to the reporter; the rest
        /// is burned (locked in this contract forever) so self-reporting never pays.
        uint16 requesterShareBps;
        uint16 reporterShareBps;
    }

    struct Operator {
        // slot 0
        uint128 stake; // bonded, slashable
        uint128 unbonding; // leaving, still slashable until withdrawn
        // slot 1
        bytes32 nodeKey; // ed25519 public key; zero means not registered
        // slot 2: everything settlement touches, in one slot
        uint64 registeredAt;
        uint32 completed;
        uint32 failed;
        uint32 slashed;
        uint64 stakeTimeAt; // last accrual of stakeTime
        // slot 3
        uint256 stakeTime; // integral of bonded stake over time, wei * seconds
        // slot 4
        uint64 unbondAt;
        Capacity capacity;
    }

    /// One call's worth of reputation (see `reputation` / `reputations`).
    struct Reputation {
        uint32 completed;
        uint32 failed;
        uint32 slashed;
        uint64 registeredAt;
        uint128 stake;
        uint128 unbonding;
        uint256 stakeTime;
    }

    struct Escrow {
        // slot 0
        address requester; // zero means no escrow
        uint64 deadline;
        uint32 taskCount;
        // slot 1
        address settler;
        bool refunded; // what was left went back to the requester (refund or release): closed
        bool proofAccepted;
        bool released; // closed by a settler: only settlers report missed deadlines from then on
        // slot 2
        uint128 held; // still in escrow
        uint128 paid; // paid out to operators so far
    }

    /// An operator's signed commitment to run one attempt of one task (EIP-712).
    struct Acceptance {
        bytes32 workflowId;
        uint32 task;
        uint32 attempt;
        uint64 deadline; // unix seconds
        uint128 price; // wei
    }

    /// Which attempt a signed final proof belongs to (the proof and inputs travel beside it).
    struct ClaimRef {
        bytes32 workflowId;
        uint32 task;
        uint32 attempt;
    }

    /// Per-operator line of a settlement batch. Each `tasks` entry is `(taskIndex << 8) | attempt`.
    struct Payout {
        address operator;
        uint128 amount;
        uint40[] tasks;
    }

    enum SlashKind {
        MissedDeadline,
        InvalidProof
    }

    // -------------------------------------------------------------- constants

    bytes32 public constant ACCEPTANCE_TYPEHASH =
        keccak256("Acceptance(bytes32 workflowId,uint32 task,uint32 attempt,uint64 deadline,uint128 price)");
    bytes32 public constant PROOF_CLAIM_TYPEHASH =
        keccak256("ProofClaim(bytes32 workflowId,uint32 task,uint32 attempt,bytes proof,uint256[] publicInputs)");
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    uint256 private constant BPS = 10_000;
    /// Attempts that can be paid: 1..=254 (one byte per task; 255 marks a closed attempt).
    uint256 public constant MAX_ATTEMPT = 254;
    uint8 private constant CLOSED = 255;
    /// secp256k1n / 2: signatures with a higher s are rejected (EIP-2).
    uint256 private constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    // ------------------------------------------------------------- immutables

    IProofVerifier public immutable verifier;
    uint128 public immutable minStake;
    uint64 public immutable unbondingDelay;
    uint64 public immutable maxEscrowDuration;
    uint128 public immutable missedDeadlinePenalty;
    uint128 public immutable invalidProofPenalty;
    uint128 public immutable failurePenalty;
    uint16 public immutable requesterShareBps;
    uint16 public immutable reporterShareBps;
    uint256 private immutable cachedChainId;
    bytes32 private immutable cachedDomainSeparator;

    // ------------------------------------------------------------------ state

    mapping(address => Operator) internal operators;
    mapping(bytes32 => Escrow) internal escrows;
    /// Per workflow, one byte per task: 0 unpaid, 1..254 the attempt paid, 255 closed unpaid.
    mapping(bytes32 => mapping(uint256 => uint256)) internal paidWords;
    /// Evidence already used, keyed by `attemptKey(operator, workflow, task, attempt)`.
    mapping(bytes32 => bool) public attemptClosed;
    mapping(address => uint256) public claimable;
    /// Further settlers of a workflow's escrow, named by its requester (failover matchmakers).
    mapping(bytes32 => mapping(address => bool)) public backupSettler;
    uint256 public totalBurned;

    // ----------------------------------------------------------------- events

    event OperatorRegistered(
        address indexed operator, bytes32 indexed nodeKey, uint256 stake, Capacity capacity, bytes nodeKeySig
    );
    event CapacityUpdated(address indexed operator, Capacity capacity);
    event Staked(address indexed operator, uint256 amount, uint256 stake);
    event UnbondRequested(address indexed operator, uint256 amount, uint256 unbonding, uint64 withdrawableAt);
    event Withdrawn(address indexed operator, uint256 amount);
    event EscrowOpened(
        bytes32 indexed workflowId,
        address indexed requester,
        address indexed settler,
        uint256 amount,
        uint64 deadline,
        uint32 taskCount
    );
    event OperatorPaid(bytes32 indexed workflowId, address indexed operator, uint256 amount, uint256 tasks);
    event BatchSettled(bytes32 indexed workflowId, uint256 operators, uint256 tasks, uint256 amount, uint256 held);
    event EscrowRefunded(bytes32 indexed workflowId, address indexed requester, uint256 amount);
    event EscrowReleased(bytes32 indexed workflowId, address indexed settler, address indexed requester, uint256 amount);
    event FinalProofAccepted(bytes32 indexed workflowId, bytes32 proofHash);
    event Slashed(
        address indexed operator,
        bytes32 indexed workflowId,
        address indexed reporter,
        SlashKind kind,
        uint32 task,
        uint32 attempt,
        uint256 amount,
        uint256 toRequester,
        uint256 toReporter,
        uint256 burned
    );
    event FailureDeclared(
        address indexed operator, bytes32 indexed workflowId, uint32 task, uint32 attempt, uint256 penalty
    );
    event Claimed(address indexed account, uint256 amount);
    event SettlersAdded(bytes32 indexed workflowId, address[] settlers);

    // ----------------------------------------------------------------- errors

    error InvalidParams(string what);
    error AlreadyRegistered(address operator);
    error NotRegistered(address operator);
    error ZeroNodeKey();
    error BadNodeKeySig(uint256 length);
    error StakeTooLow(uint256 sent, uint256 minimum);
    error ZeroAmount();
    error InsufficientStake(uint256 requested, uint256 stake);
    error NothingUnbonding();
    error StillUnbonding(uint64 withdrawableAt);
    error EscrowExists(bytes32 workflowId);
    error UnknownEscrow(bytes32 workflowId);
    error BadDeadline(uint64 deadline, uint64 latest);
    error ZeroTasks();
    error ZeroSettler();
    error AmountTooLarge();
    error NotSettler(address caller);
    error NotRequester(address caller);
    error EscrowExpired(uint64 deadline);
    error EscrowNotExpired(uint64 deadline);
    error AlreadyRefunded(bytes32 workflowId);
    error EscrowClosed(bytes32 workflowId);
    error TaskOutOfRange(uint256 task, uint256 taskCount);
    error BadAttempt(uint256 attempt);
    error TaskAlreadyPaid(uint256 task);
    error ExceedsEscrow(uint256 amount, uint256 held);
    error BadSignature();
    error DeadlineNotPassed(uint64 deadline);
    error DeadlinePassed(uint64 deadline);
    error OnlySettlerBeforeEscrowDeadline(uint64 escrowDeadline);
    error OnlySettlerAfterRelease(bytes32 workflowId);
    error TaskFulfilled(uint256 task, uint256 attempt);
    error EvidenceUsed(bytes32 key);
    error ProofIsValid();
    error InvalidProof();
    error VerifierOutOfGas();
    error NothingToClaim();
    error TransferFailed(address to, uint256 amount);

    // ------------------------------------------------------------ constructor

    constructor(IProofVerifier verifier_, Params memory p) {
        if (address(verifier_) == address(0)) revert InvalidParams("verifier is zero");
        if (p.minStake == 0) revert InvalidParams("minStake is zero");
        if (p.maxEscrowDuration == 0) revert InvalidParams("maxEscrowDuration is zero");
        if (p.unbondingDelay <= p.maxEscrowDuration) revert InvalidParams("unbondingDelay <= maxEscrowDuration");
        if (p.failurePenalty >= p.missedDeadlinePenalty) {
            revert InvalidParams("failurePenalty >= missedDeadlinePenalty");
        }
        if (uint256(p.requesterShareBps) + p.reporterShareBps > BPS) revert InvalidParams("shares exceed 100%");
        verifier = verifier_;
        minStake = p.minStake;
        unbondingDelay = p.unbondingDelay;
        maxEscrowDuration = p.maxEscrowDuration;
        missedDeadlinePenalty = p.missedDeadlinePenalty;
        invalidProofPenalty = p.invalidProofPenalty;
        failurePenalty = p.failurePenalty;
        requesterShareBps = p.requesterShareBps;
        reporterShareBps = p.reporterShareBps;
        cachedChainId = block.chainid;
        cachedDomainSeparator = _buildDomainSeparator();
    }

    // -------------------------------------------------------------- operators

    /// @notice Registers msg.sender as an operator bound to `nodeKey`, staking msg.value.
    /// @param nodeKeySig ed25519 signature by `nodeKey` over the binding message
    ///        ("proofmesh-operator-binding-v1" || chainId (8 bytes BE) || this (20) || sender (20));
    ///        emitted, not checked here: indexers ignore registrations whose signature fails.
    function register(bytes32 nodeKey, Capacity calldata capacity, bytes calldata nodeKeySig) external payable {
        Operator storage op = operators[msg.sender];
        if (op.nodeKey != bytes32(0)) revert AlreadyRegistered(msg.sender);
        if (nodeKey == bytes32(0)) revert ZeroNodeKey();
        if (nodeKeySig.length != 64) revert BadNodeKeySig(nodeKeySig.length);
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        op.nodeKey = nodeKey;
        op.stake = _u128(msg.value);
        op.registeredAt = uint64(block.timestamp);
        op.stakeTimeAt = uint64(block.timestamp);
        op.capacity = capacity;
        emit OperatorRegistered(msg.sender, nodeKey, msg.value, capacity, nodeKeySig);
    }

    function updateCapacity(Capacity calldata capacity) external {
        Operator storage op = _registered(msg.sender);
        op.capacity = capacity;
        emit CapacityUpdated(msg.sender, capacity);
    }

    /// @notice Adds msg.value to the caller's bonded stake.
    function stake() external payable {
        Operator storage op = _registered(msg.sender);
        if (msg.value == 0) revert ZeroAmount();
        _accrue(op);
        op.stake = _u128(op.stake + msg.value);
        emit Staked(msg.sender, msg.value, op.stake);
    }

    /// @notice Moves `amount` of bonded stake to unbonding; withdrawable after `unbondingDelay`
    /// (a new request restarts the delay for the whole unbonding amount). Unbonding stake stays
    /// slashable.
    function requestUnbond(uint128 amount) external {
        Operator storage op = _registered(msg.sender);
        if (amount == 0) revert ZeroAmount();
        if (amount > op.stake) revert InsufficientStake(amount, op.stake);
        _accrue(op);
        op.stake -= amount;
        op.unbonding += amount;
        uint64 withdrawableAt = uint64(block.timestamp) + unbondingDelay;
        op.unbondAt = withdrawableAt;
        emit UnbondRequested(msg.sender, amount, op.unbonding, withdrawableAt);
    }

    /// @notice Sends the caller's unbonded stake once the delay has passed.
    function withdraw() external {
        Operator storage op = _registered(msg.sender);
        uint256 amount = op.unbonding;
        if (amount == 0) revert NothingUnbonding();
        if (block.timestamp < op.unbondAt) revert StillUnbonding(op.unbondAt);
        op.unbonding = 0;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ---------------------------------------------------------------- escrows

    /// @notice Escrows msg.value for `workflowId` until `deadline`. `settler` (the requester
    /// itself, or a matchmaker it trusts) is the only address that may pay operators from it.
    function openEscrow(bytes32 workflowId, address settler, uint64 deadline, uint32 taskCount) external payable {
        Escrow storage e = escrows[workflowId];
        if (e.requester != address(0)) revert EscrowExists(workflowId);
        if (msg.value == 0) revert ZeroAmount();
        if (settler == address(0)) revert ZeroSettler();
        if (taskCount == 0) revert ZeroTasks();
        uint64 latest = uint64(block.timestamp) + maxEscrowDuration;
        if (deadline <= block.timestamp || deadline > latest) revert BadDeadline(deadline, latest);
        e.requester = msg.sender;
        e.deadline = deadline;
        e.taskCount = taskCount;
        e.settler = settler;
        e.held = _u128(msg.value);
        emit EscrowOpened(workflowId, msg.sender, settler, msg.value, deadline, taskCount);
    }

    /// @notice Names further settlers for `workflowId` (requester only): the matchmakers that
    /// may take over scheduling it. Any of them may settle and report, with the same rights as
    /// `settler`; the contract still pays each task at most once whoever settles.
    function addSettlers(bytes32 workflowId, address[] calldata settlers) external {
        Escrow storage e = _escrow(workflowId);
        if (msg.sender != e.requester) revert NotRequester(msg.sender);
        for (uint256 i = 0; i < settlers.length; ++i) {
            if (settlers[i] == address(0)) revert ZeroSettler();
            backupSettler[workflowId][settlers[i]] = true;
        }
        emit SettlersAdded(workflowId, settlers);
    }

    /// @notice Whether `who` may settle `workflowId`: its settler or a backup settler.
    function isSettler(bytes32 workflowId, address who) public view returns (bool) {
        return who == escrows[workflowId].settler || backupSettler[workflowId][who];
    }

    /// @notice Pays operators for completed task attempts, in one transaction per batch. Only
    /// the escrow's settler, only until the escrow deadline or its release. Each (task) is paid
    /// at most once over all batches; each operator's payout is credited to `claimable` and
    /// counted in its reputation.
    function settle(bytes32 workflowId, Payout[] calldata payouts) external {
        Escrow storage e = escrows[workflowId];
        address requester = e.requester;
        if (requester == address(0)) revert UnknownEscrow(workflowId);
        if (!isSettler(workflowId, msg.sender)) revert NotSettler(msg.sender);
        uint64 deadline = e.deadline;
        if (block.timestamp > deadline) revert EscrowExpired(deadline);
        if (e.refunded) revert EscrowClosed(workflowId);
        uint256 taskCount = e.taskCount;
        mapping(uint256 => uint256) storage words = paidWords[workflowId];

        uint256 total;
        uint256 tasksPaid;
        for (uint256 i = 0; i < payouts.length; ++i) {
            Payout calldata p = payouts[i];
            Operator storage op = operators[p.operator];
            if (op.registeredAt == 0) revert NotRegistered(p.operator);
            uint256 n = p.tasks.length;
            _markPaid(words, workflowId, taskCount, p.operator, p.tasks);
            op.completed += uint32(n);
            claimable[p.operator] += p.amount;
            total += p.amount;
            tasksPaid += n;
            emit OperatorPaid(workflowId, p.operator, p.amount, n);
        }
        uint256 held = e.held;
        if (total > held) revert ExceedsEscrow(total, held);
        held -= total;
        e.held = uint128(held);
        e.paid += uint128(total);
        emit BatchSettled(workflowId, payouts.length, tasksPaid, total, held);
    }

    /// @notice Records a verified final proof for the workflow (settler or requester).
    function submitFinalProof(bytes32 workflowId, bytes calldata proof, uint256[] calldata publicInputs) external {
        Escrow storage e = _escrow(workflowId);
        if (!isSettler(workflowId, msg.sender) && msg.sender != e.requester) revert NotSettler(msg.sender);
        if (!verifier.verifyProof(proof, publicInputs)) revert InvalidProof();
        e.proofAccepted = true;
        emit FinalProofAccepted(workflowId, keccak256(proof));
    }

    /// @notice Returns what is left in the escrow to its requester, after the deadline.
    function refund(bytes32 workflowId) external {
        Escrow storage e = _escrow(workflowId);
        if (msg.sender != e.requester) revert NotRequester(msg.sender);
        if (block.timestamp <= e.deadline) revert EscrowNotExpired(e.deadline);
        if (e.refunded) revert AlreadyRefunded(workflowId);
        uint256 amount = e.held;
        e.held = 0;
        e.refunded = true;
        emit EscrowRefunded(workflowId, msg.sender, amount);
        if (amount > 0) _send(msg.sender, amount);
    }

    /// @notice Closes the escrow before its deadline: a settler, once it has paid the work done
    /// on a workflow that ended (completed, or failed for good), credits what is left to the
    /// requester's `claimable`, so a requester is not locked out of its money until the
    /// deadline. Nothing can be settled from the escrow afterwards. It adds no trust: a settler
    /// can already pay the whole escrow out to operators. From then on only settlers may report
    /// a missed deadline of the workflow's attempts (see `slashMissedDeadline`).
    function release(bytes32 workflowId) external {
        Escrow storage e = _escrow(workflowId);
        if (!isSettler(workflowId, msg.sender)) revert NotSettler(msg.sender);
        if (e.refunded) revert AlreadyRefunded(workflowId);
        uint256 amount = e.held;
        e.held = 0;
        e.refunded = true;
        e.released = true;
        claimable[e.requester] += amount;
        emit EscrowReleased(workflowId, msg.sender, e.requester, amount);
    }

    // --------------------------------------------------------------- slashing

    /// @notice Slashes `operator` for an accepted attempt whose deadline passed without that
    /// attempt being paid. Evidence: the operator's EIP-712 signature over `acc`. Before the
    /// escrow deadline only the settler may report (it alone knows whether a late settlement is
    /// pending); afterwards anyone may, unless a settler released the escrow.
    function slashMissedDeadline(address operator, Acceptance calldata acc, bytes calldata signature) external {
        Escrow storage e = _escrow(acc.workflowId);
        if (block.timestamp <= acc.deadline) revert DeadlineNotPassed(acc.deadline);
        if (!isSettler(acc.workflowId, msg.sender)) {
            if (block.timestamp <= e.deadline) revert OnlySettlerBeforeEscrowDeadline(e.deadline);
            // A settler released the escrow: it has paid what it owed and reported what was
            // missed. An unpaid attempt left is one it called back (superseded, or its workflow
            // failed or was cancelled); its operator stopped as told and must not be slashed
            // on anyone else's word.
            if (e.released) revert OnlySettlerAfterRelease(acc.workflowId);
        }
        _checkTaskAttempt(e, acc.task, acc.attempt);
        _checkSigner(operator, hashAcceptance(acc), signature);
        if (_paidAttempt(acc.workflowId, acc.task) == acc.attempt) revert TaskFulfilled(acc.task, acc.attempt);
        _registered(operator).failed += 1;
        _close(operator, acc.workflowId, acc.task, acc.attempt);
        _slash(
            operator,
            e.requester,
            acc.workflowId,
            SlashKind.MissedDeadline,
            acc.task,
            acc.attempt,
            missedDeadlinePenalty
        );
    }

    /// @notice Slashes `operator` for signing (EIP-712 ProofClaim) a final proof that the
    /// verifier rejects. Anyone may report, at any time while the operator has stake.
    function slashInvalidProof(
        address operator,
        ClaimRef calldata c,
        bytes calldata proof,
        uint256[] calldata publicInputs,
        bytes calldata signature
    ) external {
        address requester = _escrowChecked(c.workflowId, c.task, c.attempt);
        _checkSigner(operator, hashProofClaim(c, proof, publicInputs), signature);
        _registered(operator);
        bytes32 key = attemptKey(operator, c.workflowId, c.task, c.attempt);
        if (attemptClosed[key]) revert EvidenceUsed(key);
        // A verifier that runs out of gas must not count as a rejection: the reporter could
        // starve it on purpose. Anything else that reverts is malformed input, i.e. invalid.
        uint256 gasBefore = gasleft();
        try verifier.verifyProof(proof, publicInputs) returns (bool ok) {
            if (ok) revert ProofIsValid();
        } catch {
            if (gasleft() <= gasBefore / 64) revert VerifierOutOfGas();
        }
        _close(operator, c.workflowId, c.task, c.attempt);
        _slash(operator, requester, c.workflowId, SlashKind.InvalidProof, c.task, c.attempt, invalidProofPenalty);
    }

    /// @notice Fail fast: the operator gives up an accepted attempt before its deadline, frees
    /// the task for reassignment and pays `failurePenalty` (less than a missed deadline). The
    /// attempt can then never be slashed nor paid.
    function declareFailure(Acceptance calldata acc) external {
        Operator storage op = _registered(msg.sender);
        Escrow storage e = _escrow(acc.workflowId);
        if (block.timestamp > acc.deadline) revert DeadlinePassed(acc.deadline);
        _checkTaskAttempt(e, acc.task, acc.attempt);
        if (_paidAttempt(acc.workflowId, acc.task) == acc.attempt) revert TaskFulfilled(acc.task, acc.attempt);
        _close(msg.sender, acc.workflowId, acc.task, acc.attempt);
        op.failed += 1;
        uint256 amount = _take(op, failurePenalty);
        uint256 toRequester = amount * requesterShareBps / BPS;
        claimable[e.requester] += toRequester;
        totalBurned += amount - toRequester;
        emit FailureDeclared(msg.sender, acc.workflowId, acc.task, acc.attempt, amount);
    }

    // ----------------------------------------------------------------- claims

    /// @notice Sends the caller everything credited to it (payments, slash shares).
    function claim() external {
        uint256 amount = claimable[msg.sender];
        if (amount == 0) revert NothingToClaim();
        claimable[msg.sender] = 0;
        emit Claimed(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice Reputation and stake of one operator in one call.
    function reputation(address operator) public view returns (Reputation memory r) {
        Operator storage op = operators[operator];
        r.completed = op.completed;
        r.failed = op.failed;
        r.slashed = op.slashed;
        r.registeredAt = op.registeredAt;
        r.stake = op.stake;
        r.unbonding = op.unbonding;
        r.stakeTime = op.stakeTime + uint256(op.stake) * (block.timestamp - op.stakeTimeAt);
    }

    /// @notice Reputation of many operators in one call (for the matchmaker).
    function reputations(address[] calldata ops) external view returns (Reputation[] memory rs) {
        rs = new Reputation[](ops.length);
        for (uint256 i = 0; i < ops.length; ++i) {
            rs[i] = reputation(ops[i]);
        }
    }

    function operatorInfo(address operator)
        external
        view
        returns (bytes32 nodeKey, Capacity memory capacity, uint64 unbondAt)
    {
        Operator storage op = operators[operator];
        return (op.nodeKey, op.capacity, op.unbondAt);
    }

    function escrow(bytes32 workflowId) external view returns (Escrow memory) {
        return escrows[workflowId];
    }

    /// @notice 0 if unpaid, the paid attempt, or 255 if closed unpaid (slashed / failure declared).
    function paidAttempt(bytes32 workflowId, uint256 task) external view returns (uint256) {
        return _byte(workflowId, task);
    }

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == cachedChainId ? cachedDomainSeparator : _buildDomainSeparator();
    }

    function hashAcceptance(Acceptance calldata acc) public view returns (bytes32) {
        bytes32 structHash =
            keccak256(abi.encode(ACCEPTANCE_TYPEHASH, acc.workflowId, acc.task, acc.attempt, acc.deadline, acc.price));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    function hashProofClaim(ClaimRef calldata c, bytes calldata proof, uint256[] calldata publicInputs)
        public
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(
            abi.encode(
                PROOF_CLAIM_TYPEHASH,
                c.workflowId,
                c.task,
                c.attempt,
                keccak256(proof),
                keccak256(abi.encodePacked(publicInputs))
            )
        );
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// @notice The key under which evidence about one attempt of one operator is used up.
    function attemptKey(address operator, bytes32 workflowId, uint256 task, uint256 attempt)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(operator, workflowId, task, attempt));
    }

    // --------------------------------------------------------------- internal

    /// Records each `(task << 8) | attempt` of `tasks` as paid; reverts on any task already paid.
    function _markPaid(
        mapping(uint256 => uint256) storage words,
        bytes32 workflowId,
        uint256 taskCount,
        address operator,
        uint40[] calldata tasks
    ) private {
        for (uint256 j = 0; j < tasks.length; ++j) {
            uint256 packed = tasks[j];
            uint256 task = packed >> 8;
            uint256 attempt = packed & 0xff;
            if (task >= taskCount) revert TaskOutOfRange(task, taskCount);
            if (attempt == 0 || attempt > MAX_ATTEMPT) revert BadAttempt(attempt);
            uint256 shift = (task & 31) << 3;
            uint256 word = words[task >> 5];
            uint256 current = (word >> shift) & 0xff;
            if (current != 0) {
                // A closed attempt (slashed or failure declared) may be paid on another
                // attempt, never on the closed one.
                if (current != CLOSED || attemptClosed[attemptKey(operator, workflowId, task, attempt)]) {
                    revert TaskAlreadyPaid(task);
                }
                word &= ~(uint256(0xff) << shift);
            }
            words[task >> 5] = word | (attempt << shift);
        }
    }

    function _registered(address who) private view returns (Operator storage op) {
        op = operators[who];
        if (op.registeredAt == 0) revert NotRegistered(who);
    }

    function _escrow(bytes32 workflowId) private view returns (Escrow storage e) {
        e = escrows[workflowId];
        if (e.requester == address(0)) revert UnknownEscrow(workflowId);
    }

    function _escrowChecked(bytes32 workflowId, uint32 task, uint32 attempt) private view returns (address) {
        Escrow storage e = _escrow(workflowId);
        _checkTaskAttempt(e, task, attempt);
        return e.requester;
    }

    function _checkTaskAttempt(Escrow storage e, uint32 task, uint32 attempt) private view {
        if (task >= e.taskCount) revert TaskOutOfRange(task, e.taskCount);
        if (attempt == 0 || attempt > MAX_ATTEMPT) revert BadAttempt(attempt);
    }

    function _checkSigner(address expected, bytes32 digest, bytes calldata sig) private pure {
        if (sig.length != 65) revert BadSignature();
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) revert BadSignature();
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0) || signer != expected) revert BadSignature();
    }

    function _byte(bytes32 workflowId, uint256 task) private view returns (uint256) {
        return (paidWords[workflowId][task >> 5] >> ((task & 31) << 3)) & 0xff;
    }

    function _paidAttempt(bytes32 workflowId, uint256 task) private view returns (uint256) {
        return _byte(workflowId, task);
    }

    /// Uses up the evidence for one attempt and marks an unpaid task as closed.
    function _close(address operator, bytes32 workflowId, uint256 task, uint256 attempt) private {
        bytes32 key = attemptKey(operator, workflowId, task, attempt);
        if (attemptClosed[key]) revert EvidenceUsed(key);
        attemptClosed[key] = true;
        if (_byte(workflowId, task) == 0) {
            paidWords[workflowId][task >> 5] |= uint256(CLOSED) << ((task & 31) << 3);
        }
    }

    /// Takes up to `penalty` from bonded stake, then from unbonding stake.
    function _take(Operator storage op, uint256 penalty) private returns (uint256 amount) {
        _accrue(op);
        uint256 fromStake = penalty < op.stake ? penalty : op.stake;
        op.stake -= uint128(fromStake);
        uint256 rest = penalty - fromStake;
        uint256 fromUnbonding = rest < op.unbonding ? rest : op.unbonding;
        op.unbonding -= uint128(fromUnbonding);
        amount = fromStake + fromUnbonding;
    }

    function _slash(
        address operator,
        address requester,
        bytes32 workflowId,
        SlashKind kind,
        uint32 task,
        uint32 attempt,
        uint256 penalty
    ) private {
        Operator storage op = operators[operator];
        op.slashed += 1;
        uint256 amount = _take(op, penalty);
        uint256 toRequester = amount * requesterShareBps / BPS;
        uint256 toReporter = amount * reporterShareBps / BPS;
        uint256 burned = amount - toRequester - toReporter;
        claimable[requester] += toRequester;
        claimable[msg.sender] += toReporter;
        totalBurned += burned;
        emit Slashed(operator, workflowId, msg.sender, kind, task, attempt, amount, toRequester, toReporter, burned);
    }

    function _accrue(Operator storage op) private {
        op.stakeTime += uint256(op.stake) * (block.timestamp - op.stakeTimeAt);
        op.stakeTimeAt = uint64(block.timestamp);
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return
            keccak256(
                abi.encode(DOMAIN_TYPEHASH, keccak256("ProofMarket"), keccak256("1"), block.chainid, address(this))
            );
    }

    function _u128(uint256 x) private pure returns (uint128) {
        if (x > type(uint128).max) revert AmountTooLarge();
        return uint128(x);
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
