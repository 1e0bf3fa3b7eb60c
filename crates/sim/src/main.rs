//! `spore-sim`: runs the scenarios of BENCHMARKS.md's "Swarm simulator" section, printing a table and
//! writing a CSV file and an SVG chart for each into the output directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use spore_sim::report::{line_chart, Chart, Series, Table};
use spore_sim::scenarios::{
    completions, crowd_figures, departure, flash_crowd, mean, more_seeds, quantile, run, run_all,
    Scale, DOWN, SEED_UP,
};
use spore_sim::sim::secs;
use spore_sim::MIB;

#[derive(Parser)]
#[command(about = "Swarm simulator: many TorrentCores over a simulated network in virtual time")]
struct Cli {
    /// Same seed, same figures.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pieces of 256 KiB (4096: 1 GiB).
    #[arg(long, default_value_t = 4096)]
    pieces: u32,
    /// Leechers of the flash crowd, or newcomers of `seeds`.
    #[arg(long, default_value_t = 1000)]
    leechers: usize,
    /// Runs at once for the scenarios made of several runs.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Threads each run may use: the peers of each window of virtual time are split between them
    /// (same figures however many).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Connections per peer (the engine's default is 50): the `Have` fan-out, so most of a run's events.
    #[arg(long, default_value_t = 50)]
    max_peers: usize,
    /// Milliseconds a peer's `Have`s wait on a connection to leave together (0: each at once, one
    /// event each; see the crate documentation).
    #[arg(long, default_value_t = spore_sim::config::DEFAULT_HAVE_BATCH.as_millis() as u64)]
    have_batch_ms: u64,
    /// Mean upload of the flash crowd's leechers in MiB/s (half of them at 0.5x, half at 1.5x).
    #[arg(long, default_value_t = 4.0)]
    leecher_up: f64,
    /// Where the CSV and SVG files go.
    #[arg(long, default_value = "docs/sim")]
    out: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone, Copy)]
enum Scenario {
    /// 1: newcomers' download time with 1, 2, 4, …, 64 seeds.
    Seeds,
    /// 2: one seed and a flash crowd arriving within a minute, against the fluid bound.
    Flash,
    /// 3: the seed leaves once a full copy is out among the leechers.
    Departure,
    /// 4: choker settings (upload slots, optimistic unchoke interval) on the flash crowd.
    Choker,
    /// All four.
    All,
}

/// The environment variable that asks glibc's malloc for transparent huge pages.
const TUNABLES: &str = "GLIBC_TUNABLES";

/// Runs this binary again with glibc's malloc asking for transparent huge pages
/// (`glibc.malloc.hugetlb=1`), unless `GLIBC_TUNABLES` is set already (to anything: set it empty to
/// run without). A large run touches a few hundred MB at random (a `Have` lands in one of 1 000 cores at
/// a random piece), and with 4 KiB pages most of those touches missed the TLB as well as the cache:
/// huge pages took a fifth off the CPU time of a 250-peer run. Where the system's THP mode is
/// `never`, or the libc is not glibc, the variable does nothing. Returns only if the exec failed.
#[cfg(unix)]
fn rerun_with_huge_pages() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(TUNABLES).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(TUNABLES, "glibc.malloc.hugetlb=1")
        .exec();
    eprintln!("running without huge pages: {err}");
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    #[cfg(unix)]
    rerun_with_huge_pages();
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let scale = Scale {
        seed: cli.seed,
        pieces: cli.pieces,
        leechers: cli.leechers,
        jobs: cli.jobs,
        threads: cli.threads,
        max_peers: cli.max_peers,
        leecher_up: cli.leecher_up,
        have_batch: Duration::from_millis(cli.have_batch_ms),
    };
    let out = cli.out.as_path();
    match cli.scenario {
        Scenario::Seeds => seeds(&scale, out),
        Scenario::Flash => flash(&scale, out),
        Scenario::Departure => leave(&scale, out),
        Scenario::Choker => choker(&scale, out),
        Scenario::All => {
            flash(&scale, out)?;
            leave(&scale, out)?;
            seeds(&scale, out)?;
            choker(&scale, out)
        }
    }
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}

