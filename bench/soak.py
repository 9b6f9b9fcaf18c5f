#!/usr/bin/env python3
"""A bounded soak of one Signet server: many clients push, pull, sign and delete at once
while garbage collection runs on a short schedule; at the end `signet fsck` must be
clean, every image that was not deleted must pull back with its digest, every deleted
one must be gone, and the server's memory and open files must be back near where they
were once it had warmed up.

    python3 bench/soak.py                 # 3 minutes (--minutes N to change)
    python3 bench/soak.py --smoke         # 30 seconds
    python3 bench/soak.py --signet target/release/signet --clients 16

Loopback only, fresh data in a temporary folder, bounded in time and in client count.
Writes a summary to bench/results/soak-latest.json (and prints it); exits non-zero when
any check failed. Only the Python standard library is used.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
COSIGN_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"

# How much the server may have grown after the load, compared with the sample taken
# once it had warmed up: allocator arenas and the manifest cache keep some memory.
RSS_SLACK_KIB = 64 * 1024
FD_SLACK = 8


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def open_fds(pid):
    """Open descriptors, except the SQLite database's: its connection pool grows with
    concurrency up to its bound, which is no leak."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        n += "/signet.db" not in target
    return n


def descriptor(media_type, data, **extra):
    d = {"mediaType": media_type, "digest": sha256(data), "size": len(data)}
    d.update(extra)
    return d


class Unexpected(Exception):
    """A response the protocol does not allow for this request."""


