//! `spore tracker`: run the tracker server, and manage a private tracker's users.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use tracker::{Config, Mode};

use crate::{CmdResult, Failure};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TrackerArgs {
    #[command(subcommand)]
    pub command: Option<TrackerCommand>,
    /// HTTP listen address ("off" to disable) [default: 0.0.0.0:6969]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// HTTPS listen address, same routes as HTTP (needs --tls-cert and --tls-key) [default: off]
    #[arg(long, value_name = "ADDR")]
    pub https: Option<String>,
    /// PEM certificate chain for --https, the server's certificate first
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --https
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// UDP listen address ("off" to disable) [default: 0.0.0.0:6969]
    #[arg(long, value_name = "ADDR")]
    pub udp: Option<String>,
    /// TOML file with tracker settings (see docs/tracker.md); flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// open, allow (only listed info-hashes), deny (all but listed), private (passkeys)
    #[arg(long)]
    pub mode: Option<String>,
    /// Info-hash list for allow/deny modes (one hex hash per line); re-read on SIGHUP
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// User database for private mode
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Share swarms with other tracker nodes through a Redis Cluster: redis://HOST:PORT[,HOST:PORT...]
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
}

#[derive(Subcommand)]
pub enum TrackerCommand {
    /// Manage the users of a private tracker
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Add a user and print their passkey
    Add {
        name: String,
        #[command(flatten)]
        users: UsersAt,
    },
    /// Revoke a user (by name or passkey)
    Revoke {
        who: String,
        #[command(flatten)]
        users: UsersAt,
    },
    /// List users with their upload and download totals
    List {
        #[command(flatten)]
        users: UsersAt,
        #[arg(long)]
        json: bool,
    },
}

/// Where the users are: a node's database file, or the cluster the nodes share.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct UsersAt {
    /// The user database of a single tracker
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// The Redis Cluster of tracker nodes started with --cluster: redis://HOST:PORT[,HOST:PORT...]
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
}

/// Runs `f` on a connection to the users' cluster.
fn on_cluster<T>(
    spec: &str,
    f: impl AsyncFnOnce(&tracker::cluster::Cluster) -> Result<T, tracker::Error>,
) -> Result<T, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let cluster = tracker::cluster::Cluster::connect(
            spec,
            tracker::cluster::Fallback::Refuse,
            0,
            0,
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|e| Failure::Failed(e.into()))?;
        f(&cluster).await.map_err(Failure::failed)
    })
}

fn bad(e: impl Into<anyhow::Error>) -> Failure {
    Failure::BadInput(e.into())
}

fn listen(value: String) -> String {
    if value == "off" {
        String::new()
    } else {
        value
    }
}

pub fn run(args: TrackerArgs) -> CmdResult {
    if let Some(TrackerCommand::User { action }) = args.command {
        return users(action);
    }
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))
                .map_err(bad)?;
            Config::from_toml(&text)
                .with_context(|| format!("{}", path.display()))
                .map_err(bad)?
        }
        None => Config::default(),
    };
    if let Some(http) = args.http {
        config.http = listen(http);
    }
    if let Some(https) = args.https {
        config.https = listen(https);
    }
    if args.tls_cert.is_some() {
        config.tls_cert = args.tls_cert;
    }
    if args.tls_key.is_some() {
        config.tls_key = args.tls_key;
    }
    if let Some(udp) = args.udp {
        config.udp = listen(udp);
    }
    if let Some(mode) = args.mode {
        config.mode = match mode.as_str() {
            "open" => Mode::Open,
            "allow" => Mode::Allow,
            "deny" => Mode::Deny,
            "private" => Mode::Private,
            other => return Err(bad(anyhow!("unknown mode {other:?}"))),
        };
    }
    if args.list.is_some() {
        config.list = args.list;
    }
    if args.db.is_some() {
        config.db = args.db;
    }
    if let Some(cluster) = args.cluster {
        config.cluster = cluster;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> CmdResult {
    use tokio::signal::unix::{signal, SignalKind};
    let running = tracker::start(config).await.map_err(bad)?;
    // Handlers before the ready lines, so a signal sent as soon as they appear is handled.
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    {
        let mut out = std::io::stdout().lock();
        if let Some(a) = running.http_addr {
            let _ = writeln!(out, "tracker: HTTP on http://{a}/announce");
        }
        if let Some(a) = running.https_addr {
            let _ = writeln!(out, "tracker: HTTPS on https://{a}/announce");
        }
        if let Some(a) = running.udp_addr {
            let _ = writeln!(out, "tracker: UDP on udp://{a}/announce");
        }
        let _ = writeln!(
            out,
            "tracker: mode {:?}; stats at /stats, metrics at /metrics",
            running.state.config.mode
        );
        let _ = out.flush();
    }
    loop {
        tokio::select! {
            _ = hup.recv() => match running.reload() {
                Ok(()) => println!("tracker: reloaded"),
                Err(e) => eprintln!("spore: reload failed, keeping the old lists: {e:#}"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    running.shutdown().await;
    println!("tracker: stopped");
    Ok(())
}

fn users(action: UserAction) -> CmdResult {
    match action {
        UserAction::Add { name, users } => {
            let passkey = match (&users.db, &users.cluster) {
                (_, Some(spec)) => {
                    on_cluster(spec, async |c| tracker::cluster::add_user(c, &name).await)?
                }
                (Some(db), None) => tracker::add_user(db, &name).map_err(Failure::failed)?,
                (None, None) => return Err(bad(anyhow!("--db or --cluster"))),
            };
            println!("{passkey}");
            eprintln!("announce URLs: http://HOST:6969/announce/{passkey} and udp://HOST:6969/announce/{passkey}");
        }
        UserAction::Revoke { who, users } => {
            let found = match (&users.db, &users.cluster) {
                (_, Some(spec)) => {
                    on_cluster(spec, async |c| tracker::cluster::revoke_user(c, &who).await)?
                }
                (Some(db), None) => tracker::revoke_user(db, &who).map_err(Failure::failed)?,
                (None, None) => return Err(bad(anyhow!("--db or --cluster"))),
            };
            if !found {
                return Err(bad(anyhow!("no user {who:?}")));
            }
            println!("revoked {who}");
        }
        UserAction::List { users, json } => {
            let users = match (&users.db, &users.cluster) {
                (_, Some(spec)) => {
                    on_cluster(spec, async |c| tracker::cluster::list_users(c).await)?
                }
                (Some(db), None) => tracker::list_users(db).map_err(Failure::failed)?,
                (None, None) => return Err(bad(anyhow!("--db or --cluster"))),
            };
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| {
                        serde_json::json!({"name": u.name, "passkey": u.passkey, "uploaded": u.uploaded, "downloaded": u.downloaded})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for u in users {
                    println!(
                        "{}\t{}\tup {}\tdown {}",
                        u.name, u.passkey, u.uploaded, u.downloaded
                    );
                }
            }
        }
    }
    Ok(())
}
