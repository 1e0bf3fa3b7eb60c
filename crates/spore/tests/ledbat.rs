//! LEDBAT on a shaped link (issue 14): `benches/ledbat.py` builds namespaces A -- R -- B, R shaping
//! what it forwards to B to 20 Mbit/s with a 400 ms buffer, and has `spore seed` in A upload to
//! `spore get` in B, over uTP and then over TCP, measuring the queue with a UDP probe and a CUBIC TCP
//! flow's throughput beside Spore. Over uTP the TCP flow must keep most of the link and the queue
//! stay near LEDBAT's 100 ms target; over TCP the queue is the buffer's. Root, `ip` and `tc` (sch_tbf)
//! are needed (a failure when CI=true). About 90 s.

use std::path::Path;
use std::process::Command;

fn lab_available() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["ip", "tc"].iter().all(|t| {
        Command::new(t)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !(root && tools) {
        assert!(!ci, "the LEDBAT lab needs root, ip and tc when CI=true");
        eprintln!("skipped: needs root, ip and tc");
        return false;
    }
    true
}

#[test]
fn utp_yields_to_tcp_and_keeps_the_queue_near_target() {
    if !lab_available() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/ledbat.py");
    let out = Command::new("timeout")
        .args(["300", "/usr/bin/python3"])
        .arg(&script)
        .args(["--spore", env!("CARGO_BIN_EXE_spore")])
        .args(["--rate", "20mbit", "--secs", "10", "--json"])
        .output()
        .expect("run benches/ledbat.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ledbat.py: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON from ledbat.py");
    let link = v["link_bytes_s"].as_f64().unwrap();
    let results = v["results"].as_array().unwrap();
    let of = |t: &str| results.iter().find(|r| r["transport"] == t).unwrap();
    let (utp, tcp) = (of("utp"), of("tcp"));
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    let share = f(utp, "tcp_flow_bytes_s") / link;
    // Measured 93 % and 78 ms (2026-12-02); the bounds leave room for a loaded machine.
    assert!(
        share >= 0.8,
        "the TCP flow kept {:.0} % of the link beside uTP: {v}",
        share * 100.0
    );
    let rtt = f(utp, "rtt_alone_ms_median");
    assert!(rtt <= 150.0, "queue with uTP alone {rtt} ms: {v}");
    // And the difference: Spore over TCP fills the buffer (measured 230 ms median, 244 ms p90 with a
    // release build; a debug build's TCP upload has pauses that leave the median low, so the 90th
    // percentile is compared).
    assert!(
        f(tcp, "rtt_alone_ms_p90") > f(utp, "rtt_alone_ms_p90") + 50.0,
        "Spore over TCP queued no more than over uTP: {v}"
    );
}
