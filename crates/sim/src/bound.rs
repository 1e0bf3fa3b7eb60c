//! The fluid lower bound on the time a swarm needs to give every leecher the whole file.

/// Seconds until all of `n` leechers that start together with nothing can hold a file of `file`
/// bytes, at best: the seed must send every byte once (`file / u_s`), the slowest downloader must
/// receive every byte (`file / d_min`), and the swarm must move `n · file` bytes through its total
/// upload capacity (`n · file / (u_s + Σ u_i)`). Capacities are in bytes per second; `uploads` are
/// the leechers'. This is the bound of Kumar and Ross's fluid model; no schedule beats it.
pub fn fluid_lower_bound(file: f64, seed_up: f64, min_down: f64, uploads: &[f64]) -> f64 {
    let n = uploads.len() as f64;
    let total_up = seed_up + uploads.iter().sum::<f64>();
    (file / seed_up)
        .max(file / min_down)
        .max(n * file / total_up)
}