class Client:
    """One keep-alive HTTP/1.1 connection, reopened when the server closed it."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.conn = None
        self.reconnects = 0

    def req(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, resp.headers, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed while idle: every request
                # here is safe to send again (uploads are content-addressed, manifest
                # PUTs and DELETEs idempotent).
                self.conn.close()
                self.conn = None
                self.reconnects += 1
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def expect(self, status, method, path, body=None, headers=None):
        got, h, data = self.req(method, path, body, headers)
        if got != status:
            raise Unexpected(f"{method} {path}: {got} (wanted {status}) {data[:200]!r}")
        return h, data

    def push_blob(self, repo, data):
        self.expect(201, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}", data,
                    {"Content-Type": "application/octet-stream"})

    def push_blob_chunked(self, repo, data):
        h, _ = self.expect(202, "POST", f"/v2/{repo}/blobs/uploads/")
        loc = h["Location"]
        half = len(data) // 2
        h, _ = self.expect(202, "PATCH", loc, data[:half],
                           {"Content-Type": "application/octet-stream",
                            "Content-Range": f"0-{half - 1}"})
        loc = h["Location"]
        sep = "&" if "?" in loc else "?"
        self.expect(201, "PUT", f"{loc}{sep}digest={sha256(data)}", data[half:],
                    {"Content-Type": "application/octet-stream"})

    def put_manifest(self, repo, ref, data):
        h, _ = self.expect(201, "PUT", f"/v2/{repo}/manifests/{ref}", data,
                           {"Content-Type": OCI_MANIFEST})
        return h.get("Docker-Content-Digest")


class Image:
    def __init__(self, repo, tag, manifest, blobs):
        self.repo, self.tag, self.manifest, self.blobs = repo, tag, manifest, blobs
        self.digest = sha256(manifest)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}
        self.errors = {}
        self.samples = []

    def op(self, name):
        with self.lock:
            self.ops[name] = self.ops.get(name, 0) + 1

    def error(self, name, detail):
        with self.lock:
            self.errors.setdefault(name, []).append(detail)
        log(f"ERROR {name}: {detail}")


class Worker(threading.Thread):
    """Owns one repository: pushes images, pulls them back, signs and deletes them."""

    def __init__(self, index, port, deadline, stats, seed):
        super().__init__(daemon=True)
        self.index, self.deadline, self.stats = index, deadline, stats
        self.client = Client("127.0.0.1", port)
        self.repo = f"soak/w{index}"
        self.rng = random.Random(seed)
        self.live = {}      # tag -> Image
        self.deleted = []   # Images deleted, which must stay gone
        self.signed = {}    # manifest digest -> signature Image
        self.next_tag = 0

    def run(self):
        ops = [("push", 4), ("pull", 6), ("sign", 2), ("delete", 1), ("retag", 1)]
        names = [n for n, w in ops for _ in range(w)]
        while time.monotonic() < self.deadline:
            op = self.rng.choice(names)
            if op != "push" and not self.live:
                op = "push"
            try:
                getattr(self, op)()
                self.stats.op(op)
            except Unexpected as e:
                self.stats.error(op, str(e))
            except (OSError, http.client.HTTPException) as e:
                self.stats.error(op, f"transport: {e!r}")

    def push(self):
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "n": self.rng.getrandbits(64)}).encode()
        layers = [os.urandom(self.rng.choice([512, 8_000, 64_000, 300_000]))
                  for _ in range(self.rng.randint(1, 3))]
        # A base layer shared by every worker: concurrent pushes of one digest.
        layers.append(b"soak shared base layer\n" * 100)
        for i, blob in enumerate([config] + layers):
            if i % 2:
                self.client.push_blob_chunked(self.repo, blob)
            else:
                self.client.push_blob(self.repo, blob)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, l) for l in layers],
        }).encode()
        tag = f"t{self.next_tag}"
        self.next_tag += 1
        got = self.client.put_manifest(self.repo, tag, manifest)
        image = Image(self.repo, tag, manifest, [config] + layers)
        if got != image.digest:
            raise Unexpected(f"pushed {image.digest}, server says {got}")
        self.live[tag] = image

    def pull_image(self, image, check_blobs=True):
        h, body = self.client.expect(200, "GET", f"/v2/{image.repo}/manifests/{image.tag}",
                                     headers={"Accept": OCI_MANIFEST})
        if body != image.manifest or h.get("Docker-Content-Digest") != image.digest:
            raise Unexpected(f"{image.repo}:{image.tag} served other bytes")
        if check_blobs:
            for blob in image.blobs:
                _, data = self.client.expect(200, "GET",
                                             f"/v2/{image.repo}/blobs/{sha256(blob)}")
                if data != blob:
                    raise Unexpected(f"{image.repo}@{sha256(blob)} served other bytes")

    def pull(self):
        self.pull_image(self.live[self.rng.choice(sorted(self.live))])

    def sign(self):
        """A cosign-style signature: `sha256-<hex>.sig`, one simple-signing layer."""
        image = self.live[self.rng.choice(sorted(self.live))]
        payload = json.dumps({"critical": {
            "identity": {"docker-reference": f"127.0.0.1/{image.repo}"},
            "image": {"docker-manifest-digest": image.digest},
            "type": "cosign container image signature"},
            "optional": {"n": self.rng.getrandbits(32)}}).encode()
        config = json.dumps({"architecture": "", "os": "", "config": {},
                             "rootfs": {"type": "layers",
                                        "diff_ids": [sha256(payload)]}}).encode()
        self.client.push_blob(self.repo, payload)
        self.client.push_blob(self.repo, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(COSIGN_LAYER, payload, annotations={
                "dev.cosignproject.cosign/signature": "c29haw=="})],
        }).encode()
        tag = image.digest.replace(":", "-") + ".sig"
        self.client.put_manifest(self.repo, tag, manifest)
        self.signed[image.digest] = Image(self.repo, tag, manifest, [config, payload])

    def delete(self):
        tag = self.rng.choice(sorted(self.live))
        image = self.live.pop(tag)
        self.client.expect(202, "DELETE", f"/v2/{self.repo}/manifests/{image.digest}")
        self.deleted.append(image)
        # Deleting by digest removes every tag that pointed at it.
        for other in [t for t, i in self.live.items() if i.digest == image.digest]:
            self.live.pop(other)
        # Its signature goes with it (attachments follow their subject).
        sig = self.signed.pop(image.digest, None)
        if sig is not None:
            self.deleted.append(sig)

    def retag(self):
        """Moves a tag to another image: the old one is untagged, GC's to collect."""
        tags = sorted(self.live)
        if len(tags) < 2:
            return self.push()
        src, dst = self.rng.sample(tags, 2)
        image = self.live[src]
        self.client.put_manifest(self.repo, dst, image.manifest)
        old = self.live[dst]
        self.live[dst] = Image(self.repo, dst, image.manifest, image.blobs)
        if all(i.digest != old.digest for i in self.live.values()):
            # No tag reaches it any more; untagged manifests are collected, and its
            # signature with it.
            self.deleted.append(Image(self.repo, old.digest, old.manifest, []))
            sig = self.signed.pop(old.digest, None)
            if sig is not None:
                self.deleted.append(sig)

    def verify_end(self):
        """Every live image (and signature) whole; every deleted one gone."""
        problems = []
        for image in list(self.live.values()) + list(self.signed.values()):
            try:
                self.pull_image(image)
            except (Unexpected, OSError, http.client.HTTPException) as e:
                problems.append(str(e))
        live_digests = {i.digest for i in self.live.values()}
        live_digests |= {i.digest for i in self.signed.values()}
        for image in self.deleted:
            if image.digest in live_digests:
                continue  # pushed again since
            status, _, _ = self.client.req("GET",
                                           f"/v2/{image.repo}/manifests/{image.digest}",
                                           headers={"Accept": OCI_MANIFEST})
            if status != 404:
                problems.append(f"{image.repo}@{image.digest} deleted, but GET says {status}")
        return problems


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"signet exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v2/")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("signet did not answer")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--smoke", action="store_true", help="30 seconds")
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--gc-interval", type=int, default=5, help="seconds between collections")
    ap.add_argument("--signet", default=os.path.join(ROOT, "target", "debug", "signet"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "soak-latest.json"))
    args = ap.parse_args()
    seconds = 30.0 if args.smoke else args.minutes * 60
    if not os.path.exists(args.signet):
        raise SystemExit(f"{args.signet} is missing: cargo build-all")

    tmp = tempfile.mkdtemp(prefix="signet-soak-")
    data = os.path.join(tmp, "data")
    config = os.path.join(tmp, "signet.toml")
    # Grace covers the longest push here (well under a second); untagged manifests
    # go, so retagging feeds the collector.
    with open(config, "w") as f:
        f.write(f"[gc]\ninterval_secs = {args.gc_interval}\ngrace_secs = 3\n"
                "delete_untagged = true\n[uploads]\nexpire_after_secs = 60\n")
    port = free_port()
    errlog = open(os.path.join(tmp, "signet.log"), "w")
    proc = subprocess.Popen(
        [args.signet, "--config", config, "serve", "--listen", f"127.0.0.1:{port}",
         "--data-dir", data],
        stdout=subprocess.DEVNULL, stderr=errlog,
        env=dict(os.environ, SIGNET__LOG__LEVEL="warn"))
    failures = []
    try:
        wait_ready(port, proc)
        stats = Stats()
        # Warm-up: a few seconds of the same load, so the baseline is the server's
        # working size, not its empty start.
        warm = max(5.0, seconds * 0.1)
        log(f"warm-up {warm:.0f}s with {args.clients} clients")
        warmers = [Worker(100 + i, port, time.monotonic() + warm, stats, args.seed * 1000 + i)
                   for i in range(args.clients)]
        for w in warmers:
            w.start()
        for w in warmers:
            w.join()
        time.sleep(1)
        base = {"rss_kib": proc_status(proc.pid, "VmRSS"), "fds": open_fds(proc.pid)}
        log(f"baseline {base}; soak {seconds:.0f}s")

        stats.ops.clear()
        started = time.monotonic()
        deadline = started + seconds
        workers = [Worker(i, port, deadline, stats, args.seed * 1000 + 500 + i)
                   for i in range(args.clients)]
        for w in workers:
            w.start()
        peak = dict(base)
        while any(w.is_alive() for w in workers):
            time.sleep(1)
            if proc.poll() is not None:
                failures.append(f"signet died with {proc.returncode}")
                break
            rss, fds = proc_status(proc.pid, "VmRSS"), open_fds(proc.pid)
            peak = {"rss_kib": max(peak["rss_kib"], rss), "fds": max(peak["fds"], fds)}
        for w in workers:
            w.join(timeout=120)
        elapsed = time.monotonic() - started
        log(f"load done after {elapsed:.0f}s: {stats.ops}")

        # Let the collector run at least once more, then check everything.
        time.sleep(args.gc_interval + 4)
        # Each worker checks its own repository, all at once (one connection each).
        results = {}
        checkers = [threading.Thread(target=lambda w=w: results.__setitem__(w.index,
                                                                           w.verify_end()))
                    for w in workers + warmers]
        for t in checkers:
            t.start()
        for t in checkers:
            t.join()
        problems = [p for ps in results.values() for p in ps]
        for w in workers + warmers:
            if w.client.conn is not None:
                w.client.conn.close()
        if problems:
            failures += problems[:20]
        live_images = sum(len(w.live) for w in workers + warmers)
        deleted_images = sum(len(w.deleted) for w in workers + warmers)

        # Memory and descriptors, after the load (given a moment to settle).
        time.sleep(2)
        end = {"rss_kib": proc_status(proc.pid, "VmRSS"), "fds": open_fds(proc.pid)}
        if end["fds"] > base["fds"] + FD_SLACK:
            failures.append(f"open fds {base['fds']} -> {end['fds']}")
        if end["rss_kib"] > base["rss_kib"] + RSS_SLACK_KIB:
            failures.append(f"RSS {base['rss_kib']} KiB -> {end['rss_kib']} KiB")

        metrics = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        metrics.request("GET", "/metrics")
        text = metrics.getresponse().read().decode(errors="replace")
        gc_runs = {}
        for line in text.splitlines():
            if line.startswith("signet_gc_runs_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                gc_runs[outcome] = gc_runs.get(outcome, 0) + int(float(line.split()[-1]))

        fsck = subprocess.run(
            [args.signet, "--config", config, "fsck", "--json", "--data-dir", data],
            capture_output=True, text=True, timeout=600)
        try:
            fsck_report = json.loads(fsck.stdout)
        except json.JSONDecodeError:
            fsck_report = {"stdout": fsck.stdout[-2000:], "stderr": fsck.stderr[-2000:]}
        if fsck.returncode != 0:
            failures.append(f"fsck: {json.dumps(fsck_report.get('problems', fsck_report))[:2000]}")

        errors = sum(len(v) for v in stats.errors.values())
        if errors:
            failures.append(f"{errors} operations failed")
        summary = {
            "mode": "smoke" if args.smoke else "full",
            "seconds": round(elapsed, 1),
            "clients": args.clients,
            "gc_interval_secs": args.gc_interval,
            "gc_runs": gc_runs,
            "operations": sum(stats.ops.values()),
            "operations_by_kind": stats.ops,
            "errors": errors,
            "errors_by_kind": {k: v[:5] for k, v in stats.errors.items()},
            "reconnects": sum(w.client.reconnects for w in workers + warmers),
            "images_live_at_end": live_images,
            "images_deleted_or_untagged": deleted_images,
            "fsck_clean": fsck.returncode == 0,
            "fsck": {k: fsck_report.get(k) for k in
                     ("blobs_checked", "bytes_checked", "manifests_checked", "tags_checked")},
            "rss_kib": {"baseline": base["rss_kib"], "peak": peak["rss_kib"],
                        "end": end["rss_kib"]},
            "open_fds": {"baseline": base["fds"], "peak": peak["fds"], "end": end["fds"]},
            "failures": failures,
            "ok": not failures,
        }
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        errlog.close()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(json.dumps(summary, indent=2))
    if failures:
        log(f"FAILED; server log kept in {tmp}")
        sys.exit(1)
    subprocess.run(["rm", "-rf", tmp], check=False)


if __name__ == "__main__":
    main()
