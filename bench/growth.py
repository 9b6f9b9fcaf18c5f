#!/usr/bin/env python3
"""How cost grows with size: Signet on SQLite, Signet on PostgreSQL and the reference
registry (docker-registry) side by side, each operation at sizes ×10 apart.

    python3 bench/growth.py                      # full: release build, tags to 100k
    python3 bench/growth.py --tags 1000,10000,100000,1000000   # the 1M-tag walk too
    python3 bench/growth.py --smoke --debug --no-build         # seconds (CI)
    python3 bench/growth.py --steps gc --peers signet-sqlite --blobs 1000000
                            # one step, one peer: its points join growth-latest.json
                            # (--keep leaves the work folder and its stores behind)

Operations and their axis:
- tags/list: one page (n=100, from the middle) at c=16, and the full walk by n=100, as a
  repository grows to each size (tags added between sizes, never reloaded);
- _catalog: the same, as the number of repositories grows;
- referrers of one subject, as its referrers grow (docker-registry has no referrers API);
- a manifest PUT with 10 / 100 / 1,000 layers (median of 5 PUTs);
- sync of N small signed images (one repository upstream, in a docker-registry: each
  image a config, one 1 KiB layer and a cosign `.sig`) into an empty destination, then
  again with nothing changed: Signet's sync job into Signet, and `skopeo sync` into
  docker-registry (row peer "docker-registry"), the tool a docker-registry mirror uses;
- GC and fsck as the blobs stored grow: at each size half the blobs are referenced by
  tagged manifests and half by manifests deleted through the API (Signet's blobs are
  pushed through its API; docker-registry's are written into its filesystem layout as
  its API would leave them, a million through its API taking an hour); fsck (Signet only:
  docker-registry has none) runs first, then GC (`signet gc`, `docker-registry
  garbage-collect`), each a process of its own whose time and peak RSS are recorded.

What the curves should show: a page costs the same whatever N (an index, not a scan); a
walk grows linearly; RSS stays bounded (the peak RSS growth of each process during each
walk is recorded). The figures go to bench/results/growth-latest.json and the plots to
bench/results/growth-*.png (matplotlib); a smoke run writes them into its temporary
folder only. Every process runs on 127.0.0.1; every load is bounded in count and time.
"""

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import scaleout  # noqa: E402
import sync_bench  # noqa: E402

FULL = dict(tags=[1_000, 10_000, 100_000], repos=[1_000, 10_000, 100_000],
            referrers=[10, 100, 1_000, 10_000], layers=[10, 100, 1_000],
            blobs=[10_000, 100_000], images=[10, 100, 1_000], conns=16, dur=3, puts=5)
SMOKE = dict(tags=[10, 100], repos=[10, 100], referrers=[2, 20], layers=[1, 10],
             blobs=[20, 200], images=[2, 20], conns=4, dur=1, puts=2)
GC_BLOCK = 1_000  # layers per manifest of the GC load (fewer when N is smaller)
WALK_PAGE = 100
PEERS = ("signet-sqlite", "signet-postgres", "docker-registry")
# Each step by the name --steps knows it, and the method that runs it.
STEPS = {"tags": "tags", "catalog": "catalog", "referrers": "referrers",
         "manifest-put": "manifest_put", "gc": "gc", "sync": "sync"}


class Peer:
    """One registry under test, and what has been loaded into it so far."""

    def __init__(self, name, server, gc_cmd, fsck_cmd=None):
        self.name, self.server = name, server
        self.gc_cmd, self.fsck_cmd = gc_cmd, fsck_cmd
        self.is_signet = name.startswith("signet")
        self.c = bench.Client(server.base)
        self.tags = self.repos = self.referrers = 0
        self.blobs = self.live = 0  # GC load: blobs pushed so far, and those still live
        self.pusher = None  # signet-push-blobs, which loads the GC step's blobs
        self.storage_root = None  # docker-registry's store, where its blobs are placed

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

    def grow_blobs(self, n, block):
        """Pushes blobs until `n` are stored: half live (tagged manifests of `block`
        layers), half garbage (manifests of `block` layers deleted again)."""
        repo = "bench/gc"
        config = self.c.push_blob(repo, self.config)
        new_live = n // 2 - self.live
        start = self.blobs
        count = n - self.live  # what GC left last time is all live
        if count > 0 and self.is_signet:
            rate, _ = bench.push_blobs(self.pusher, self.server.base, repo, "gc blob ", start,
                                       count)
            bench.log(f"pushed {count} blobs, {rate:.0f} a second")
        elif count > 0:
            t0 = time.monotonic()
            place_distribution_blobs(self.storage_root, repo, "gc blob ", start, count)
            bench.log(f"placed {count} blobs, {count / (time.monotonic() - t0):.0f} a second")

        def manifests(first, end, live):
            for at in range(first, end, block):
                layers = [bench.descriptor(bench.OCI_LAYER, f"gc blob {i:09d}".encode())
                          for i in range(at, min(at + block, end))]
                m = bench.image_manifest(bench.descriptor(bench.OCI_CONFIG, config,
                                                          len(self.config)), layers)
                if live:
                    self.c.put_manifest(repo, f"live-{at:09d}", m)
                else:
                    digest = bench.digest_of(m)
                    self.c.put_manifest(repo, digest, m)
                    self.c.req("DELETE", f"/v2/{repo}/manifests/{digest}", expect=(202,))
        manifests(start, start + new_live, True)
        manifests(start + new_live, start + count, False)
        self.blobs = start + count
        self.live = n // 2


