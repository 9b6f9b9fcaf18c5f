#!/usr/bin/env python3
"""How cost grows with size: Signet on SQLite, Signet on PostgreSQL and the reference
registry (docker-registry) side by side, each operation at sizes ×10 apart.

    python3 bench/growth.py                      # full: release build, tags to 100k
    python3 bench/growth.py --tags 1000,10000,100000,1000000   # the 1M-tag walk too
    python3 bench/growth.py --smoke --debug --no-build         # seconds (CI)

Operations and their axis:
- tags/list: one page (n=100, from the middle) at c=16, and the full walk by n=100, as a
  repository grows to each size (tags added between sizes, never reloaded);
- _catalog: the same, as the number of repositories grows;
- referrers of one subject, as its referrers grow (docker-registry has no referrers API);
- a manifest PUT with 10 / 100 / 1,000 layers (median of 5 PUTs).

What the curves should show: a page costs the same whatever N (an index, not a scan); a
walk grows linearly; RSS stays bounded (the peak RSS growth of each process during each
walk is recorded). The figures go to bench/results/growth-latest.json and the plots to
bench/results/growth-*.png (matplotlib); a smoke run writes them into its temporary
folder only. Every process runs on 127.0.0.1; every load is bounded in count and time.
"""

import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import scaleout  # noqa: E402

FULL = dict(tags=[1_000, 10_000, 100_000], repos=[1_000, 10_000, 100_000],
            referrers=[10, 100, 1_000, 10_000], layers=[10, 100, 1_000], conns=16, dur=3,
            puts=5)
SMOKE = dict(tags=[10, 100], repos=[10, 100], referrers=[2, 20], layers=[1, 10], conns=4,
             dur=1, puts=2)
WALK_PAGE = 100
PEERS = ("signet-sqlite", "signet-postgres", "docker-registry")


class Peer:
    """One registry under test, and what has been loaded into it so far."""

    def __init__(self, name, server):
        self.name, self.server = name, server
        self.c = bench.Client(server.base)
        self.tags = self.repos = self.referrers = 0

    def seed(self, config, layer, manifest):
        self.config, self.layer, self.manifest = config, layer, manifest
        for repo in ("bench/tags", "bench/ref"):
            self.c.push_blob(repo, config)
            self.c.push_blob(repo, layer)
        self.c.put_manifest("bench/ref", bench.digest_of(manifest), manifest)

    def grow_tags(self, n):
        bench.parallel(lambda i: self.c.put_manifest("bench/tags", f"t{i:07d}", self.manifest),
                       range(self.tags, n))
        self.tags = n

    def grow_repos(self, n):
        def repo(i):
            name = f"bench/r{i:06d}"
            self.c.mount(name, bench.digest_of(self.config), "bench/tags")
            self.c.mount(name, bench.digest_of(self.layer), "bench/tags")
            self.c.put_manifest(name, "v1", self.manifest)
        bench.parallel(repo, range(self.repos, n))
        self.repos = n

    def grow_referrers(self, n, empty, payload):
        subject = bench.descriptor(bench.OCI_MANIFEST, self.manifest)

        def referrer(i):
            m = bench.image_manifest(bench.descriptor(bench.OCI_EMPTY, empty, 2),
                                     [bench.descriptor("application/json", payload, 16)],
                                     artifactType="application/vnd.example.sbom.v1+json",
                                     subject=subject, annotations={"bench.index": str(i)})
            self.c.put_manifest("bench/ref", bench.digest_of(m), m)
        bench.parallel(referrer, range(self.referrers, n))
        self.referrers = n


