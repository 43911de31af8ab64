//! JSON-RPC 2.0 over HTTP and WebSocket, `/metrics` and `/health`, on one port.
//!
//! One axum router (cheaper to compile than jsonrpsee's server, and we need axum-style routes
//! for `/metrics` and `/health` anyway): `POST /` takes a request or a batch; `GET /` upgrades
//! to a WebSocket that takes the same requests plus subscriptions (`pm_subscribeProgress`
//! pushes `pm_progress` notifications). The methods are documented in `docs/rpc.md`.
//!
//! Security: binds to loopback by default; [`spawn`] refuses any other bind without a bearer
//! token, and when a token is set every request (metrics and health included) must carry
//! `Authorization: Bearer <token>`.
//!
//! The server talks to the node only through [`NodeApi`].

pub mod api;
pub mod client;
pub mod offers;
mod store_api;

pub use api::{
    ApiError, BlobSlice, FailedAttempt, NodeApi, NodeInfo, OperatorInfo, OutputInfo, Quote,
    ResultInfo, StageProgress, SubmitOutcome, SubmitRequest, TaskInfo, TaskQuery, UnmatchedStage,
    WorkflowListing, WorkflowStatus, DEFAULT_LISTED_TASKS, DEFAULT_LISTED_WORKFLOWS,
    MAX_LISTED_TASKS, MAX_LISTED_WORKFLOWS, TASK_STATES,
};
pub use client::{ClientError, RpcClient};
pub use store_api::{compute_status, operator_info, StoreApi};

use crate::config::RpcConfig;
use crate::metrics::{self, NodeMetrics, SharedRegistry};
use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use proofmesh_protocol::messages::Submission;
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{encoding, ContentId, Workflow};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

/// JSON-RPC error codes (the standard ones and proofmesh's).
pub mod codes {
    /// Not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a JSON-RPC 2.0 request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad parameters, including an invalid workflow (the message names the problem).
    pub const INVALID_PARAMS: i64 = -32602;
    /// The node failed internally.
    pub const INTERNAL: i64 = -32603;
    /// The workflow id is not known to this node.
    pub const UNKNOWN_WORKFLOW: i64 = -32001;
    /// The blob is not available.
    pub const UNKNOWN_BLOB: i64 = -32002;
    /// A subscription was requested over plain HTTP.
    pub const NEEDS_WEBSOCKET: i64 = -32003;
    /// The workflow finished and was pruned from this node's store (its retention ended).
    pub const PRUNED_WORKFLOW: i64 = -32004;
}

/// Default RPC port (`http://127.0.0.1:7545`). Not 8545, so a proofmesh node and an Ethereum
/// node (anvil) can run side by side with their defaults.
pub const DEFAULT_PORT: u16 = 7545;

