#!/usr/bin/env python3
"""Faults across replicas, under load: three Signet replicas on PostgreSQL and SeaweedFS
behind nginx take a mixed load while one fault at a time is injected; afterwards every
acknowledged write must be there, byte for byte.

    python3 bench/chaos.py                 # full: release build, 20 s faults
    python3 bench/chaos.py --smoke --debug # about two minutes, debug binary (CI)

The deployment: PostgreSQL (one throwaway cluster), SeaweedFS (`weed mini`, one bucket),
three replicas (the first reaches PostgreSQL through a TCP proxy the harness can cut),
nginx round robin in front (a request that fails to connect goes to the next replica;
nothing is retried once sent), garbage collection every 10 s on every replica (under
its lease), a sync job mirroring an upstream Signet every 5 s, and pull-through of the
same upstream.

The load, each worker a client that retries as skopeo and podman do (a reset, a 5xx or a
429 is tried again, with backoff, for up to 90 s): monolithic pushes, chunked pushes
(each request of an upload may land on another replica), cosign signatures appended to
pushed images, pulls checked byte for byte (of pushed, mirrored and pulled-through
images), pushes deleted again, and real `skopeo copy --retry-times` and `podman push`
pushes (podman retries as containers/image does).

The faults, one at a time, each followed by a quiet gap:

- kill -9 of a replica, restarted at the end of the window;
- PostgreSQL stopped with `pg_ctl -m immediate` and started again;
- SeaweedFS killed for the window, then started on the same folder and ports;
- the first replica cut from PostgreSQL (the proxy drops every connection and refuses
  new ones) for the window;
- the third replica's data folder on a full disk (a tmpfs filled to the last byte) for
  the window.

Afterwards: every acknowledged push pulls by digest byte for byte (manifest and blobs),
its tag points at it, every acknowledged signature is there, every acknowledged delete
stays deleted, no error happened outside a fault window (the window plus `settle`
seconds), and `signet fsck` is clean once `signet gc` has run (what the first fsck
found, GC must have removed: it is reported). The report gives,
per fault, the operations acknowledged and the errors inside the window, and the time
from the fault's end to each worker's first success (p50 and p99); it is printed and
written to bench/results/chaos[-smoke]-latest.json. Exits non-zero when a check fails.
Everything runs on 127.0.0.1, bounded in time.
"""

import http.client
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (servers, free ports, the signet binary)
import scaleout  # noqa: E402  (the throwaway PostgreSQL cluster, the balancer)

FULL = dict(window=20, gap=15, warmup=10, settle=10, workers=2)
SMOKE = dict(window=4, gap=4, warmup=4, settle=10, workers=1)
OCI_MANIFEST = bench.OCI_MANIFEST
RETRY_FOR = 90.0


sha256 = bench.digest_of


def log(msg):
    bench.log(f"chaos: {msg}")


# ---------------------------------------------------------------- the deployment

class Seaweed:
    """`weed mini` on fixed ports and folder, so it can be killed and started again."""

    def __init__(self, folder):
        self.dir = os.path.join(folder, "weed")
        os.makedirs(self.dir)
        self.ports = [bench.free_port() for _ in range(10)]
        self.key, self.secret = "signet", secrets.token_hex(16)
        self.proc = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.ports[0]}"

    def start(self):
        p = self.ports
        argv = [shutil.which("weed"), "mini", f"-dir={self.dir}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-s3.port={p[0]}", f"-s3.port.grpc={p[1]}",
                f"-master.port={p[2]}", f"-master.port.grpc={p[3]}", f"-filer.port={p[4]}",
                f"-filer.port.grpc={p[5]}", f"-volume.port={p[6]}",
                f"-volume.port.grpc={p[7]}", f"-admin.port={p[8]}",
                f"-admin.port.grpc={p[9]}", "-webdav=false", "-admin.ui=false",
                "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-bucket=signet"]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.key, AWS_SECRET_ACCESS_KEY=self.secret)
        logf = open(self.dir + ".log", "ab")
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=logf, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: see {self.dir}.log")
            probe = subprocess.run(
                ["curl", "-sf", "-m", "5", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user",
                 f"{self.key}:{self.secret}", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                 "-X", "PUT", "--data-binary", "ready", f"{self.endpoint}/signet/probe"],
                capture_output=True)
            if probe.returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError("SeaweedFS not ready within 60 s")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def toml(self):
        return (f'[storage.s3]\nendpoint = "{self.endpoint}"\nregion = "us-east-1"\n'
                f'bucket = "signet"\naccess_key_id = "{self.key}"\n'
                f'secret_access_key = "{self.secret}"\nallow_http = true\n')


