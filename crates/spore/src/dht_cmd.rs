//! `spore dht`: a standalone DHT node, e.g. a bootstrap node for a private network of peers.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{anyhow, Context};
use clap::Args;

use crate::{CmdResult, Failure};

#[derive(Args)]
pub struct DhtArgs {
    /// UDP address to listen on: IPv4, IPv6 (BEP 32), or `[::]:PORT` for both [default: [::]:6881
    /// where the system has IPv6, else 0.0.0.0:6881]
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Nodes to join through; none makes this the first node of a new network
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    pub bootstrap: Vec<String>,
    /// Keep the routing table in this file across restarts (read at start, written at stop)
    #[arg(long, value_name = "FILE")]
    pub state: Option<std::path::PathBuf>,
}

pub fn run(args: DhtArgs) -> CmdResult {
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::new(crate::opts::any_ip(), 6881));
    let bind = listen.ip();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .map_err(Failure::Failed)?;
    rt.block_on(async move {
        let saved = args.state.as_ref().is_some_and(|f| f.exists());
        let node = if args.bootstrap.is_empty() && !saved {
            engine::dht::DhtNode::start_alone(bind, listen.port()).await
        } else {
            let config = engine::dht::DhtConfig {
                bind,
                port: listen.port(),
                bootstrap: args.bootstrap.clone(),
                state_file: args.state.clone(),
            };
            engine::dht::DhtNode::start(&config).await
        }
        .map_err(|e| Failure::Failed(anyhow!("cannot start the DHT node: {e}")))?;
        let mut signals = crate::get_cmd::Signals::new();
        if !args.bootstrap.is_empty() || saved {
            // Ready means joined: the first lookup through the bootstrap nodes has finished.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(30), node.bootstrapped()).await;
        }
        let addr = node.local_addr().await;
        println!("dht: node on {addr}");
        if let Some(v6) = node.local_addr_v6().filter(|_| addr.is_ipv4()) {
            println!("dht: IPv6 node on {v6}");
        }
        let _ = std::io::stdout().flush();
        signals.recv().await;
        node.save_to(args.state.as_deref()).await;
        println!(
            "dht: stopped with {} nodes in the routing table",
            node.routing_table_size().await
        );
        Ok(())
    })
}
