//! A small JSON-RPC client over one WebSocket: what the CLI (`proofmesh submit/status/result/
//! operators`) and tests use. Calls are sequential; notifications that arrive while waiting for
//! a response are queued for [`RpcClient::next_notification`]. One WebSocket for both calls and
//! subscriptions means no separate HTTP client dependency.

use super::api::{
    BlobSlice, NodeInfo, OperatorInfo, Quote, ResultInfo, SubmitOutcome, TaskInfo, TaskQuery,
    WorkflowListing, WorkflowStatus,
};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::VecDeque;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect or upgrade.
    #[error("cannot connect to the node's RPC at {url}: {reason} (is the node running? set --rpc or PROOFMESH_RPC)")]
    Connect {
        /// The URL tried.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The node answered with a JSON-RPC error.
    #[error("{message} (JSON-RPC error {code})")]
    Rpc {
        /// Error code (see `rpc::codes`).
        code: i64,
        /// The node's message.
        message: String,
    },
    /// The connection broke or the node sent something that is not JSON-RPC.
    #[error("RPC connection: {0}")]
    Protocol(String),
}

/// A progress notification.
#[derive(Clone, Debug)]
pub struct Notification {
    /// Subscription id it belongs to.
    pub subscription: u64,
    /// The payload (`result`).
    pub result: Value,
}

/// JSON-RPC over one WebSocket connection.
pub struct RpcClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    notifications: VecDeque<Notification>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("next_id", &self.next_id)
            .finish()
    }
}

/// `http://host:port` (what users type) -> `ws://host:port/`.
pub fn ws_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}/")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}/")
    } else if url.starts_with("ws://") || url.starts_with("wss://") {
        format!("{url}/")
    } else {
        format!("ws://{url}/")
    }
}