fn f2(x: f64) -> String {
    format!("{x:.2}")
}

fn finish(name: &str, out: &Path, table: &Table) -> Result<()> {
    print!("{}", table.text());
    table.write_csv(&out.join(format!("{name}.csv")))?;
    println!("wrote {0}/{name}.csv and {0}/{name}.svg\n", out.display());
    Ok(())
}

fn seeds(scale: &Scale, out: &Path) -> Result<()> {
    println!(
        "# 1. more seeds, faster newcomers ({} newcomers, {} pieces)",
        scale.leechers, scale.pieces
    );
    let counts = [1usize, 2, 4, 8, 16, 32, 64];
    let started = Instant::now();
    let runs = run_all(
        counts.iter().map(|&k| more_seeds(scale, k)).collect(),
        scale.jobs,
    );
    let mut table = Table::new(&[
        "seeds", "done", "mean_s", "p50_s", "p90_s", "fluid_s", "events", "wall_s",
    ]);
    let (mut mean_line, mut p90_line, mut fluid_line) = (Vec::new(), Vec::new(), Vec::new());
    for (k, r) in counts.iter().zip(&runs) {
        let times: Vec<f64> = r
            .outcome
            .peers
            .iter()
            .filter_map(|p| p.download_time())
            .collect();
        let file = r.config.file_size() as f64;
        // The steady state of the fluid model: newcomers at rate λ need λ·F per second, which the
        // seeds and the newcomers present (λ·T of them, u each) supply, and none beats F / d.
        let lambda = 4096.0 / (4.0 * f64::from(scale.pieces));
        let u = 2.0 * MIB as f64;
        let fluid = ((lambda * file - *k as f64 * SEED_UP) / (lambda * u)).max(file / DOWN);
        let (m, p90) = (mean(&times), quantile(&times, 0.9));
        table.row(vec![
            k.to_string(),
            format!("{}/{}", times.len(), scale.leechers),
            f1(m),
            f1(quantile(&times, 0.5)),
            f1(p90),
            f1(fluid),
            r.outcome.events.to_string(),
            f1(r.wall.as_secs_f64()),
        ]);
        mean_line.push((*k as f64, m));
        p90_line.push((*k as f64, p90));
        fluid_line.push((*k as f64, fluid));
    }
    println!("({:.1} s wall)", started.elapsed().as_secs_f64());
    line_chart(
        &out.join("seeds.svg"),
        &Chart {
            title: "More seeds, faster newcomers",
            x_label: "seeds",
            y_label: "newcomer download time (s)",
            log2_x: true,
        },
        &[
            Series {
                name: "mean".into(),
                points: mean_line,
            },
            Series {
                name: "90th percentile".into(),
                points: p90_line,
            },
            Series {
                name: "fluid model".into(),
                points: fluid_line,
            },
        ],
    )?;
    finish("seeds", out, &table)
}

fn vertical(name: &str, x: f64, top: f64) -> Series {
    Series {
        name: name.into(),
        points: vec![(x, 0.0), (x, top)],
    }
}

fn flash(scale: &Scale, out: &Path) -> Result<()> {
    println!(
        "# 2. flash crowd: 1 seed, {} leechers within a minute, {} pieces",
        scale.leechers, scale.pieces
    );
    let r = run(flash_crowd(scale));
    let f = crowd_figures(&r);
    let mut table = Table::new(&[
        "leechers",
        "done",
        "all_done_s",
        "bound_s",
        "ratio",
        "seed_upload_F",
        "mean_download_s",
        "duplicates_pct",
        "copy_out_s",
        "events",
        "wall_s",
    ]);
    table.row(vec![
        f.leechers.to_string(),
        f.done.to_string(),
        f1(f.all_done),
        f1(f.bound),
        f2(f.ratio()),
        f2(f.seed_upload),
        f1(f.mean_download),
        f1(100.0 * f.duplicates),
        f1(f.copy_out),
        r.outcome.events.to_string(),
        f1(r.wall.as_secs_f64()),
    ]);
    println!("goals: ratio <= 1.3, seed upload <= 1.5 F");
    let n = f.leechers as f64;
    line_chart(
        &out.join("flash.svg"),
        &Chart {
            title: "Flash crowd: leechers done over time",
            x_label: "time (s)",
            y_label: "leechers done",
            log2_x: false,
        },
        &[
            Series {
                name: "done".into(),
                points: completions(&r.outcome),
            },
            vertical("fluid bound (from the first arrival)", 1.0 + f.bound, n),
            vertical("1.3 x bound", 1.0 + 1.3 * f.bound, n),
        ],
    )?;
    finish("flash", out, &table)
}

