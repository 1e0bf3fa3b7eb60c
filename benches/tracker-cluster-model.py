#!/usr/bin/env python3
"""Steps per announce of a tracker node on a cluster (issue 17), modelled on aquatic_udp_load_test 0.9.0.

Announces arrive at RATE per second (Poisson) over its 1 M torrents, weighted 0.5 + e^(6.5 - 500 i / 1 M).
An announce is answered from its swarm's view while the view is younger than the TTL (or, with the grace,
while a flush refreshing it is in flight, up to GRACE longer), its write then queued; every flush
interval each swarm with queued writes costs one step, whose reply lands FLUSH_TAKES later; any other
announce is a miss costing a step (reply RTT later), unless HOLD > 0 and a miss of its swarm is held.

    benches/tracker-cluster-model.py RATE [TTL FLUSH GRACE FLUSH_TAKES HOLD]   (seconds)
prints steps per announce and the share answered from the view (the first 5 s left out).
"""
import bisect
import itertools
import math
import random
import sys

N = 1_000_000
CUM = list(itertools.accumulate(0.5 + math.exp(6.5 - 500.0 * i / N) for i in range(N)))


def sim(rate, ttl, flush, grace, flush_takes, hold, rtt=0.05, secs=20, warm=5, seed=1):
    rnd = random.Random(seed)
    n = int(rate * secs)
    times = sorted(rnd.uniform(0, secs) for _ in range(n))
    swarms = rnd.choices(range(N), cum_weights=CUM, k=n)
    view, refreshing, missing, queued = {}, {}, {}, set()
    next_flush = flush
    steps = counted = from_view = 0
    for t, x in zip(times, swarms):
        while t >= next_flush:
            for q in queued:
                refreshing[q] = (next_flush, next_flush + flush_takes)
            if next_flush >= warm:
                steps += len(queued)
            queued.clear()
            next_flush += flush
        counted_now = t >= warm
        counted += counted_now
        r = refreshing.get(x)
        if r is not None and t >= r[1]:
            view[x] = r[0]
            del refreshing[x]
            r = None
        m = missing.get(x)
        if m is not None:
            if t < m[0]:
                continue  # held: shares the step
            if t >= m[1]:
                view[x] = m[0]
                del missing[x]
                m = None
        v = view.get(x)
        limit = ttl + (grace if r is not None else 0)
        if v is not None and t - v < limit and m is None:
            from_view += counted_now
            queued.add(x)
            continue
        steps += counted_now
        if m is None:
            missing[x] = (t + hold, t + hold + rtt)
            queued.discard(x)
    return steps / counted, from_view / counted


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    rate = args[0] if args else 15000
    ttl, flush, grace, takes, hold = (args[1:] + [1.5, 1.5, 1.0, 0.3, 0.0][len(args[1:]):])[:5]
    k, v = sim(rate, ttl, flush, grace, takes, hold)
    print(f"rate {rate:.0f}/s ttl {ttl} flush {flush} grace {grace} flush takes {takes} hold {hold}: "
          f"steps/announce {k:.3f}, from the view {v:.3f}")
