"""Cold and hostile paths with a large store (1,000,000 keys by default).

    python -m tests.benchmarks.cold                  # 1M keys (about a minute to build)
    python -m tests.benchmarks.cold --smoke          # 20k keys, 1 s runs: the harness works

Against `keystile serve` (one worker) on loopback, wrk -t1 driving it directly:
  miss latency   every request presents a different stored key never seen
                 before, so each one is a cache miss answered by the store:
                 p50 and p99 one request at a time (wrk -c1), and under load
                 (wrk -c8, where queueing adds to it)
  valid          one stored key again and again (cached): the reference
  spray          every request a different random key with a valid checksum
                 that is not stored: throughput, and the share of requests
                 that reached the store (cache misses counted by keystile);
                 valid and spray alternate, 3 runs each (--rounds), medians
  RSS            of the serving process: at start (all keys stored, none hot),
                 after 100k distinct keys have been used twice (all cached),
                 and at the end, after far more distinct keys than it caches
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing
from pathlib import Path

from keystile.core import keys
from keystile.core.keys import Hasher
from keystile.manage.service import new_key_id
from keystile.store import KeyRecord, Store
from keystile.store.records import COLUMNS
from tests.benchmarks.bench import ROUTES
from tests.e2e.harness import Keystile

CONFIG = (
    ROUTES
    + """