fn leave(scale: &Scale, out: &Path) -> Result<()> {
    println!(
        "# 3. the seed leaves once a full copy is out ({} leechers)",
        scale.leechers
    );
    let r = run(departure(scale));
    let f = crowd_figures(&r);
    let left = r.outcome.copy_out_departure.map_or(f64::NAN, secs);
    let mut table = Table::new(&[
        "leechers",
        "done",
        "seed_left_s",
        "seed_upload_F",
        "all_done_s",
        "bound_s",
        "wall_s",
    ]);
    table.row(vec![
        f.leechers.to_string(),
        f.done.to_string(),
        f1(left),
        f2(f.seed_upload),
        f1(f.all_done),
        f1(f.bound),
        f1(r.wall.as_secs_f64()),
    ]);
    let n = f.leechers as f64;
    line_chart(
        &out.join("departure.svg"),
        &Chart {
            title: "The seed leaves once a full copy is out",
            x_label: "time (s)",
            y_label: "leechers done",
            log2_x: false,
        },
        &[
            Series {
                name: "done".into(),
                points: completions(&r.outcome),
            },
            vertical("the seed leaves", left, n),
        ],
    )?;
    finish("departure", out, &table)
}

fn choker(scale: &Scale, out: &Path) -> Result<()> {
    println!(
        "# 4. choker settings on the flash crowd ({} leechers)",
        scale.leechers
    );
    let slots = [2usize, 4, 8];
    let intervals = [10u64, 30, 60];
    let mut configs = Vec::new();
    for &o in &intervals {
        for &s in &slots {
            let mut c = flash_crowd(scale);
            c.upload_slots = s;
            c.optimistic_interval = Duration::from_secs(o);
            configs.push(c);
        }
    }
    let runs = run_all(configs, scale.jobs);
    let mut table = Table::new(&[
        "slots",
        "optimistic_s",
        "done",
        "all_done_s",
        "ratio",
        "seed_upload_F",
        "mean_download_s",
        "wall_s",
    ]);
    let mut ratio_lines = Vec::new();
    let mut upload_lines = Vec::new();
    for (i, &o) in intervals.iter().enumerate() {
        let (mut ratio, mut upload) = (Vec::new(), Vec::new());
        for (j, &s) in slots.iter().enumerate() {
            let r = &runs[i * slots.len() + j];
            let f = crowd_figures(r);
            table.row(vec![
                s.to_string(),
                o.to_string(),
                format!("{}/{}", f.done, f.leechers),
                f1(f.all_done),
                f2(f.ratio()),
                f2(f.seed_upload),
                f1(f.mean_download),
                f1(r.wall.as_secs_f64()),
            ]);
            ratio.push((s as f64, f.ratio()));
            upload.push((s as f64, f.seed_upload));
        }
        ratio_lines.push(Series {
            name: format!("optimistic every {o} s"),
            points: ratio,
        });
        upload_lines.push(Series {
            name: format!("optimistic every {o} s"),
            points: upload,
        });
    }
    line_chart(
        &out.join("choker.svg"),
        &Chart {
            title: "Flash crowd: time until all done / fluid bound",
            x_label: "upload slots",
            y_label: "all done / bound",
            log2_x: true,
        },
        &ratio_lines,
    )?;
    line_chart(
        &out.join("choker-seed.svg"),
        &Chart {
            title: "Flash crowd: the seed's upload in copies of the file",
            x_label: "upload slots",
            y_label: "seed upload / F",
            log2_x: true,
        },
        &upload_lines,
    )?;
    finish("choker", out, &table)
}
