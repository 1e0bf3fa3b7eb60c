//! RC4 keystream speed on one core, in MB/s of this thread's CPU time (so a loaded machine still
//! gives a usable figure): `cargo run --release -p mse --example rc4_speed [MiB]`.

use std::time::Duration;

/// This thread's CPU time so far (Linux: the first field of /proc/thread-self/schedstat, in ns).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    // 16 KiB at a time, the size of a block, in a buffer that stays in cache.
    let mut block = vec![0x5au8; 16 * 1024];
    let mut rc4 = mse::Rc4Stream::new(&[7u8; 20]);
    for round in 1..=3 {
        let (Some(start), wall) = (thread_cpu(), std::time::Instant::now()) else {
            eprintln!("no /proc/thread-self/schedstat: CPU time unavailable");
            return;
        };
        for _ in 0..mib * 64 {
            rc4.apply(&mut block);
        }
        let cpu = thread_cpu().map_or(Duration::ZERO, |end| end - start);
        let mb = (mib << 20) as f64 / 1e6;
        println!(
            "round {round}: {mib} MiB in {:.2} s of CPU ({:.2} s wall): {:.0} MB/s",
            cpu.as_secs_f64(),
            wall.elapsed().as_secs_f64(),
            mb / cpu.as_secs_f64().max(1e-9)
        );
    }
    std::hint::black_box(&block);
}
