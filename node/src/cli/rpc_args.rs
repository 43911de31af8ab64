//! Flags shared by the RPC client commands (`submit`, `status`, `result`, `operators`).

use anyhow::Context;
use clap::Args;
use proofmesh_node::rpc::RpcClient;

/// Where the node's RPC is.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "RPC client")]
pub struct RpcArgs {
    /// The node's RPC URL (http://, ws:// or host:port). Default port 7545.
    #[arg(
        long,
        env = "PROOFMESH_RPC",
        default_value = "http://127.0.0.1:7545",
        value_name = "URL"
    )]
    pub rpc: String,
    /// Bearer token, when the node sets rpc.token.
    #[arg(
        long,
        env = "PROOFMESH_RPC_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl RpcArgs {
    /// Connect.
    pub async fn connect(&self) -> anyhow::Result<RpcClient> {
        RpcClient::connect(&self.rpc, self.token.as_deref())
            .await
            .context("connecting to the node")
    }
}

/// A current-thread runtime for one client command.
pub fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}