class Proxy(threading.Thread):
    """A TCP proxy to `target`; `cut()` drops every connection and refuses new ones
    until `restore()`."""

    def __init__(self, target_port):
        super().__init__(daemon=True)
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets = set()
        self.open = True

    def run(self):
        while True:
            client, _ = self.listener.accept()
            with self.lock:
                if not self.open:
                    client.close()
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            self.sockets.discard(src)
            self.sockets.discard(dst)

    def cut(self):
        with self.lock:
            self.open = False
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.sockets.clear()

    def restore(self):
        with self.lock:
            self.open = True


def nginx(folder, replicas):
    """The balancer: a replica that fails to connect is passed over for 2 s; bodies are
    streamed both ways."""
    return scaleout.balancer(
        folder, replicas, "chaos", server_params=" max_fails=1 fail_timeout=2s",
        http_extra="\n  client_max_body_size 0;",
        location_extra="\n      proxy_request_buffering off;\n      proxy_buffering off;"
                       "\n      proxy_connect_timeout 2s;\n      proxy_read_timeout 120s;")


def replica_config(folder, name, metadata_url, weed, upstream):
    d = os.path.join(folder, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(folder, name + ".toml")
    with open(path, "w") as f:
        f.write(f"""[storage]
data_dir = "{d}"
metadata_url = "{metadata_url}"
{weed.toml()}
[gc]
interval_secs = 10
grace_secs = 120
# A replica killed during a collection holds its lease until the lease lapses: short
# here, so the closing GC is not refused for the default ten minutes.
lease_secs = 15

[[sync.jobs]]
name = "mirror"
upstream = "{upstream}"
repositories = ["up/**"]
destination_prefix = "mirror"
interval_secs = 5

[[sync.pull_through]]
prefix = "cache"
upstream = "{upstream}"
""")
    return path, d


def start(server):
    """Starts `server`; a failure names the end of its log."""
    try:
        server.start()
    except Exception as e:
        tail = ""
        if server.log_path and os.path.exists(server.log_path):
            with open(server.log_path, errors="replace") as f:
                tail = "\n".join(l for l in f.read().splitlines() if "Error" in l or "error" in l)[-1500:]
        raise RuntimeError(f"{server.name}: {e}: {tail}") from e
    return server


def signet_server(b, name, config, folder):
    port = bench.free_port()
    return bench.Server(name, port, [b.signet_bin, "--config", config, "serve", "--listen",
                                     f"127.0.0.1:{port}"],
                        env=dict(os.environ, SIGNET_LOG="warn"),
                        log_path=os.path.join(folder, name + ".log"))


# ---------------------------------------------------------------- the load

class Retry(Exception):
    """An answer a client tries again: a reset, a 5xx, a 429."""


class Journal:
    """What the load did: every acknowledged write, every success and error with its
    time (monotonic seconds)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.images, self.signatures, self.deleted, self.copies = [], [], [], []
        self.successes = []   # (t, worker)
        self.errors = []      # (t, worker, detail)
        self.unretried = []   # answers no client retries (4xx that should not happen)

    def success(self, worker):
        with self.lock:
            self.successes.append((time.monotonic(), worker))

    def error(self, worker, detail):
        with self.lock:
            self.errors.append((time.monotonic(), worker, detail[:300]))


class Worker(threading.Thread):
    def __init__(self, name, lb_port, journal, stop, op):
        super().__init__(daemon=True)
        self.name, self.port, self.journal, self.stop, self.op = name, lb_port, journal, stop, op
        self.conn = None
        self.rng = random.Random(name)

    # One request; Retry on what a real client retries.
    def req(self, method, path, body=None, headers=None, ok=(200,)):
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise Retry(f"{method} {path}: {type(e).__name__} {e}")
        if resp.status in ok:
            return resp, data
        if resp.status >= 500 or resp.status == 429:
            self.close()
            raise Retry(f"{method} {path}: {resp.status} {data[:120]!r}")
        raise AssertionError(f"{method} {path}: {resp.status} {data[:200]!r}")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self):
        while not self.stop.is_set():
            deadline = time.monotonic() + RETRY_FOR
            wait = 0.1
            while True:
                try:
                    self.op(self)
                    self.journal.success(self.name)
                    break
                except Retry as e:
                    self.journal.error(self.name, str(e))
                    if time.monotonic() > deadline:
                        self.journal.unretried.append(f"{self.name}: gave up: {e}")
                        break
                    time.sleep(wait)
                    wait = min(wait * 2, 2.0)
                except AssertionError as e:
                    self.journal.error(self.name, str(e))
                    with self.journal.lock:
                        self.journal.unretried.append(f"{self.name}: {e}")
                    break
            time.sleep(self.rng.uniform(0.02, 0.08))

    # -- helpers
    def push_blob(self, repo, data):
        self.req("POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}", data,
                 {"Content-Type": "application/octet-stream"}, ok=(201,))

    def push_chunked(self, repo, data):
        resp, _ = self.req("POST", f"/v2/{repo}/blobs/uploads/", ok=(202,))
        loc = resp.headers["Location"]
        half = len(data) // 2
        resp, _ = self.req("PATCH", loc, data[:half],
                           {"Content-Type": "application/octet-stream",
                            "Content-Range": f"0-{half - 1}"}, ok=(202,))
        loc = resp.headers["Location"]
        sep = "&" if "?" in loc else "?"
        self.req("PUT", f"{loc}{sep}digest={sha256(data)}", data[half:],
                 {"Content-Type": "application/octet-stream"}, ok=(201,))

    def put_manifest(self, repo, ref, data, media_type=OCI_MANIFEST):
        self.req("PUT", f"/v2/{repo}/manifests/{ref}", data, {"Content-Type": media_type},
                 ok=(201,))


def image_manifest(config, layer):
    return bench.image_manifest(bench.descriptor(bench.OCI_CONFIG, config),
                                [bench.descriptor(bench.OCI_LAYER, layer)])


def image(rng):
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": rng.random(),
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(rng.randint(2048, 65536))
    return config, layer, image_manifest(config, layer)


def op_push(chunked):
    def op(w):
        # One image per op, made once: a retry pushes the same bytes again.
        if getattr(w, "pending", None) is None:
            n = len(w.journal.images)
            w.pending = (f"chaos/{'chunked' if chunked else 'mono'}-{n % 4}",
                         f"{w.name}-{n}", *image(w.rng))
        repo, tag, config, layer, manifest = w.pending
        w.push_blob(repo, config)
        (w.push_chunked if chunked else w.push_blob)(repo, layer)
        w.put_manifest(repo, tag, manifest)
        with w.journal.lock:
            w.journal.images.append((repo, tag, sha256(manifest), manifest,
                                     [sha256(config), sha256(layer)]))
        w.pending = None
    return op


def op_sign(w):
    with w.journal.lock:
        if not w.journal.images:
            return
        repo, _, digest, _, _ = w.rng.choice(w.journal.images)
    payload = json.dumps({"critical": {"identity": {"docker-reference": repo},
                                       "image": {"docker-manifest-digest": digest},
                                       "type": "cosign container image signature"},
                          "optional": {"nonce": w.rng.random()}}).encode()
    config = b"{}"
    manifest = bench.image_manifest(
        bench.descriptor(bench.OCI_CONFIG, config),
        [bench.descriptor(bench.COSIGN_LAYER, payload,
                          annotations={"dev.cosignproject.cosign/signature": "c2ln"})])
    tag = digest.replace(":", "-") + ".sig"
    w.push_blob(repo, config)
    w.push_blob(repo, payload)
    w.put_manifest(repo, tag, manifest)
    with w.journal.lock:
        # The latest signature manifest of a subject is what its tag names.
        w.journal.signatures.append((repo, tag, sha256(manifest)))


def op_pull(w):
    with w.journal.lock:
        images = list(w.journal.images[-50:])
    if images:
        repo, _, digest, manifest, blobs = w.rng.choice(images)
        _, data = w.req("GET", f"/v2/{repo}/manifests/{digest}",
                        headers={"Accept": OCI_MANIFEST})
        assert data == manifest, f"{repo}@{digest}: other bytes"
        blob = w.rng.choice(blobs)
        _, data = w.req("GET", f"/v2/{repo}/blobs/{blob}")
        assert sha256(data) == blob, f"{repo} blob {blob}: other bytes"
    # Mirrored (404 until the first sync run) and pulled through.
    w.req("GET", "/v2/mirror/up/app-0/manifests/v1", headers={"Accept": OCI_MANIFEST},
          ok=(200, 404))
    w.req("GET", f"/v2/cache/up/app-{w.rng.randrange(3)}/manifests/v1",
          headers={"Accept": OCI_MANIFEST})


def op_delete(w):
    if getattr(w, "pending", None) is None:
        w.pending = image(w.rng)
        w.deleting = False
    config, layer, manifest = w.pending
    digest = sha256(manifest)
    if not w.deleting:
        w.push_blob("chaos/scratch", config)
        w.push_blob("chaos/scratch", layer)
        w.put_manifest("chaos/scratch", digest, manifest)
        w.deleting = True
    # A DELETE whose answer was lost finds nothing the second time.
    w.req("DELETE", f"/v2/chaos/scratch/manifests/{digest}", ok=(202, 404))
    with w.journal.lock:
        w.journal.deleted.append(digest)
    w.pending = None


def tar_layer(rng):
    """A real tar layer (podman unpacks what it pulls): one file of random bytes."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        data = rng.randbytes(4096)
        info = tarfile.TarInfo("chaos/data")
        info.size, info.mtime = len(data), 0
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def skopeo_layout(folder):
    """An OCI layout skopeo copies from (also into podman's store): one small image."""
    d = os.path.join(folder, "layout")
    os.makedirs(os.path.join(d, "blobs", "sha256"))
    layer = tar_layer(random.Random(7))
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": [sha256(layer)]}}).encode()
    manifest = image_manifest(config, layer)
    for data in (config, layer, manifest):
        with open(os.path.join(d, "blobs", "sha256", sha256(data)[7:]), "wb") as f:
            f.write(data)
    with open(os.path.join(d, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, f)
    return d, sha256(manifest)


def podman_store(folder, layout):
    """podman with a store of its own (vfs), the layout's image copied into it.

    skopeo copies it in under a name of our choosing: `podman pull oci:<path>` names the
    image after the layout's path, which is no valid reference when a temporary folder's
    random name ends in `_`."""
    d = os.path.join(folder, "podman")
    argv = ["podman", "--root", f"{d}/root", "--runroot", f"{d}/run",
            "--storage-driver", "vfs"]
    store = f"containers-storage:[vfs@{d}/root+{d}/run]localhost/chaos/seed:v1"
    for attempt in range(3):
        pulled = subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}:v1", store],
                                capture_output=True, text=True, timeout=120)
        if pulled.returncode == 0:
            break
        log(f"copy into podman's store, try {attempt + 1}: {pulled.stderr.strip()[-300:]}")
        time.sleep(1)
    else:
        raise RuntimeError(f"copy into podman's store: {pulled.stderr.strip()[-500:]}")
    listed = subprocess.run(argv + ["images", "-q"], check=True, capture_output=True,
                            text=True, timeout=60)
    return argv, listed.stdout.split()[0]