[cache]
ttl = 600  # the hot set stays cached for the RSS reading
size = 100000
"""
)
INSERT = f"INSERT INTO keys ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
ROTATE = """
local keys = {}
for line in io.lines(os.getenv("BENCH_KEYS")) do keys[#keys + 1] = line end
local i = 0
request = function()
  i = i + 1
  if i > #keys then i = 1 end
  return wrk.format("GET", "/auth/nginx",
                    {["X-Original-URI"] = "/v1/chat/completions", ["X-Api-Key"] = keys[i]})
end
"""


def populate(db: Path, count: int) -> list[str]:
    """``count`` stored keys (scope chat), written straight into the store's tables;
    returns the keys."""

    async def migrate() -> None:
        await (await Store.open(db)).close()

    asyncio.run(migrate())
    hasher, now = Hasher(), time.time()
    tokens = [keys.generate() for _ in range(count)]
    rows = (
        KeyRecord(id=new_key_id(), key_hash=hasher.digest(token), hash_scheme=hasher.scheme,
                  display_prefix=keys.display_prefix(token), name=f"bench {n}",
                  created_at=now, updated_at=now, scopes=("chat",)).to_row()
        for n, token in enumerate(tokens)
    )  # fmt: skip
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.executemany(INSERT, rows)
        conn.execute("DELETE FROM key_events")  # a store whose change log was read long ago
    return tokens


def wrk(
    port: int, seconds: float, connections: int, keys_file: Path
) -> tuple[int, float, dict[str, float]]:
    """(requests, requests per second, latency percentiles in ms) rotating through keys_file."""
    script = keys_file.with_suffix(".lua")
    script.write_text(ROTATE)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}/auth/nginx"],
        capture_output=True, text=True, check=True, env={"BENCH_KEYS": str(keys_file)},
    ).stdout  # fmt: skip
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = {
        p: float(v) * scale[u] for p, v, u in re.findall(r"(50|99)%\s+([\d.]+)(us|ms|s)\b", out)
    }
    return total, rps, latency


def misses(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(r'keystile_cache_lookups_total\{result="miss"\} ([\d.e+]+)', text)
    return float(found.group(1)) if found else 0.0


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="20k keys, 1 s runs")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hot", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause", type=float, default=3.0)
    args = parser.parse_args()
    if args.smoke:
        args.keys, args.seconds, args.hot, args.rounds, args.pause = 20_000, 1.0, 5_000, 1, 0.2

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        db = workdir / "keystile.db"
        started = time.monotonic()
        tokens = populate(db, args.keys)
        built = time.monotonic() - started
        (workdir / "keystile.toml").write_text(CONFIG)
        files = {}
        unknown = [keys.generate() for _ in range(min(500_000, args.keys // 2))]
        split = min(len(tokens) // 4, 200_000)
        for name, items in (("miss", tokens[:split]), ("miss-loaded", tokens[split:2 * split]),
                            ("hot", tokens[2 * split:2 * split + args.hot]),
                            ("valid", tokens[-1:]), ("spray", unknown)):  # fmt: skip
            files[name] = workdir / f"{name}.keys"
            files[name].write_text("\n".join(items) + "\n")
        env = {"KEYSTILE_DB": str(db), "KEYSTILE_CONFIG": str(workdir / "keystile.toml"),
               "BENCH_UPSTREAM_KEY": "sk-bench-upstream"}  # fmt: skip
        keystile = Keystile(workdir, env)
        started = time.monotonic()
        keystile.start()
        ready = time.monotonic() - started
        try:
            assert keystile.proc is not None
            pid, port = keystile.proc.pid, keystile.port
            rss_start = rss_mb(pid)
            for _ in range(2):  # every hot key used; the second pass finds them cached
                wrk(port, max(args.seconds, args.hot / 4000), 32, files["hot"])
            rss_hot = rss_mb(pid)
            time.sleep(args.pause * 3)  # the hot set's usage flush (100k keys) is written
            before = misses(port)
            miss_total, _, miss_latency = wrk(port, args.seconds, 1, files["miss"])
            # each key of the file misses once; a run longer than the file goes round
            # again and hits, so the count to expect is the distinct keys sent
            missed, distinct = misses(port) - before, min(miss_total, split)
            _, miss_rps, loaded_latency = wrk(port, args.seconds, 8, files["miss-loaded"])
            valid, spray, shares = [], [], []
            for _ in range(args.rounds):  # interleaved; each after the last one's usage flush
                time.sleep(args.pause)
                valid.append(wrk(port, args.seconds, 32, files["valid"])[1])
                time.sleep(args.pause)
                before = misses(port)
                total, rps, _ = wrk(port, args.seconds, 32, files["spray"])
                spray.append(rps)
                shares.append((misses(port) - before) / total)
            valid_rps, spray_rps = statistics.median(valid), statistics.median(spray)
            spray_share = max(shares)
            rss_end = rss_mb(pid)
        finally:
            keystile.stop()

    print(f"\n{args.keys} keys stored (built in {built:.0f} s; keystile ready in {ready:.1f} s),"
          f" wrk -t1, {args.seconds:g} s per run, direct to keystile\n")  # fmt: skip
    rows = [
        ("cache-miss latency p50 / p99 (-c1)",
         f"{miss_latency.get('50', 0):.2f} / {miss_latency.get('99', 0):.2f} ms",
         f"misses: {missed:.0f} of {distinct} distinct keys sent"),
        ("cache misses under load (-c8)",
         f"{loaded_latency.get('50', 0):.2f} / {loaded_latency.get('99', 0):.2f} ms",
         f"p50 / p99 at {miss_rps:.0f} req/s, every request a miss"),
        ("valid key, cached (-c32)", f"{valid_rps:.0f} req/s",
         f"the reference (median of {args.rounds})"),
        ("unknown-key spray (-c32)", f"{spray_rps:.0f} req/s",
         f"{spray_rps / valid_rps:.2f}x valid; at most {spray_share:.2%} reached the store"),
        ("RSS at start", f"{rss_start:.0f} MB", f"{args.keys} keys stored, none cached"),
        (f"RSS with {args.hot} hot", f"{rss_hot:.0f} MB", "every hot key cached"),
        ("RSS at the end", f"{rss_end:.0f} MB",
         "after all of the above: far more distinct keys than the cache holds"),
    ]  # fmt: skip
    for row in rows:
        print("{:<38}{:>22}   {}".format(*row))
    return 0


if __name__ == "__main__":
    began = time.monotonic()
    code = main()
    print(f"\n({time.monotonic() - began:.0f} s)", file=sys.stderr)
    raise SystemExit(code)
