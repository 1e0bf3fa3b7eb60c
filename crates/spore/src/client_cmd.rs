//! `spore add`, `list`, `pause`, `resume`, `remove`, `web`: talk to a running `spore daemon` over its API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::format::size;
use crate::{CmdResult, Failure};

#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The daemon's API address
    #[arg(
        long,
        value_name = "IP:PORT",
        default_value = "127.0.0.1:9091",
        global = true
    )]
    pub api: SocketAddr,
    /// The daemon's state directory, to read the API token from [default: as the daemon's]
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// The API token (instead of reading it from the state directory)
    #[arg(long, global = true)]
    pub token: Option<String>,
}

#[derive(Args)]
pub struct AddArgs {
    /// A .torrent file, an http:// URL of one, or a magnet link
    pub source: String,
    /// Download directory [default: the daemon's]
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Add it paused
    #[arg(long)]
    pub paused: bool,
    /// A label to give it; repeat for more
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args)]
pub struct IdArgs {
    /// Torrent id (info-hash) or a unique prefix of it
    pub id: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args)]
pub struct RemoveArgs {
    /// Torrent id (info-hash) or a unique prefix of it
    pub id: String,
    /// Delete the torrent's downloaded files too
    #[arg(long)]
    pub delete_data: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args)]
pub struct WebArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

struct Client {
    addr: SocketAddr,
    token: String,
}

impl Client {
    fn new(args: &ApiArgs) -> Result<Client, Failure> {
        let token = match &args.token {
            Some(t) => t.clone(),
            None => {
                let dir = args
                    .state_dir
                    .clone()
                    .unwrap_or_else(|| crate::opts::state_dir(None).join("daemon"));
                let path = dir.join("api-token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "cannot read the API token from {} (is the daemon's --state-dir elsewhere? use --state-dir or --token)",
                            path.display()
                        )
                    })
                    .map_err(Failure::BadInput)?
                    .trim()
                    .to_string()
            }
        };
        Ok(Client {
            addr: args.api,
            token,
        })
    }

    /// One HTTP/1.1 request; returns the JSON body, or the API's error as a failure.
    fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, Failure> {
        let (status, body) = self
            .exchange(method, path, content_type, body)
            .with_context(|| format!("cannot reach the daemon at {}", self.addr))
            .map_err(Failure::Failed)?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|_| Failure::Failed(anyhow!("the daemon answered {status} without JSON")))?;
        if status >= 400 {
            let message = value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string();
            return Err(if status < 500 {
                Failure::BadInput(anyhow!("{message}"))
            } else {
                Failure::Failed(anyhow!("{message}"))
            });
        }
        Ok(value)
    }

    fn exchange(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let auth = format!("Bearer {}", self.token);
        let request = engine::ApiRequest {
            addr: self.addr,
            method,
            path,
            headers: &[("Authorization", &auth), ("Content-Type", content_type)],
            body,
            max_len: 64 << 20,
            timeout: Duration::from_secs(60),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(engine::api_request(&request))?)
    }

    /// The full id of the torrent `prefix` names.
    fn resolve(&self, prefix: &str) -> Result<String, Failure> {
        let prefix = prefix.to_ascii_lowercase();
        let list = self.call("GET", "/api/torrents", "application/json", b"")?;
        let ids: Vec<String> = list["torrents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["id"].as_str())
            .filter(|id| id.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Failure::BadInput(anyhow!("no torrent with id {prefix}"))),
            _ => Err(Failure::BadInput(anyhow!(
                "{prefix} names {} torrents",
                ids.len()
            ))),
        }
    }
}

