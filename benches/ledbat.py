#!/usr/bin/python3
"""LEDBAT on a shaped link: does Spore's uTP upload yield to a TCP flow, and how much queue does it add?

usage (root): benches/ledbat.py [--spore target/release/spore] [--rate 20mbit] [--secs 15] [--json]

Three network namespaces, A -- R -- B, joined by veth pairs; the router R shapes what it forwards to
B with a token bucket (tbf, RATE, 400 ms of buffer, the kind of queue a home uplink has). For each transport (utp, tcp):
`spore seed` in namespace A uploads to `spore get` in namespace B; after a warm-up, a UDP probe
measures the round trip through the queue for SECS seconds (Spore alone), then a TCP flow from A to B
(a plain socket sender) runs beside Spore for SECS seconds and its throughput is measured.
Prints, per transport: the median and 90th-percentile probe RTT with Spore alone, the TCP flow's
throughput and share of the link beside Spore, and Spore's own rate.
The kernel here has no sch_netem, so no base delay is added: the RTT is the queue's.
Everything is removed at the end (namespaces, processes, files).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

# Per process, so two runs at once (tests of several worktrees) never share a namespace.
NS_A, NS_R, NS_B = ("spore-ledbat-%s-%d" % (n, os.getpid()) for n in "arb")
IP_A, IP_B = "10.78.0.1", "10.79.0.2"
PORT = 6881

SINK = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
n = 0; t0 = time.monotonic(); marks = []
while True:
    d = c.recv(65536)
    if not d: break
    n += len(d); marks.append((time.monotonic() - t0, n))
print(" ".join("%.3f:%d" % m for m in marks[:: max(1, len(marks) // 2000)] + marks[-1:]), flush=True)
"""

SENDER = r"""
import socket, sys, time
c = socket.socket()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
c.connect((sys.argv[1], int(sys.argv[2])))
end = time.monotonic() + float(sys.argv[3]); buf = b"x" * 65536
while time.monotonic() < end: c.send(buf)
c.close()
"""

ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(64); s.sendto(d, a)
"""

PROBE = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2.0)
end = time.monotonic() + float(sys.argv[3]); rtts = []
while time.monotonic() < end:
    t = time.monotonic(); s.sendto(struct.pack("!d", t), (sys.argv[1], int(sys.argv[2])))
    try:
        d, _ = s.recvfrom(64); rtts.append((time.monotonic() - struct.unpack("!d", d)[0]) * 1000)
    except socket.timeout:
        pass
    time.sleep(0.05)
print(" ".join("%.2f" % r for r in rtts), flush=True)
"""


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def netns(ns, *args, **kw):
    return subprocess.Popen(["ip", "netns", "exec", ns, *args], **kw)


def setup(rate):
    """A -- R -- B: the router R shapes what it forwards towards B, so the senders' own stacks
    (TCP small queues, local qdisc back-pressure on UDP) play no part, as on a real uplink."""
    teardown()
    for ns in (NS_A, NS_R, NS_B):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "link", "add", "sl-a", "netns", NS_A, "type", "veth", "peer", "name", "sl-ra", "netns", NS_R)
    sh("ip", "link", "add", "sl-b", "netns", NS_B, "type", "veth", "peer", "name", "sl-rb", "netns", NS_R)
    for ns, dev, addr in ((NS_A, "sl-a", IP_A + "/24"), (NS_R, "sl-ra", "10.78.0.254/24"),
                          (NS_R, "sl-rb", "10.79.0.254/24"), (NS_B, "sl-b", IP_B + "/24")):
        sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
    # Loss-based TCP, as most flows on a home link are: a host defaulting to BBR (which keeps queues
    # short by itself) would hide what a delay-based sender yields to. A namespace may only pick an
    # allowed algorithm (Reno here) as its default; the competing flow asks for CUBIC itself.
    for ns in (NS_A, NS_B):
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_congestion_control=reno")
    sh("ip", "-n", NS_A, "route", "add", "default", "via", "10.78.0.254")
    sh("ip", "-n", NS_B, "route", "add", "default", "via", "10.79.0.254")
    sh("ip", "netns", "exec", NS_R, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "netns", "exec", NS_R, "tc", "qdisc", "add", "dev", "sl-rb", "root", "tbf", "rate", rate,
       "burst", "16kb", "latency", "400ms")


def teardown():
    for ns in (NS_A, NS_R, NS_B):
        sh("ip", "netns", "del", ns, check=False)


def line(p, timeout):
    """The next stdout line of `p` (it must print one within `timeout`)."""
    import select
    r, _, _ = select.select([p.stdout], [], [], timeout)
    if not r:
        raise RuntimeError("no output within %ss" % timeout)
    return p.stdout.readline().strip()


def wait_file(path, needle, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path) as f:
                if needle in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    raise RuntimeError("%s: no %r within %ss" % (path, needle, timeout))


def rate_between(marks, t0, t1):
    """Bytes per second the sink received between t0 and t1 (seconds since its start)."""
    pts = [(float(t), int(n)) for t, n in (m.split(":") for m in marks.split())]
    before = max((p for p in pts if p[0] <= t0), default=(0.0, 0))
    after = max((p for p in pts if p[0] <= t1), default=before)
    return (after[1] - before[1]) / max(1e-9, after[0] - before[0])


