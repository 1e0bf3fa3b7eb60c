//! `spore`: create, inspect and verify torrents (and, as the other layers land, track, download and seed).

mod client_cmd;
mod create_cmd;
mod daemon;
mod dht_cmd;
mod format;
mod get_cmd;
mod info_cmd;
mod opts;
mod port_mapping;
mod progress;
mod share_cmd;
mod tracker_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// How a command failed. Bad input (a malformed torrent, an impossible option) exits with 2, other
/// failures (I/O, data that does not verify) with 1.
pub enum Failure {
    BadInput(anyhow::Error),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

impl Failure {
    /// A failure (exit 1) from any error type, such as the engine's and the tracker's typed ones.
    pub fn failed(e: impl Into<anyhow::Error>) -> Failure {
        Failure::Failed(e.into())
    }
}

pub type CmdResult = Result<(), Failure>;

#[derive(Parser)]
#[command(
    name = "spore",
    version,
    about = "Spore: share files over BitTorrent",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a .torrent for a file or directory
    Create(CreateArgs),
    /// Show everything in a .torrent
    Info(InfoArgs),
    /// Check data on disk against a .torrent and report bad pieces and files
    Verify(VerifyArgs),
    /// Print a .torrent's magnet link
    Magnet(MagnetArgs),
    /// Run a BitTorrent tracker (HTTP + UDP), open or private
    Tracker(tracker_cmd::TrackerArgs),
    /// Download a torrent, then keep seeding it
    Get(get_cmd::GetArgs),
    /// Seed data you already have
    Seed(get_cmd::SeedArgs),
    /// Share a file or directory: make a torrent, run a tracker for it, seed it, print the magnet link
    Share(share_cmd::ShareArgs),
    /// Run a standalone DHT node (a bootstrap node for your own peers)
    Dht(dht_cmd::DhtArgs),
    /// Run the long-lived client: many torrents, resumable, with a JSON API and a web page
    Daemon(daemon::DaemonArgs),
    /// Add a torrent (.torrent file, URL or magnet link) to a running daemon
    Add(client_cmd::AddArgs),
    /// List a running daemon's torrents
    List(client_cmd::ListArgs),
    /// Pause a torrent in a running daemon
    Pause(client_cmd::IdArgs),
    /// Resume a paused torrent in a running daemon
    Resume(client_cmd::IdArgs),
    /// Remove a torrent from a running daemon (and its data with --delete-data)
    Remove(client_cmd::RemoveArgs),
    /// Print a one-time login link to a running daemon's web page
    Web(client_cmd::WebArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// File or directory to share
    pub path: PathBuf,
    /// Where to write the torrent [default: NAME.torrent in the current directory]
    #[arg(short, long, value_name = "OUT.torrent")]
    pub output: Option<PathBuf>,
    /// Tracker announce URL; repeat for more (each its own tier unless --tier)
    #[arg(short = 't', long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Put all trackers in one tier (BEP 12), so a client picks among them instead of falling back in order
    #[arg(long)]
    pub tier: bool,
    /// Mark the torrent private (BEP 27): peers only from its trackers, no DHT or PEX
    #[arg(long)]
    pub private: bool,
    /// Piece size: "auto" (about 1000–2000 pieces, 16 KiB..16 MiB) or bytes, e.g. 262144, 256K, 4M
    #[arg(long, value_name = "auto|BYTES", default_value = "auto")]
    pub piece_length: String,
    /// Web seed URL (BEP 19); repeatable
    #[arg(long = "web-seed", value_name = "URL")]
    pub web_seeds: Vec<String>,
    #[arg(long)]
    pub comment: Option<String>,
    /// Source tag (makes the info-hash unique to a site)
    #[arg(long)]
    pub source: Option<String>,
    /// Torrent name [default: the file or directory name]
    #[arg(long)]
    pub name: Option<String>,
    /// Leave out the creation date (reproducible output)
    #[arg(long)]
    pub no_date: bool,
    /// Leave out "created by"
    #[arg(long)]
    pub no_creator: bool,
    /// Version 1 torrent (BEP 3), the default: every client reads it
    #[arg(long, group = "format")]
    pub v1: bool,
    /// Version 2 torrent (BEP 52): SHA-256 merkle trees, per-file hashes
    #[arg(long, group = "format")]
    pub v2: bool,
    /// Hybrid v1 + v2 torrent (BEP 52 with BEP 47 pad files): readable by v1 and v2 clients
    #[arg(long, group = "format")]
    pub hybrid: bool,
    /// Include files and directories whose names start with "."
    #[arg(long)]
    pub include_hidden: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct InfoArgs {
    pub torrent: PathBuf,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    pub torrent: PathBuf,
    /// The data: the directory that holds the torrent's content, or the content itself
    pub path: PathBuf,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct MagnetArgs {
    pub torrent: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPORE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Once, before anything opens files or sockets: every connection cap is fitted into this limit.
    match engine::raise_nofile_limit() {
        Ok(limit) => tracing::debug!("open-file limit {limit}"),
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
    let result = match cli.command {
        Command::Create(args) => create_cmd::run(args),
        Command::Info(args) => info_cmd::info(args),
        Command::Verify(args) => info_cmd::verify(args),
        Command::Magnet(args) => info_cmd::magnet(args),
        Command::Tracker(args) => tracker_cmd::run(args),
        Command::Get(args) => get_cmd::get(args),
        Command::Seed(args) => get_cmd::seed(args),
        Command::Share(args) => share_cmd::run(args),
        Command::Dht(args) => dht_cmd::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Add(args) => client_cmd::add(args),
        Command::List(args) => client_cmd::list(args),
        Command::Pause(args) => client_cmd::pause(args),
        Command::Resume(args) => client_cmd::resume(args),
        Command::Remove(args) => client_cmd::remove(args),
        Command::Web(args) => client_cmd::web(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(e)) => {
            eprintln!("spore: error: {}", one_line(&e));
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("spore: error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}
