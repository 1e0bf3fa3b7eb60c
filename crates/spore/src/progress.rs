//! A progress bar over long local work (hashing for `create` and `verify`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs `work` while a progress bar on stderr (only when stderr is a terminal) follows `progress`
/// towards `total` bytes.
pub fn with_progress<T>(
    total: u64,
    label: &str,
    progress: &AtomicU64,
    work: impl FnOnce() -> T,
) -> T {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        if !bar.is_hidden() {
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    bar.set_position(progress.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        let result = work();
        done.store(true, Ordering::Relaxed);
        result
    });
    bar.finish_and_clear();
    result
}