impl RpcClient {
    /// Connect to `url` (`http://`, `ws://` or bare `host:port`), sending `token` as a bearer
    /// token when given.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<RpcClient, ClientError> {
        let target = ws_url(url);
        let err = |reason: String| ClientError::Connect {
            url: url.to_owned(),
            reason,
        };
        let mut request = target
            .as_str()
            .into_client_request()
            .map_err(|e| err(e.to_string()))?;
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                err("the token contains characters not allowed in an HTTP header".into())
            })?;
            request.headers_mut().insert("authorization", value);
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(RpcClient {
            ws,
            next_id: 1,
            notifications: VecDeque::new(),
        })
    }

    async fn read(&mut self) -> Result<Value, ClientError> {
        loop {
            let msg = self
                .ws
                .next()
                .await
                .ok_or_else(|| ClientError::Protocol("the node closed the connection".into()))?
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                Message::Close(_) => {
                    return Err(ClientError::Protocol(
                        "the node closed the connection".into(),
                    ))
                }
                _ => continue,
            };
            return serde_json::from_str(&text)
                .map_err(|e| ClientError::Protocol(format!("reply is not JSON: {e}")));
        }
    }

    fn as_notification(v: &Value) -> Option<Notification> {
        if v.get("id").is_some() {
            return None;
        }
        let params = v.get("params")?;
        Some(Notification {
            subscription: params.get("subscription")?.as_u64()?,
            result: params.get("result")?.clone(),
        })
    }

    /// Call `method` and decode its result.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<T, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(request.to_string()))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        loop {
            let v = self.read().await?;
            if let Some(n) = Self::as_notification(&v) {
                self.notifications.push_back(n);
                continue;
            }
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                continue; // a reply to nothing we are waiting for
            }
            if let Some(err) = v.get("error") {
                return Err(ClientError::Rpc {
                    code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: err
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                        .to_owned(),
                });
            }
            let result = v.get("result").cloned().unwrap_or(Value::Null);
            return serde_json::from_value(result)
                .map_err(|e| ClientError::Protocol(format!("unexpected {method} result: {e}")));
        }
    }

    /// The next subscription notification.
    pub async fn next_notification(&mut self) -> Result<Notification, ClientError> {
        if let Some(n) = self.notifications.pop_front() {
            return Ok(n);
        }
        loop {
            let v = self.read().await?;
            if let Some(n) = Self::as_notification(&v) {
                return Ok(n);
            }
        }
    }

    /// `pm_submitWorkflow` with a workflow file's text; `format` is `toml` or `json`.
    pub async fn submit_workflow(
        &mut self,
        text: &str,
        format: &str,
    ) -> Result<SubmitOutcome, ClientError> {
        self.call(
            "pm_submitWorkflow",
            json!({"workflow": text, "format": format}),
        )
        .await
    }

    /// `pm_status`.
    pub async fn status(&mut self, id: &str) -> Result<WorkflowStatus, ClientError> {
        self.call("pm_status", json!({ "id": id })).await
    }

    /// `pm_cancelWorkflow`: cancel a workflow for its requester (`owner_eth_signature`: the
    /// paying account's signature; `None`: the node owns the workflow).
    pub async fn cancel(
        &mut self,
        id: &str,
        owner_eth_signature: Option<&[u8]>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut params = json!({ "id": id });
        if let Some(sig) = owner_eth_signature {
            params["owner_eth_signature"] = json!(format!("0x{}", hex::encode(sig)));
        }
        self.call("pm_cancelWorkflow", params).await
    }

    /// `pm_subscribeProgress`: returns the subscription id; statuses arrive as notifications.
    pub async fn subscribe_progress(&mut self, id: &str) -> Result<u64, ClientError> {
        self.call("pm_subscribeProgress", json!({ "id": id })).await
    }

    /// The next `pm_progress` status.
    pub async fn next_progress(&mut self) -> Result<WorkflowStatus, ClientError> {
        let n = self.next_notification().await?;
        serde_json::from_value(n.result)
            .map_err(|e| ClientError::Protocol(format!("bad progress notification: {e}")))
    }

    /// `pm_result`.
    pub async fn result(&mut self, id: &str) -> Result<ResultInfo, ClientError> {
        self.call("pm_result", json!({ "id": id })).await
    }

    /// A whole blob through repeated `pm_getBlob`, verified against its blake3 id.
    pub async fn fetch_blob(&mut self, id: &str) -> Result<Vec<u8>, ClientError> {
        let mut data = Vec::new();
        loop {
            let slice: BlobSlice = self
                .call("pm_getBlob", json!({"id": id, "offset": data.len() as u64}))
                .await?;
            let bytes = hex::decode(&slice.data)
                .map_err(|e| ClientError::Protocol(format!("blob data is not hex: {e}")))?;
            let done = bytes.is_empty();
            data.extend_from_slice(&bytes);
            if data.len() as u64 >= slice.total_len {
                break;
            }
            if done {
                return Err(ClientError::Protocol(format!(
                    "blob {id} ended early at {} bytes",
                    data.len()
                )));
            }
        }
        let actual = blake3::hash(&data).to_hex().to_string();
        if !id.trim_start_matches("0x").eq_ignore_ascii_case(&actual) {
            return Err(ClientError::Protocol(format!(
                "blob {id} arrived with hash {actual}: corrupt"
            )));
        }
        Ok(data)
    }

    /// `pm_operators`.
    pub async fn operators(&mut self) -> Result<Vec<OperatorInfo>, ClientError> {
        self.call("pm_operators", json!({})).await
    }

    /// `pm_quoteWorkflow`: what a workflow file's text (`format`: `toml` or `json`) would cost
    /// at the asks of the operators the node saw lately, and which stages none could run.
    pub async fn quote(&mut self, text: &str, format: &str) -> Result<Quote, ClientError> {
        self.call(
            "pm_quoteWorkflow",
            json!({ "workflow": text, "format": format }),
        )
        .await
    }

    /// `pm_tasks`: the tasks of workflow `id` that `query` selects (one page), with their failed
    /// attempts and why they failed.
    pub async fn tasks(
        &mut self,
        id: &str,
        query: &TaskQuery,
    ) -> Result<Vec<TaskInfo>, ClientError> {
        let mut params = serde_json::to_value(query)
            .map_err(|e| ClientError::Protocol(format!("encoding the query: {e}")))?;
        params["id"] = json!(id);
        self.call("pm_tasks", params).await
    }

    /// `pm_listWorkflows`: newest first, at most `limit`, only those in `state` when given.
    pub async fn workflows(
        &mut self,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<WorkflowListing>, ClientError> {
        self.call(
            "pm_listWorkflows",
            json!({ "state": state, "limit": limit }),
        )
        .await
    }

    /// `pm_nodeInfo`.
    pub async fn node_info(&mut self) -> Result<NodeInfo, ClientError> {
        self.call("pm_nodeInfo", json!({})).await
    }
}