def place_distribution_blobs(root, repo, prefix, first, count):
    """Writes the blobs `prefix` + index (9 digits) into docker-registry's filesystem
    store as its API leaves a pushed blob: the bytes at blobs/sha256/<2>/<hex>/data and
    the repository's link at _layers/sha256/<hex>/link. Its API takes blobs at about
    290 a second here (an hour for the million-blob point); GC, the step measured,
    reads only this layout, and the manifests naming these blobs are still PUT through
    the API, which checks every layer it names is there."""
    v2 = os.path.join(root, "docker", "registry", "v2")
    layers = os.path.join(v2, "repositories", repo, "_layers", "sha256")
    for i in range(first, first + count):
        data = f"{prefix}{i:09d}".encode()
        hexdigest = hashlib.sha256(data).hexdigest()
        blob_dir = os.path.join(v2, "blobs", "sha256", hexdigest[:2], hexdigest)
        os.makedirs(blob_dir, exist_ok=True)
        with open(os.path.join(blob_dir, "data"), "wb") as f:
            f.write(data)
        link_dir = os.path.join(layers, hexdigest)
        os.makedirs(link_dir, exist_ok=True)
        with open(os.path.join(link_dir, "link"), "w") as f:
            f.write("sha256:" + hexdigest)


def timed_process(cmd):
    """Runs `cmd` to its end; returns (seconds, peak RSS in MiB, stdout). The peak is
    the process's own VmHWM, read every 10 ms (rusage's maxrss would count the forking
    Python's pages too)."""
    peak = [0]
    t0 = time.monotonic()
    with open(os.devnull, "w") as devnull:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=devnull,
                                env=dict(os.environ, SIGNET_LOG="warn"))

        def sample():
            while proc.poll() is None:
                try:
                    peak[0] = max(peak[0], bench.proc_status(proc.pid, "VmHWM"))
                except (OSError, ValueError, TypeError):
                    pass
                time.sleep(0.01)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = proc.stdout.read()
        proc.wait()
        sampler.join()
    secs = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {out[-2000:]!r}")
    return secs, peak[0] / bench.MIB, out


