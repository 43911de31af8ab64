//! `proofmesh node --config FILE`: run one peer (configuration from the file, then
//! `PROOFMESH_*` environment variables, then flags) until Ctrl-C or SIGTERM.

use anyhow::Context;
use proofmesh_node::config::{NodeArgs, NodeConfig};
use proofmesh_node::runtime::{Node, NodeOptions};
use std::process::ExitCode;

/// Run it.
pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config = NodeConfig::load(&args).context("node configuration")?;
    // `load` validated the filter.
    super::init_logging(&config.log.filter);
    let mut options = NodeOptions::from_config(&config).context("node configuration")?;
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        // On-chain settlement: connect (chain id checked), register + stake an operator.
        let settlement = proofmesh_node::chain::prepare(&config, &mut options)
            .await
            .context("on-chain settlement ([chain] section)")?;
        let node = match &settlement {
            Some(s) => Node::spawn_with(options, s.clone()).await,
            None => Node::spawn(options).await,
        }
        .context("starting the node")?;
        if let Some(s) = &settlement {
            s.attach_store(node.api().store().clone());
        }
        let addrs: Vec<String> = node.listen_addrs().iter().map(|a| a.to_string()).collect();
        // One line for scripts: who this node is and where it listens.
        println!(
            "node started key={} peer={} p2p={} rpc={}",
            node.public_key(),
            node.peer_id(),
            addrs.join(","),
            node.rpc_addr()
                .map(|a| format!("http://{a}"))
                .unwrap_or_else(|| "off".into())
        );
        wait_for_signal().await?;
        tracing::info!("shutting down");
        node.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