fn print_torrent_line(t: &Value) {
    let rate = |k: &str| size(t[k].as_f64().unwrap_or(0.0) as u64);
    println!(
        "{}  {:>5.1}%  {:<17}  {:>10}  down {:>9}/s  up {:>9}/s  peers {:>3}  {}",
        &t["id"].as_str().unwrap_or("")[..8.min(t["id"].as_str().unwrap_or("").len())],
        t["progress"].as_f64().unwrap_or(0.0) * 100.0,
        t["state"].as_str().unwrap_or(""),
        size(t["size"].as_u64().unwrap_or(0)),
        rate("download_rate"),
        rate("upload_rate"),
        t["peers"].as_u64().unwrap_or(0),
        t["name"].as_str().unwrap_or(""),
    );
    let labels: Vec<&str> = t["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !labels.is_empty() {
        println!("          labels: {}", labels.join(", "));
    }
    if let Some(error) = t["error"].as_str() {
        println!("          error: {error}");
    }
}

fn output(v: &Value, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print_torrent_line(v);
    }
}

pub fn add(args: AddArgs) -> CmdResult {
    let client = Client::new(&args.api)?;
    let src = &args.source;
    let mut request = if src.starts_with("magnet:") {
        json!({ "magnet": src })
    } else if src.starts_with("http://") || src.starts_with("https://") {
        json!({ "url": src })
    } else {
        let bytes = std::fs::read(src)
            .with_context(|| format!("cannot read {src}"))
            .map_err(Failure::BadInput)?;
        json!({ "torrent_base64": data_encoding::BASE64.encode(&bytes) })
    };
    if let Some(dir) = &args.output {
        let dir = std::path::absolute(dir)
            .with_context(|| format!("bad directory {}", dir.display()))
            .map_err(Failure::BadInput)?;
        request["download_dir"] = json!(dir);
    }
    request["paused"] = json!(args.paused);
    if !args.labels.is_empty() {
        request["labels"] = json!(args.labels);
    }
    let v = client.call(
        "POST",
        "/api/torrents",
        "application/json",
        request.to_string().as_bytes(),
    )?;
    output(&v, args.json);
    Ok(())
}

pub fn list(args: ListArgs) -> CmdResult {
    let client = Client::new(&args.api)?;
    let v = client.call("GET", "/api/torrents", "application/json", b"")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for t in v["torrents"].as_array().into_iter().flatten() {
            print_torrent_line(t);
        }
    }
    Ok(())
}

pub fn pause(args: IdArgs) -> CmdResult {
    let client = Client::new(&args.api)?;
    let id = client.resolve(&args.id)?;
    let v = client.call(
        "POST",
        &format!("/api/torrents/{id}/pause"),
        "application/json",
        b"",
    )?;
    output(&v, args.json);
    Ok(())
}

pub fn resume(args: IdArgs) -> CmdResult {
    let client = Client::new(&args.api)?;
    let id = client.resolve(&args.id)?;
    let v = client.call(
        "POST",
        &format!("/api/torrents/{id}/resume"),
        "application/json",
        b"",
    )?;
    output(&v, args.json);
    Ok(())
}

pub fn remove(args: RemoveArgs) -> CmdResult {
    let client = Client::new(&args.api)?;
    let id = client.resolve(&args.id)?;
    let v = client.call(
        "DELETE",
        &format!("/api/torrents/{id}?delete_data={}", args.delete_data),
        "application/json",
        b"",
    )?;
    if args.json {
        println!("{v}");
    } else {
        println!("removed {id}");
    }
    Ok(())
}

/// Prints a one-time login link to the daemon's web page. Asking for it takes the API token, so only
/// who can read the token file (or was given it) gets one.
pub fn web(args: WebArgs) -> CmdResult {
    let client = Client::new(&args.api)?;
    let v = client.call("POST", "/api/login-link", "application/json", b"")?;
    let path = v["path"]
        .as_str()
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| Failure::Failed(anyhow!("the daemon answered without a login link")))?;
    println!("http://{}{path}", crate::daemon::link_host(args.api.api));
    eprintln!(
        "open it in a browser: it works once, within {} s",
        v["expires_in"].as_u64().unwrap_or(0)
    );
    Ok(())
}