class Growth:
    def __init__(self, b, p, work):
        self.b, self.p, self.work = b, p, work
        self.rows = []    # {operation, metric, peer, n, value, unit}
        self.notes = []

    def load(self, peer, what, n, url):
        """wrk against `url`, then the time until the server answers a database read
        again (a load's last requests may still hold connections after wrk stops)."""
        r = bench.wrk(url, self.p["conns"], self.p["dur"], workdir=self.work)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            st, _, _ = peer.c.req("GET", "/v2/bench/tags/tags/list?n=1")
            if st == 200:
                break
            time.sleep(0.5)
        waited = time.monotonic() - t0
        if waited > 1:
            self.notes.append(f"{peer.name}: after the {what} load at {n}, database reads "
                              f"were refused for {waited:.0f} s (busy)")
        return r

    def put(self, operation, metric, peer, n, value, unit):
        self.rows.append(dict(operation=operation, metric=metric, peer=peer, n=n,
                              value=round(value, 3), unit=unit))

    def page_and_walk(self, peer, what, n, first, middle):
        srv = peer.server
        r = self.load(peer, what, n, srv.base + middle)
        if not r["requests"] or r["errors"]:
            self.notes.append(f"{peer.name}: {what} page at {n}: {r}")
        self.put(what, f"one page (n=100), c={self.p['conns']} (req/s)", peer.name, n,
                 r["rps"], "req/s")
        self.put(what, f"one page (n=100), c={self.p['conns']} p99 (ms)", peer.name, n,
                 r["p99_ms"], "ms")
        with bench.RssSampler(srv.pid) as rss:
            t0 = time.monotonic()
            pages, entries = bench.walk(peer.c, first, max_pages=100_000)
            secs = time.monotonic() - t0
        if entries < n:
            self.notes.append(f"{peer.name}: {what} walk returned {entries} entries, "
                              f"expected >= {n}")
        self.put(what, "full walk by n=100 (ms)", peer.name, n, secs * 1000, "ms")
        self.put(what, "RSS growth during the walk (MiB)", peer.name, n,
                 rss.growth / bench.MIB, "MiB")

    def tags(self, peer):
        for n in self.p["tags"]:
            bench.log(f"{peer.name}: tags to {n}")
            peer.grow_tags(n)
            self.page_and_walk(peer, "tags/list", n, f"/v2/bench/tags/tags/list?n={WALK_PAGE}",
                               f"/v2/bench/tags/tags/list?n=100&last=t{n // 2:07d}")

    def catalog(self, peer):
        for n in self.p["repos"]:
            bench.log(f"{peer.name}: repositories to {n}")
            peer.grow_repos(n)
            self.page_and_walk(peer, "_catalog", n, f"/v2/_catalog?n={WALK_PAGE}",
                               f"/v2/_catalog?n=100&last=bench/r{n // 2:06d}")

    def referrers(self, peer):
        empty = peer.c.push_blob("bench/ref", b"{}")
        payload = peer.c.push_blob("bench/ref", b'{"sbom":"bench"}')
        url = f"{peer.server.base}/v2/bench/ref/referrers/{bench.digest_of(peer.manifest)}"
        for n in self.p["referrers"]:
            bench.log(f"{peer.name}: referrers to {n}")
            peer.grow_referrers(n, empty, payload)
            st, _, body = peer.c.req("GET", url[len(peer.server.base):])
            if st != 200:
                self.notes.append(f"{peer.name}: no referrers API ({st})")
                return
            got = len(json.loads(body)["manifests"])
            if got != n:
                self.notes.append(f"{peer.name}: {got} referrers listed, expected {n}")
            r = self.load(peer, "referrers", n, url)
            self.put("referrers", f"the list, c={self.p['conns']} (req/s)", peer.name, n,
                     r["rps"], "req/s")
            self.put("referrers", f"the list, c={self.p['conns']} p99 (ms)", peer.name, n,
                     r["p99_ms"], "ms")

    def manifest_put(self, peer):
        repo = "bench/layers"
        for n in self.p["layers"]:
            bench.log(f"{peer.name}: manifest PUT with {n} layers")
            layers = [f"layer {n} {i}".encode() for i in range(n)]
            bench.parallel(lambda data: peer.c.push_blob(repo, data), layers)
            config = peer.c.push_blob(repo, peer.config)
            descs = [bench.descriptor(bench.OCI_LAYER, data) for data in layers]
            times = []
            for k in range(self.p["puts"]):
                m = bench.image_manifest(bench.descriptor(bench.OCI_CONFIG, config,
                                                          len(peer.config)),
                                         descs, annotations={"bench.put": f"{n}-{k}"})
                t0 = time.monotonic()
                peer.c.put_manifest(repo, f"l{n}-{k}", m)
                times.append(time.monotonic() - t0)
            self.put("manifest PUT", "median latency (ms)", peer.name, n,
                     statistics.median(times) * 1000, "ms")

    def run(self, peer):
        for step in (self.tags, self.catalog, self.referrers, self.manifest_put):
            step(peer)