def op_podman(argv, image_id, folder):
    def op(w):
        n = len(w.journal.copies)
        tag = f"p{w.name}-{n}"
        digestfile = os.path.join(folder, f"digest-{w.name}")
        r = subprocess.run(
            argv + ["push", "--tls-verify=false", "--digestfile", digestfile, image_id,
                    f"docker://127.0.0.1:{w.port}/chaos/podman:{tag}"],
            capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise Retry(f"podman push: {r.stderr.strip()[-200:]}")
        with open(digestfile) as f:
            digest = f.read().strip()
        with w.journal.lock:
            w.journal.copies.append(("chaos/podman", tag, digest))
    return op


def op_skopeo(layout, digest):
    def op(w):
        n = len(w.journal.copies)
        tag = f"s{w.name}-{n}"
        r = subprocess.run(
            ["skopeo", "copy", "--retry-times", "5", "--dest-tls-verify=false",
             "--preserve-digests", f"oci:{layout}:v1",
             f"docker://127.0.0.1:{w.port}/chaos/skopeo:{tag}"],
            capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise Retry(f"skopeo copy: {r.stderr.strip()[-200:]}")
        with w.journal.lock:
            w.journal.copies.append(("chaos/skopeo", tag, digest))
    return op


# ---------------------------------------------------------------- checks

def verify(lb_port, journal):
    c = http.client.HTTPConnection("127.0.0.1", lb_port, timeout=60)

    def get(path, accept=OCI_MANIFEST):
        for _ in range(20):
            try:
                c.request("GET", path, headers={"Accept": accept})
                r = c.getresponse()
                return r.status, r.headers, r.read()
            except (OSError, http.client.HTTPException):
                c.close()
                time.sleep(0.5)
        raise RuntimeError(f"GET {path}: no answer")

    failures = []
    for repo, tag, digest, manifest, blobs in journal.images:
        status, _, data = get(f"/v2/{repo}/manifests/{digest}")
        if status != 200 or data != manifest:
            failures.append(f"{repo}@{digest}: {status}, bytes {'equal' if data == manifest else 'differ'}")
            continue
        status, h, _ = get(f"/v2/{repo}/manifests/{tag}")
        if status != 200 or h.get("Docker-Content-Digest") != digest:
            failures.append(f"{repo}:{tag}: {status} {h.get('Docker-Content-Digest')}")
        for blob in blobs:
            status, _, data = get(f"/v2/{repo}/blobs/{blob}", "*/*")
            if status != 200 or sha256(data) != blob:
                failures.append(f"{repo} blob {blob}: {status}")
    # A later signature of the same image moves its tag; every one stays stored.
    present = 0
    for repo, tag, digest in journal.signatures:
        status, _, _ = get(f"/v2/{repo}/manifests/{digest}")
        if status != 200:
            failures.append(f"signature {repo}@{digest} ({tag}): {status}")
        else:
            present += 1
    for repo, tag in {(r, t) for r, t, _ in journal.signatures}:
        status, _, _ = get(f"/v2/{repo}/manifests/{tag}")
        if status != 200:
            failures.append(f"signature tag {repo}:{tag}: {status}")
    for digest in journal.deleted:
        status, _, _ = get(f"/v2/chaos/scratch/manifests/{digest}")
        if status != 404:
            failures.append(f"deleted chaos/scratch@{digest}: {status}")
    for repo, tag, digest in journal.copies:
        status, h, _ = get(f"/v2/{repo}/manifests/{tag}")
        if status != 200 or h.get("Docker-Content-Digest") != digest:
            failures.append(f"{repo}:{tag}: {status}")
    return failures, present


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return round(values[k], 2)


# ---------------------------------------------------------------- main

def main():
    args, b, work = bench.harness("chaos", __doc__,
                                  ("nginx", "weed", "skopeo", "podman", "curl"))
    os.chmod(work, 0o755)
    p = SMOKE if args.smoke else FULL
    t_start = time.monotonic()
    pg, weed, proxy, servers, upstream = scaleout.Postgres(work), Seaweed(work), None, [], None
    journal, stop, workers = Journal(), threading.Event(), []
    tmpfs = os.path.join(work, "replica-3")
    mounted = False
    faults = []
    failures = []
    fsck_reports = {}
    try:
        url = pg.start()
        pg_port = int(url.rsplit(":", 1)[1].split("/")[0])
        weed.start()
        proxy = Proxy(pg_port)
        proxy.start()
        # The upstream sync and pull-through read: a Signet of its own, three images.
        upstream = signet_server(b, "upstream", replica_config_upstream(work), work)
        start(upstream)
        seed = Worker("seed", upstream.port, Journal(), stop, None)
        for n in range(3):
            config, layer, manifest = image(random.Random(n))
            seed.push_blob(f"up/app-{n}", config)
            seed.push_blob(f"up/app-{n}", layer)
            seed.put_manifest(f"up/app-{n}", "v1", manifest)

        # The third replica's data folder on a tmpfs, filled during its fault.
        os.makedirs(tmpfs)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", tmpfs],
                                 capture_output=True).returncode == 0
        replicas = []
        for i in range(3):
            meta = url if i else url.replace(f":{pg_port}/", f":{proxy.port}/")
            cfg, _ = replica_config(work, f"replica-{i + 1}", meta, weed,
                                    upstream.base)
            s = signet_server(b, f"replica-{i + 1}", cfg, work)
            start(s)
            replicas.append(s)
            servers.append(s)
        lb = nginx(work, replicas)
        start(lb)
        servers.append(lb)
        log(f"3 replicas behind nginx :{lb.port}; PostgreSQL :{pg_port}; SeaweedFS "
            f"{weed.endpoint}")

        layout, layout_digest = skopeo_layout(work)
        podman, podman_image = podman_store(work, layout)
        ops = [("mono", op_push(False)), ("chunked", op_push(True)), ("sign", op_sign),
               ("pull", op_pull), ("delete", op_delete),
               ("skopeo", op_skopeo(layout, layout_digest)),
               ("podman", op_podman(podman, podman_image, work))]
        for kind, op in ops:
            for n in range(p["workers"]):
                w = Worker(f"{kind}-{n}", lb.port, journal, stop, op)
                w.start()
                workers.append(w)
        time.sleep(p["warmup"])

        def window(name, begin, end):
            log(f"fault: {name}")
            t0 = time.monotonic()
            detail = begin() or ""
            time.sleep(p["window"])
            end()
            t1 = time.monotonic()
            faults.append(dict(name=name, start=t0, end=t1, detail=detail))
            log(f"fault over: {name} ({t1 - t0:.1f} s)")
            time.sleep(p["gap"])

        victim = replicas[1]
        window("kill -9 of a replica", lambda: victim.proc.kill(),
               lambda: (victim.proc.wait(), start(victim)))
        window("PostgreSQL restart (pg_ctl -m immediate)",
               lambda: pg.run("pg_ctl", "-D", pg.data, "-m", "immediate", "-w", "stop"),
               lambda: pg.run("pg_ctl", "-D", pg.data, "-l", os.path.join(pg.data, "log"),
                              "-w", "-o", f"-p {pg_port} -k {pg.data} "
                              "-c listen_addresses=127.0.0.1", "start"))
        window("SeaweedFS stopped", weed.kill, weed.start)
        window("a replica cut from PostgreSQL", proxy.cut, proxy.restore)
        filler = os.path.join(tmpfs, "filler")

        def fill():
            if not mounted:
                return "skipped: no tmpfs mount here"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
                           capture_output=True)
            return "tmpfs data folder filled to the last byte"

        window("full disk under a replica", fill,
               lambda: os.path.exists(filler) and os.remove(filler))
    except Exception as e:  # a harness failure, reported like a check
        failures.append(f"harness: {type(e).__name__}: {e}")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=150)
        log(f"load stopped: {len(journal.images)} images, {len(journal.signatures)} "
            f"signatures, {len(journal.deleted)} deletes, {len(journal.copies)} skopeo "
            f"and podman pushes acknowledged")

    try:
        if not failures:
            lost, present = verify(lb.port, journal)
            failures += lost
            # The replicas stop first: their scheduled GC would hold the lease the
            # command asks for, and fsck would race their sync runs.
            for s in servers:
                s.stop()
            cfg = os.path.join(work, "replica-2.toml")
            # What the faults left (the first fsck, reported), then what GC leaves: the
            # second must be clean.
            for stage in ("fsck", "gc", "fsck after gc"):
                cmd = [b.signet_bin, "--config", cfg]
                cmd += ["gc"] if stage == "gc" else ["fsck", "--json"]
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                # A replica killed during its own collection holds the lease until it
                # lapses (`lease_secs` above).
                deadline = time.monotonic() + 60
                while (stage == "gc" and r.returncode != 0 and time.monotonic() < deadline
                       and "another garbage collection is running" in r.stderr):
                    time.sleep(2)
                    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                report = {"clean": r.returncode == 0}
                if stage != "gc":
                    try:
                        problems = json.loads(r.stdout).get("problems", [])
                    except ValueError:
                        problems = [{"kind": "unreadable report"}]
                    kinds = {}
                    for problem in problems:
                        kinds[problem.get("kind")] = kinds.get(problem.get("kind"), 0) + 1
                    report["problems"] = kinds
                fsck_reports[stage] = report
                if r.returncode != 0 and stage != "fsck":
                    failures.append(f"{stage}: {r.stdout[-1500:]} {r.stderr[:1500]}")
    finally:
        for s in servers:
            s.stop()
        if upstream:
            upstream.stop()
        weed.kill()
        pg.stop()
        if mounted:
            subprocess.run(["umount", "-l", tmpfs], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    # Errors inside a window (plus settle) are the faults'; any other is a failure.
    rows = []
    windows = [(f["start"], f["end"] + p["settle"]) for f in faults]
    outside = [e for e in journal.errors if not any(a <= e[0] <= z for a, z in windows)]
    for f in faults:
        a, z = f["start"], f["end"] + p["settle"]
        errors = [e for e in journal.errors if a <= e[0] <= z]
        acked = sum(1 for t, _ in journal.successes if f["start"] <= t <= f["end"])
        firsts = {}
        for t, worker in journal.successes:
            if t > f["end"] and worker not in firsts:
                firsts[worker] = t - f["end"]
        rows.append(dict(fault=f["name"], detail=f["detail"],
                         window_s=round(f["end"] - f["start"], 1),
                         acknowledged_in_window=acked, errors_in_window=len(errors),
                         errors_sample=sorted({e[2][:120] for e in errors})[:5],
                         recovery_p50_s=percentile(list(firsts.values()), 50),
                         recovery_p99_s=percentile(list(firsts.values()), 99)))
    if outside:
        failures.append(f"{len(outside)} errors outside the fault windows: "
                        f"{[e[2] for e in outside[:5]]}")
    failures += journal.unretried
    out = bench.run_record(
        args, p, t_start,
        acknowledged=dict(images=len(journal.images), signatures=len(journal.signatures),
                          deletes=len(journal.deleted),
                          skopeo_and_podman_pushes=len(journal.copies),
                          operations=len(journal.successes)),
        faults=rows,
        errors_outside_windows=len(outside),
        fsck=fsck_reports,
        failures=failures[:50],
    )
    print(f"\nfaults across 3 replicas (PostgreSQL, SeaweedFS, nginx), {p['window']} s each:")
    print(f"  {'fault':42} {'acked':>6} {'errors':>7} {'recovery p50':>13} {'p99':>6}")
    for r in rows:
        print(f"  {r['fault']:42} {r['acknowledged_in_window']:>6} {r['errors_in_window']:>7} "
              f"{str(r['recovery_p50_s']):>12}s {str(r['recovery_p99_s']):>5}s")
    print(f"  acknowledged: {out['acknowledged']}; errors outside windows: {len(outside)}; "
          f"fsck: {fsck_reports}")
    os.makedirs(args.results, exist_ok=True)
    name = "chaos-smoke-latest.json" if args.smoke else "chaos-latest.json"
    with open(os.path.join(args.results, name), "w") as f:
        json.dump(out, f, indent=2)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures[:20]))
        sys.exit(1)


def replica_config_upstream(folder):
    d = os.path.join(folder, "upstream")
    os.makedirs(d)
    path = os.path.join(folder, "upstream.toml")
    with open(path, "w") as f:
        f.write(f'[storage]\ndata_dir = "{d}"\n')
    return path


if __name__ == "__main__":
    main()