class Growth:
    def __init__(self, b, p, work):
        self.b, self.p, self.work = b, p, work
        self.rows = []    # {operation, metric, peer, n, value, unit}
        self.notes = []
        self.upstream = None  # the docker-registry the sync step mirrors from
        self.populated = {}   # repository upstream -> its tags

    def close(self):
        if self.upstream:
            self.upstream.stop()

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

    def upstream_repo(self, n):
        """The upstream repository of `n` small signed images (pushed once)."""
        repo = f"sync/n{n:05d}"
        if repo in self.populated:
            return repo
        if not self.upstream:
            b, saved = self.b, self.b.work
            b.work = os.path.join(self.work, "upstream")
            try:
                self.upstream = b.make_distribution()
            finally:
                b.work = saved
            self.upstream.start()
        up = self.upstream
        c = bench.Client(up.base)

        def image(i):
            config = json.dumps({"architecture": "amd64", "os": "linux", "n": i,
                                 "rootfs": {"type": "layers", "diff_ids": []}}).encode()
            layer = os.urandom(1024)
            c.push_blob(repo, config)
            c.push_blob(repo, layer)
            m = bench.image_manifest(bench.descriptor(bench.OCI_CONFIG, config),
                                     [bench.descriptor(bench.OCI_LAYER, layer)])
            c.put_manifest(repo, f"v{i:05d}", m)
            sync_bench.push_signature(c, up, repo, bench.digest_of(m), i, push_empty=False)
        c.push_blob(repo, b"{}")
        bench.parallel(image, range(n))
        self.populated[repo] = sync_bench.tags_of(up.base, repo)
        if len(self.populated[repo]) != 2 * n:
            raise RuntimeError(f"upstream {repo}: {len(self.populated[repo])} tags")
        return repo

    def sync(self, peer):
        for n in self.p["images"]:
            repo = self.upstream_repo(n)
            bench.log(f"{peer.name}: sync of {n} signed images")
            with bench.RssSampler(peer.server.pid) as rss:
                if peer.is_signet:  # a sync job of the server itself
                    job = f"growth-{n}"
                    peer.c.req("POST", "/v2/_signet/sync/jobs", body=json.dumps({
                        "name": job, "upstream": self.upstream.base, "repositories": [repo],
                        "concurrency": 8}).encode(),
                        headers={"Content-Type": "application/json"}, expect=(201,))
                    first, _ = sync_bench.signet_sync(peer.server, job)
                else:
                    first = sync_bench.skopeo_sync(self.upstream, peer.server, repo)
            if peer.is_signet:
                rerun, again = sync_bench.signet_sync(peer.server, job)
                if again["blobs_copied"] or again["manifests_copied"]:
                    self.notes.append(f"{peer.name}: the sync rerun at {n} copied again, "
                                      f"expected nothing: {again}")
            else:
                rerun = sync_bench.skopeo_sync(self.upstream, peer.server, repo)
            got = sync_bench.tags_of(peer.server.base, repo)
            if got != self.populated[repo]:
                self.notes.append(f"{peer.name}: sync at {n} mirrored {len(got)} tags, "
                                  f"expected {len(self.populated[repo])}")
            self.put("sync", "first copy (s)", peer.name, n, first, "s")
            self.put("sync", "rerun, nothing changed (s)", peer.name, n, rerun, "s")
            self.put("sync", "server RSS growth, first copy (MiB)", peer.name, n,
                     rss.growth / bench.MIB, "MiB")

    def gc(self, peer):
        for n in self.p["blobs"]:
            bench.log(f"{peer.name}: blobs to {n}")
            peer.grow_blobs(n, min(GC_BLOCK, max(n // 10, 1)))
            time.sleep(1.1)  # older than the grace of 0 s: rows keep whole seconds
            if peer.fsck_cmd:
                secs, rss, out = timed_process(peer.fsck_cmd)
                report = json.loads(out)
                if report["blobs_checked"] < n or report["problems"]:
                    self.notes.append(f"{peer.name}: fsck at {n}: {report['blobs_checked']} "
                                      f"blobs checked, expected >= {n}; problems: "
                                      f"{report['problems'][:3]}")
                self.put("fsck", "time (s)", peer.name, n, secs, "s")
                self.put("fsck", "peak RSS (MiB)", peer.name, n, rss, "MiB")
            secs, rss, out = timed_process(peer.gc_cmd)
            if peer.is_signet:
                removed = json.loads(out)["blobs_count"]
            else:  # "N blobs marked, M blobs and K manifests eligible for deletion"
                found = re.search(rb"(\d+) blobs and \d+ manifests eligible", out)
                removed = int(found.group(1)) if found else 0
            if removed < n // 2:
                self.notes.append(f"{peer.name}: GC at {n} removed {removed} blobs, "
                                  f"expected >= {n // 2}")
            self.put("GC", "time (s)", peer.name, n, secs, "s")
            self.put("GC", "peak RSS (MiB)", peer.name, n, rss, "MiB")


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
                    label = "skopeo sync into docker-registry" \
                        if (operation, peer) == ("sync", "docker-registry") else peer
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
            ax.set_xscale("log")
            if metric.startswith("full walk") or "latency" in metric or "p99" in metric \
                    or operation in ("GC", "fsck", "sync") and "(s)" in metric:
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


# GC only when the bench runs it, collecting at once what is deleted.
SIGNET_GC = "[gc]\ninterval_secs = 0\ngrace_secs = 0\n"


def make_peer(b, work, name, metadata_url):
    """The server of `name`, with the commands that collect and check its stores."""
    if name == "docker-registry":
        server = b.make_distribution()
        config = server.argv[-1]
        peer = Peer(name, server, ["docker-registry", "garbage-collect", config])
        peer.storage_root = os.path.join(os.path.dirname(config), "storage")
    else:
        url = metadata_url if name == "signet-postgres" else None
        server = scaleout.signet(b, work, name, url, extra=SIGNET_GC)
        config = ["--config", os.path.join(work, name, "signet.toml")]
        peer = Peer(name, server, [b.signet_bin, "gc", "--json"] + config,
                    [b.signet_bin, "fsck", "--json"] + config)
    peer.pusher = bench.pusher_path(b.signet_bin)
    return peer


def parse_sizes(text):
    return [int(x) for x in text.split(",") if x]


def main():
    extra, steps, peers = {}, list(STEPS), list(PEERS)
    keep = "--keep" in sys.argv  # the work folder stays, its stores to look into
    if keep:
        sys.argv.remove("--keep")
    for flag in ("--tags", "--repos", "--referrers", "--layers", "--blobs", "--images",
                 "--steps", "--peers"):
        if flag in sys.argv:
            i = sys.argv.index(flag)
            value = sys.argv[i + 1]
            del sys.argv[i:i + 2]
            if flag == "--steps":
                steps = [x for x in value.split(",") if x]
            elif flag == "--peers":
                peers = [x for x in value.split(",") if x]
            else:
                extra[flag[2:]] = parse_sizes(value)
    unknown = [x for x in steps if x not in STEPS] + [x for x in peers if x not in PEERS]
    if unknown:
        raise SystemExit(f"growth bench: unknown {unknown}; steps are {list(STEPS)}, "
                         f"peers {list(PEERS)}")
    args, b, work = bench.harness("growth bench", __doc__,
                                  ("wrk", "docker-registry", "skopeo"))
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
        url = pg.start() if "signet-postgres" in peers else None
        for name in peers:
            peer = make_peer(b, work, name, url)
            server = peer.server
            server.start()
            try:
                peer.seed(config, layer, manifest)
                try:
                    for step in steps:
                        getattr(g, STEPS[step])(peer)
                except Exception:
                    # What the server said is the first thing to read.
                    if server.log_path and os.path.exists(server.log_path):
                        with open(server.log_path, errors="replace") as f:
                            sys.stderr.write(f"--- {name} log (tail) ---\n" + f.read()[-6000:])
                    raise
                if getattr(peer.c, "retries", 0):
                    g.notes.append(f"{name}: {peer.c.retries} requests were answered 503 or "
                                   "429 with Retry-After, and retried")
                if steps == list(STEPS):
                    g.put("process", "RSS at the end (MiB)", name, max(p["tags"]),
                          bench.proc_status(server.pid, "VmRSS") / bench.MIB, "MiB")
            finally:
                server.stop()
        name = "growth-smoke-latest.json" if args.smoke else "growth-latest.json"
        path = os.path.join(args.results, name)
        run = dict(steps=steps, peers=peers, params=p)
        rows, notes, runs = g.rows, g.notes, [run]
        if (steps != list(STEPS) or peers != list(PEERS)) and os.path.exists(path):
            # A partial run adds to (or replaces points of) the last full one.
            with open(path) as f:
                prior = json.load(f)
            key = lambda r: (r["operation"], r["metric"], r["peer"], r["n"])  # noqa: E731
            fresh = {key(r) for r in g.rows}
            rows = [r for r in prior["rows"] if key(r) not in fresh] + g.rows
            notes = prior.get("notes", []) + g.notes
            runs = prior.get("runs", [dict(steps=list(STEPS), peers=list(PEERS),
                                           params=prior.get("params"),
                                           date=prior.get("date"))]) + [run]
        run["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        plots_dir = work if args.smoke else args.results
        os.makedirs(plots_dir, exist_ok=True)
        plots = plot(rows, plots_dir)
        for plot_path in plots:
            if os.path.getsize(plot_path) == 0:
                raise SystemExit(f"growth bench: empty plot {plot_path}")
        out = bench.run_record(args, p, t0, rows=rows, notes=notes, runs=runs,
                               plots=[os.path.basename(x) for x in plots])
        print(format_table(g.rows))
        for note in g.notes:
            print("  note: " + note)
        os.makedirs(args.results, exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
        bad = [n for n in g.notes if "expected" in n]
        if bad:
            raise SystemExit("growth bench: " + "; ".join(bad))
    finally:
        g.close()
        pg.stop()
        if keep:
            bench.log(f"kept {work}")
        else:
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