def plot(rows, folder):
    """One PNG per operation: a panel per metric, N on a log axis, a line per peer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for operation in dict.fromkeys(r["operation"] for r in rows):
        if len({r["n"] for r in rows if r["operation"] == operation}) < 2:
            continue  # one size: a figure, not a curve
        metrics = list(dict.fromkeys(r["metric"] for r in rows if r["operation"] == operation))
        fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for peer in PEERS:
                pts = sorted((r["n"], r["value"]) for r in rows
                             if r["operation"] == operation and r["metric"] == metric
                             and r["peer"] == peer)
                if pts:
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=peer)
            ax.set_xscale("log")
            if metric.startswith("full walk") or "latency" in metric or "p99" in metric:
                ax.set_yscale("log")
            ax.set_title(metric, fontsize=9)
            ax.set_xlabel("N")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{operation}: cost as N grows")
        fig.tight_layout()
        name = os.path.join(folder, "growth-" + operation.strip("_").replace("/", "-")
                            .replace(" ", "-").lower() + ".png")
        fig.savefig(name, dpi=90)
        plt.close(fig)
        written.append(name)
    return written


def parse_sizes(text):
    return [int(x) for x in text.split(",") if x]


def main():
    extra = {}
    for flag in ("--tags", "--repos", "--referrers", "--layers"):
        if flag in sys.argv:
            i = sys.argv.index(flag)
            extra[flag[2:]] = parse_sizes(sys.argv[i + 1])
            del sys.argv[i:i + 2]
    args, b, work = bench.harness("growth bench", __doc__, ("wrk", "docker-registry"))
    os.chmod(work, 0o755)  # PostgreSQL runs as its own user
    p = dict(SMOKE if args.smoke else FULL, **extra)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(4096)
    manifest = bench.image_manifest(bench.descriptor(bench.OCI_CONFIG, config),
                                    [bench.descriptor(bench.OCI_LAYER, layer)])
    g = Growth(b, p, work)
    pg = scaleout.Postgres(work)
    t0 = time.monotonic()
    try:
        url = pg.start()
        makers = {
            "signet-sqlite": lambda: scaleout.signet(b, work, "signet-sqlite"),
            "signet-postgres": lambda: scaleout.signet(b, work, "signet-postgres", url),
            "docker-registry": b.make_distribution,
        }
        for name in PEERS:
            server = makers[name]()
            server.start()
            try:
                peer = Peer(name, server)
                peer.seed(config, layer, manifest)
                try:
                    g.run(peer)
                except Exception:
                    # What the server said is the first thing to read.
                    if server.log_path and os.path.exists(server.log_path):
                        with open(server.log_path, errors="replace") as f:
                            sys.stderr.write(f"--- {name} log (tail) ---\n" + f.read()[-6000:])
                    raise
                if getattr(peer.c, "retries", 0):
                    g.notes.append(f"{name}: {peer.c.retries} requests were answered 503 or "
                                   "429 with Retry-After, and retried")
                g.put("process", "RSS at the end (MiB)", name, max(p["tags"]),
                      bench.proc_status(server.pid, "VmRSS") / bench.MIB, "MiB")
            finally:
                server.stop()
        plots_dir = work if args.smoke else args.results
        os.makedirs(plots_dir, exist_ok=True)
        plots = plot(g.rows, plots_dir)
        for path in plots:
            if os.path.getsize(path) == 0:
                raise SystemExit(f"growth bench: empty plot {path}")
        out = bench.run_record(args, p, t0, rows=g.rows, notes=g.notes,
                               plots=[os.path.basename(x) for x in plots])
        print(format_table(g.rows))
        for note in g.notes:
            print("  note: " + note)
        os.makedirs(args.results, exist_ok=True)
        name = "growth-smoke-latest.json" if args.smoke else "growth-latest.json"
        with open(os.path.join(args.results, name), "w") as f:
            json.dump(out, f, indent=2)
        bad = [n for n in g.notes if "expected" in n]
        if bad:
            raise SystemExit("growth bench: " + "; ".join(bad))
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def format_table(rows):
    """Operation, metric, then each peer's value at each N."""
    lines = []
    keys = list(dict.fromkeys((r["operation"], r["metric"]) for r in rows))
    for operation, metric in keys:
        lines.append(f"{operation}: {metric}")
        for peer in PEERS:
            pts = sorted((r["n"], r["value"]) for r in rows if r["operation"] == operation
                         and r["metric"] == metric and r["peer"] == peer)
            if pts:
                lines.append(f"  {peer:16} " + "  ".join(f"{n:>8}: {v:<10g}" for n, v in pts))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