def run(spore, transport, secs, work, size_mb):
    procs = []
    try:
        data = os.path.join(work, "seed")
        torrent = os.path.join(work, "t.torrent")
        common = ["--no-dht", "--no-lsd", "--no-pex", "--no-port-mapping", "--no-trackers",
                  "--transports", transport]
        seed_log = os.path.join(work, "seed-%s.log" % transport)
        procs.append(netns(NS_A, spore, "seed", torrent, "--data", data, "--listen",
                           "%s:%d" % (IP_A, PORT), *common,
                           stdout=open(seed_log, "w"), stderr=subprocess.STDOUT))
        wait_file(seed_log, "seeding", 60)
        dl = os.path.join(work, "dl-" + transport)
        get_log = os.path.join(work, "get-%s.log" % transport)
        procs.append(netns(NS_B, spore, "get", torrent, "-o", dl, "--listen", "%s:%d" % (IP_B, PORT),
                           "--peer", "%s:%d" % (IP_A, PORT), "--no-seed", *common,
                           stdout=open(get_log, "w"), stderr=subprocess.STDOUT))
        echo = netns(NS_B, sys.executable, "-c", ECHO, IP_B, "7007", stdout=subprocess.PIPE, text=True)
        procs.append(echo)
        line(echo, 10)
        time.sleep(5)  # Spore's window opens
        size_before = dir_size(dl)
        t_alone = time.monotonic()
        probe = netns(NS_A, sys.executable, "-c", PROBE, IP_B, "7007", str(secs), stdout=subprocess.PIPE,
                      text=True)
        alone = [float(x) for x in probe.communicate(timeout=secs + 30)[0].split()]
        spore_alone = (dir_size(dl) - size_before) / (time.monotonic() - t_alone)
        sink = netns(NS_B, sys.executable, "-c", SINK, IP_B, "7008", stdout=subprocess.PIPE, text=True)
        procs.append(sink)
        line(sink, 10)
        size_before = dir_size(dl)
        t_both = time.monotonic()
        sender = netns(NS_A, sys.executable, "-c", SENDER, IP_B, "7008", str(secs))
        probe = netns(NS_A, sys.executable, "-c", PROBE, IP_B, "7007", str(secs), stdout=subprocess.PIPE,
                      text=True)
        both = [float(x) for x in probe.communicate(timeout=secs + 30)[0].split()]
        sender.wait(timeout=secs + 30)
        spore_beside = (dir_size(dl) - size_before) / (time.monotonic() - t_both)
        marks = line(sink, 30)
        # The TCP flow's steady state: its first 3 s (slow start) left out.
        tcp = rate_between(marks, 3.0, secs)
        if dir_size(dl) >= size_mb * 1024 * 1024:
            raise RuntimeError("the download finished during the measurement: use a larger file")
        return {
            "transport": transport,
            "rtt_alone_ms_median": statistics.median(alone),
            "rtt_alone_ms_p90": sorted(alone)[int(len(alone) * 0.9)],
            "rtt_beside_tcp_ms_median": statistics.median(both),
            "spore_alone_bytes_s": spore_alone,
            "spore_beside_tcp_bytes_s": spore_beside,
            "tcp_flow_bytes_s": tcp,
        }
    finally:
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
            except Exception:
                pass


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spore", default="target/release/spore")
    ap.add_argument("--rate", default="20mbit")
    ap.add_argument("--secs", type=float, default=15.0)
    ap.add_argument("--transports", default="utp,tcp")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    spore = os.path.abspath(args.spore)
    link = float(args.rate.replace("mbit", "")) * 1e6 / 8
    # Enough data for warm-up and both phases at the full link rate, with room.
    size_mb = int(link * (5 + 2 * args.secs + 20) / 1e6) + 16
    work = tempfile.mkdtemp(prefix="spore-ledbat-")
    results = []
    try:
        os.mkdir(os.path.join(work, "seed"))
        with open(os.path.join(work, "seed", "data.bin"), "wb") as f:
            f.write(os.urandom(size_mb * 1024 * 1024))
        sh(spore, "create", os.path.join(work, "seed", "data.bin"), "-o",
           os.path.join(work, "t.torrent"), "--piece-length", "256K")
        for transport in args.transports.split(","):
            setup(args.rate)
            results.append(run(spore, transport, args.secs, work, size_mb))
    finally:
        teardown()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"link_bytes_s": link, "results": results}))
        return
    print("link %s (tbf, 400 ms buffer), %g s per phase" % (args.rate, args.secs))
    print("| Spore over | probe RTT, Spore alone (median / p90) | TCP flow beside Spore | "
          "TCP share of link | Spore alone | Spore beside TCP |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print("| %s | %.0f / %.0f ms | %.2f Mbit/s | %.0f %% | %.2f Mbit/s | %.2f Mbit/s |" % (
            r["transport"], r["rtt_alone_ms_median"], r["rtt_alone_ms_p90"],
            r["tcp_flow_bytes_s"] * 8 / 1e6, 100 * r["tcp_flow_bytes_s"] / link,
            r["spore_alone_bytes_s"] * 8 / 1e6, r["spore_beside_tcp_bytes_s"] * 8 / 1e6))


if __name__ == "__main__":
    main()