/// Largest request body (a 4 MiB workflow file, JSON-escaped, fits).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Most bytes one `pm_getBlob` call returns.
pub const MAX_BLOB_SLICE: usize = 1024 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// A non-loopback bind without a token.
    #[error(
        "refusing to serve RPC on {bind} without a bearer token: set rpc.token in the config file \
         (or PROOFMESH_RPC_TOKEN, or --rpc.token), or bind to 127.0.0.1 (rpc.bind, --rpc.bind)"
    )]
    TokenRequired {
        /// The configured bind.
        bind: SocketAddr,
    },
    /// The socket could not be bound.
    #[error("cannot bind RPC to {bind}: {source} (change rpc.bind / --rpc.bind / PROOFMESH_RPC_BIND, or free the port)")]
    Bind {
        /// The configured bind.
        bind: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running RPC server. Dropping it stops the server and closes its WebSockets.
#[derive(Debug)]
pub struct RpcHandle {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl RpcHandle {
    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR`, what `--rpc` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stop and wait until the listener is closed.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RpcHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

#[derive(Clone)]
struct AppState {
    api: Arc<dyn NodeApi>,
    registry: SharedRegistry,
    metrics: Option<NodeMetrics>,
    token: Option<Arc<str>>,
    shutdown: watch::Receiver<bool>,
}

/// Start the server on `config.bind` and return once it listens. `registry` is the node's
/// shared metrics registry (served at `/metrics`); `metrics`, when given, counts requests.
pub async fn spawn(
    config: &RpcConfig,
    api: Arc<dyn NodeApi>,
    registry: SharedRegistry,
    metrics: Option<NodeMetrics>,
) -> Result<RpcHandle, RpcError> {
    let token = config.token.as_deref().filter(|t| !t.is_empty());
    if !config.bind.ip().is_loopback() && token.is_none() {
        return Err(RpcError::TokenRequired { bind: config.bind });
    }
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| RpcError::Bind {
            bind: config.bind,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| RpcError::Bind {
        bind: config.bind,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let state = AppState {
        api,
        registry,
        metrics,
        token: token.map(Arc::from),
        shutdown: shutdown_rx.clone(),
    };
    let router = Router::new()
        .route("/", get(ws_upgrade).post(http_rpc))
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state);
    let mut stop = shutdown_rx;
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "RPC server stopped");
        }
    });
    tracing::info!(%local_addr, "RPC listening");
    Ok(RpcHandle {
        local_addr,
        shutdown,
        task: Some(task),
    })
}

// Constant-time comparison, so response timing does not leak the token prefix.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| token_matches(g.as_bytes(), expected.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token: send `Authorization: Bearer <rpc.token>` (proofmesh CLI: --token or PROOFMESH_RPC_TOKEN)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn health() -> &'static str {
    "OK\n"
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode(&state.registry),
    )
        .into_response()
}

/// A JSON-RPC error object.
#[derive(Debug)]
struct RpcErr {
    code: i64,
    message: String,
}

impl RpcErr {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcErr {
            code,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMS, message)
    }
}

impl From<ApiError> for RpcErr {
    fn from(e: ApiError) -> Self {
        RpcErr {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

fn response(id: Value, result: Result<Value, RpcErr>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
        }
    }
}

/// A request, checked for shape. `None` id: a notification (no response).
struct Call {
    id: Option<Value>,
    method: String,
    params: Value,
}

fn parse_call(v: Value) -> Result<Call, (Value, RpcErr)> {
    let Value::Object(mut obj) = v else {
        return Err((
            Value::Null,
            RpcErr::new(codes::INVALID_REQUEST, "a request must be a JSON object"),
        ));
    };
    let id = obj.remove("id");
    let id_or_null = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((
            id_or_null,
            RpcErr::new(codes::INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\""),
        ));
    }
    let Some(Value::String(method)) = obj.remove("method") else {
        return Err((
            id_or_null,
            RpcErr::new(codes::INVALID_REQUEST, "\"method\" must be a string"),
        ));
    };
    Ok(Call {
        id,
        method,
        params: obj.remove("params").unwrap_or(Value::Null),
    })
}

async fn http_rpc(State(state): State<AppState>, body: Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let err = RpcErr::new(codes::PARSE_ERROR, format!("request is not JSON: {e}"));
            return axum::Json(response(Value::Null, Err(err))).into_response();
        }
    };
    let out = match value {
        Value::Array(batch) if batch.is_empty() => Some(response(
            Value::Null,
            Err(RpcErr::new(codes::INVALID_REQUEST, "empty batch")),
        )),
        Value::Array(batch) => {
            let mut out = Vec::new();
            for v in batch {
                if let Some(r) = handle_http_call(&state, v).await {
                    out.push(r);
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        v => handle_http_call(&state, v).await,
    };
    match out {
        Some(v) => axum::Json(v).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn handle_http_call(state: &AppState, v: Value) -> Option<Value> {
    let call = match parse_call(v) {
        Ok(c) => c,
        Err((id, e)) => return Some(response(id, Err(e))),
    };
    let result = if call.method == "pm_subscribeProgress" || call.method == "pm_unsubscribeProgress"
    {
        Err(RpcErr::new(
            codes::NEEDS_WEBSOCKET,
            format!("{} needs a WebSocket connection (ws://...)", call.method),
        ))
    } else {
        dispatch(state, &call.method, call.params).await
    };
    count(state, &call.method, &result);
    call.id.map(|id| response(id, result))
}

fn count(state: &AppState, method: &str, result: &Result<Value, RpcErr>) {
    let Some(m) = &state.metrics else { return };
    let method = match method {
        "pm_submitWorkflow" => "pm_submitWorkflow",
        "pm_status" => "pm_status",
        "pm_subscribeProgress" => "pm_subscribeProgress",
        "pm_unsubscribeProgress" => "pm_unsubscribeProgress",
        "pm_result" => "pm_result",
        "pm_getBlob" => "pm_getBlob",
        "pm_operators" => "pm_operators",
        "pm_nodeInfo" => "pm_nodeInfo",
        "pm_cancelWorkflow" => "pm_cancelWorkflow",
        "pm_listWorkflows" => "pm_listWorkflows",
        "pm_quoteWorkflow" => "pm_quoteWorkflow",
        "pm_tasks" => "pm_tasks",
        _ => "unknown",
    };
    m.rpc_request(method, if result.is_ok() { "ok" } else { "error" });
}

/// Turn positional params into an object by `names`, then deserialize.
fn params<T: for<'de> Deserialize<'de>>(params: Value, names: &[&str]) -> Result<T, RpcErr> {
    let obj = match params {
        Value::Null => Value::Object(Default::default()),
        Value::Array(items) => {
            if items.len() > names.len() {
                return Err(RpcErr::invalid(format!(
                    "expected at most {} positional params ({}), got {}",
                    names.len(),
                    names.join(", "),
                    items.len()
                )));
            }
            Value::Object(names.iter().map(|n| n.to_string()).zip(items).collect())
        }
        v @ Value::Object(_) => v,
        _ => return Err(RpcErr::invalid("params must be an object or an array")),
    };
    serde_json::from_value(obj).map_err(|e| RpcErr::invalid(format!("invalid params: {e}")))
}

fn parse_id(s: &str, what: &str) -> Result<ContentId, RpcErr> {
    s.parse()
        .map_err(|e| RpcErr::invalid(format!("{what}: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitParams {
    workflow: Option<String>,
    format: Option<String>,
    submission: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdParams {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksParams {
    id: String,
    state: Option<String>,
    #[serde(default)]
    retried: bool,
    #[serde(default)]
    from: u32,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuoteParams {
    workflow: String,
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    state: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelParams {
    id: String,
    /// Hex (65 bytes), optional `0x`.
    owner_eth_signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlobParams {
    id: String,
    #[serde(default)]
    offset: u64,
    max_len: Option<usize>,
}

/// Parse and fully validate a workflow file's text; `format` is `toml` or `json` (by default
/// JSON when the text starts with `{`).
pub fn decode_workflow(text: &str, format: Option<&str>) -> Result<Workflow, ApiError> {
    let format = match format.map(str::to_ascii_lowercase).as_deref() {
        None => {
            if text.trim_start().starts_with('{') {
                Format::Json
            } else {
                Format::Toml
            }
        }
        Some("toml") => Format::Toml,
        Some("json") => Format::Json,
        Some(other) => {
            return Err(ApiError::Invalid(format!(
                "unknown format {other:?}: use \"toml\" or \"json\""
            )))
        }
    };
    let (workflow, _summary) = spec::load(text, format)
        .map_err(|e| ApiError::Invalid(format!("invalid workflow: {e}")))?;
    Ok(workflow)
}

/// Decode a submit request: a workflow file's text (TOML or JSON) or a hex-encoded canonical
/// [`Submission`]. Either way the workflow is fully validated here.
pub fn decode_submit(
    workflow: Option<&str>,
    format: Option<&str>,
    submission: Option<&str>,
) -> Result<SubmitRequest, ApiError> {
    match (workflow, submission) {
        (Some(text), None) => Ok(SubmitRequest::Workflow(decode_workflow(text, format)?)),
        (None, Some(hexed)) => {
            let bytes = hex::decode(hexed.trim_start_matches("0x"))
                .map_err(|e| ApiError::Invalid(format!("submission is not hex: {e}")))?;
            let submission: Submission =
                encoding::decode(&bytes).map_err(|e| ApiError::Invalid(format!("submission does not decode: {e}")))?;
            submission.workflow.validate().map_err(|e| ApiError::Invalid(format!("invalid workflow: {e}")))?;
            Ok(SubmitRequest::Submission(Box::new(submission)))
        }
        (Some(_), Some(_)) => Err(ApiError::Invalid("give either \"workflow\" or \"submission\", not both".into())),
        (None, None) => Err(ApiError::Invalid(
            "missing \"workflow\" (the workflow file's text) or \"submission\" (hex of an encoded Submission)".into(),
        )),
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, RpcErr> {
    serde_json::to_value(v)
        .map_err(|e| RpcErr::new(codes::INTERNAL, format!("encoding the response: {e}")))
}

async fn dispatch(state: &AppState, method: &str, raw: Value) -> Result<Value, RpcErr> {
    let api = &state.api;
    match method {
        "pm_submitWorkflow" => {
            let p: SubmitParams = params(raw, &["workflow", "format"])?;
            let request = decode_submit(
                p.workflow.as_deref(),
                p.format.as_deref(),
                p.submission.as_deref(),
            )
            .inspect_err(|_| {
                if let Some(m) = &state.metrics {
                    m.submission("invalid");
                }
            })?;
            to_value(api.submit(request).await?)
        }
        "pm_cancelWorkflow" => {
            let p: CancelParams = params(raw, &["id", "owner_eth_signature"])?;
            let id = parse_id(&p.id, "id")?;
            let signature = match p.owner_eth_signature.as_deref() {
                None => None,
                Some(h) => Some(hex::decode(h.strip_prefix("0x").unwrap_or(h)).map_err(|_| {
                    RpcErr::new(
                        codes::INVALID_PARAMS,
                        format!("owner_eth_signature: {h:?} is not hex"),
                    )
                })?),
            };
            api.cancel(id, signature).await?;
            to_value(serde_json::json!({ "id": id.to_hex(), "sent": true }))
        }
        "pm_status" => {
            let p: IdParams = params(raw, &["id"])?;
            to_value(api.status(parse_id(&p.id, "id")?).await?)
        }
        "pm_result" => {
            let p: IdParams = params(raw, &["id"])?;
            to_value(api.result(parse_id(&p.id, "id")?).await?)
        }
        "pm_getBlob" => {
            let p: BlobParams = params(raw, &["id", "offset", "max_len"])?;
            let id = parse_id(&p.id, "id")?;
            let max_len = p.max_len.unwrap_or(MAX_BLOB_SLICE).min(MAX_BLOB_SLICE);
            let chunk = api.blob(id, p.offset, max_len).await?;
            to_value(BlobSlice {
                id: id.to_hex(),
                total_len: chunk.total_len,
                offset: p.offset.min(chunk.total_len),
                data: hex::encode(&chunk.data),
            })
        }
        "pm_operators" => {
            let _: HashMap<String, Value> = params(raw, &[])?;
            to_value(api.operators().await?)
        }
        "pm_nodeInfo" => {
            let _: HashMap<String, Value> = params(raw, &[])?;
            to_value(api.node_info().await?)
        }
        "pm_quoteWorkflow" => {
            let p: QuoteParams = params(raw, &["workflow", "format"])?;
            let workflow = decode_workflow(&p.workflow, p.format.as_deref())?;
            to_value(api.quote(workflow).await?)
        }
        "pm_tasks" => {
            let p: TasksParams = params(raw, &["id", "state", "retried", "from", "limit"])?;
            let id = parse_id(&p.id, "id")?;
            let query = TaskQuery {
                state: p.state,
                retried: p.retried,
                from: p.from,
                limit: p.limit,
            };
            to_value(api.tasks(id, query).await?)
        }
        "pm_listWorkflows" => {
            let p: ListParams = params(raw, &["state", "limit"])?;
            to_value(
                api.workflows(p.state, p.limit.unwrap_or(DEFAULT_LISTED_WORKFLOWS))
                    .await?,
            )
        }
        other => Err(RpcErr::new(
            codes::METHOD_NOT_FOUND,
            format!("unknown method {other:?}; see docs/rpc.md for the pm_* methods"),
        )),
    }
}

async fn ws_upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_REQUEST_BYTES)
        .on_upgrade(move |socket| ws_session(state, socket))
}

/// One WebSocket connection: requests in order, subscriptions pushed concurrently through one
/// writer task.
async fn ws_session(state: AppState, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let writer = tokio::spawn(async move {
        while let Some(text) = out_rx.recv().await {
            if sink.send(WsMessage::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut subscriptions: HashMap<u64, JoinHandle<()>> = HashMap::new();
    let mut next_sub = 1u64;
    let mut shutdown = state.shutdown.clone();
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let text = match msg {
            Some(Ok(WsMessage::Text(t))) => t.to_string(),
            Some(Ok(WsMessage::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue, // ping/pong: axum answers pings itself
        };
        let reply = match serde_json::from_str::<Value>(&text) {
            Err(e) => Some(response(
                Value::Null,
                Err(RpcErr::new(
                    codes::PARSE_ERROR,
                    format!("request is not JSON: {e}"),
                )),
            )),
            Ok(v) => match parse_call(v) {
                Err((id, e)) => Some(response(id, Err(e))),
                Ok(call) => {
                    let result = match call.method.as_str() {
                        "pm_subscribeProgress" => {
                            match prepare_subscription(&state, call.params).await {
                                Ok(prepared) => {
                                    let sub = next_sub;
                                    next_sub += 1;
                                    count(&state, &call.method, &Ok(Value::Null));
                                    // Queue the reply before the task starts, so it precedes every
                                    // notification on this connection.
                                    if let Some(id) = call.id {
                                        if out_tx
                                            .send(response(id, Ok(json!(sub))).to_string())
                                            .await
                                            .is_err()
                                        {
                                            break;
                                        }
                                    }
                                    let task = run_subscription(
                                        state.api.clone(),
                                        prepared,
                                        sub,
                                        out_tx.clone(),
                                    );
                                    subscriptions.insert(sub, tokio::spawn(task));
                                    continue;
                                }
                                Err(e) => Err(e),
                            }
                        }
                        "pm_unsubscribeProgress" => {
                            #[derive(Deserialize)]
                            #[serde(deny_unknown_fields)]
                            struct P {
                                subscription: u64,
                            }
                            params::<P>(call.params, &["subscription"]).map(|p| match subscriptions
                                .remove(&p.subscription)
                            {
                                Some(h) => {
                                    h.abort();
                                    json!(true)
                                }
                                None => json!(false),
                            })
                        }
                        method => dispatch(&state, method, call.params).await,
                    };
                    count(&state, &call.method, &result);
                    call.id.map(|id| response(id, result))
                }
            },
        };
        if let Some(reply) = reply {
            if out_tx.send(reply.to_string()).await.is_err() {
                break;
            }
        }
    }
    for (_, h) in subscriptions {
        h.abort();
    }
    drop(out_tx);
    let _ = writer.await;
}

struct Prepared {
    id: ContentId,
    changes: broadcast::Receiver<ContentId>,
    first: WorkflowStatus,
}

/// Check a subscription request and read the current status.
async fn prepare_subscription(state: &AppState, raw: Value) -> Result<Prepared, RpcErr> {
    let p: IdParams = params(raw, &["id"])?;
    let id = parse_id(&p.id, "id")?;
    // Subscribe before the first read, so no change between the two is missed.
    let changes = state.api.changes();
    let first = state.api.status(id).await?;
    Ok(Prepared { id, changes, first })
}

/// A progress subscription: the current status at once, then one notification per change,
/// ending after the final (completed or failed) status.
async fn run_subscription(
    api: Arc<dyn NodeApi>,
    prepared: Prepared,
    sub_id: u64,
    out: mpsc::Sender<String>,
) {
    let Prepared {
        id,
        mut changes,
        first,
    } = prepared;
    let notify = |status: &WorkflowStatus| {
        json!({"jsonrpc": "2.0", "method": "pm_progress", "params": {"subscription": sub_id, "result": status}})
            .to_string()
    };
    if out.send(notify(&first)).await.is_err() || first.is_final() {
        return;
    }
    let mut last = first;
    loop {
        match changes.recv().await {
            Ok(changed) if changed != id => continue,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
        // Coalesce a burst of changes into one status read.
        while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = changes.try_recv() {}
        let status = match api.status(id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "progress subscription stopped");
                return;
            }
        };
        if status != last {
            if out.send(notify(&status)).await.is_err() || status.is_final() {
                return;
            }
            last = status;
        }
    }
}
