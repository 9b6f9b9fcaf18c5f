#!/usr/bin/env python3
"""Signet vs. the reference registry (docker-registry, distribution 2.8.2) vs. nginx
(static files with sendfile: the physical limit), side by side, in one run.

    python3 bench/bench.py                 # full run: builds Signet in release mode
    python3 bench/bench.py --smoke --debug # seconds, tiny counts, debug binary (CI)

Everything runs on 127.0.0.1 with fresh data in a temporary folder; every workload is
bounded in time (wrk -d, subprocess timeouts) and in requests (fixed counts). Prints one
table (absolute figures and Signet/peer ratios, with the project's targets) and writes
it as JSON under bench/results/. Only the Python standard library, curl, wrk, nginx,
docker-registry and skopeo are used.
"""

import argparse
import concurrent.futures as cf
import hashlib
import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
COSIGN_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
ACCEPT = ", ".join([
    OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])

# Workloads, in the order they run (--only selects some).
WORKLOADS = ("loadgen", "manifests", "blobs", "push", "skopeo", "lists", "referrers", "cosign",
             "restart")

# Sizes and counts: full run, then smoke (--smoke).
FULL = dict(conns=(1, 64), dur=3, big_blob=256 * MIB, push_blob=1024 * MIB, chunk=16 * MIB,
            images=200, tags=10_000, repos=10_000, referrers=1_000, sigs=100,
            appends=30, walks=3, streams=16, repeats=3, push_rounds=1, small_blobs=20_000)
SMOKE = dict(conns=(64,), dur=1, big_blob=8 * MIB, push_blob=32 * MIB, chunk=16 * MIB,
             images=3, tags=150, repos=150, referrers=20, sigs=5,
             appends=3, walks=1, streams=4, repeats=1, push_rounds=1, small_blobs=200)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n
    return sha256_file(path)


# ---------------------------------------------------------------- processes

def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proc_tree(pid):
    """pid and its children (nginx workers)."""
    pids = [pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def cpu_seconds(pid):
    total = 0.0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


class RssSampler:
    """Samples VmRSS every 10 ms and resets/reads VmHWM around a measured section."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def __enter__(self):
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        self.base = proc_status(self.pid, "VmRSS")
        self.peak = self.base
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()
        self.peak = max(self.peak, proc_status(self.pid, "VmHWM"))
        self.growth = max(0, self.peak - self.base)


def wait_http(url, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.args[0]}), rc={proc.returncode}")
        try:
            u = urllib.parse.urlsplit(url)
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=1)
            c.request("GET", u.path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status < 500:
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


class Server:
    def __init__(self, name, port, argv, env=None, log_path=None):
        self.name, self.port, self.argv = name, port, argv
        self.env, self.log_path = env, log_path
        self.proc = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, probe="/v2/"):
        logf = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=logf, env=self.env,
                                     start_new_session=True)
        wait_http(self.base + probe, self.proc)
        self.startup = time.monotonic() - t0
        return self.startup

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ---------------------------------------------------------------- HTTP client

class Client:
    """A keep-alive HTTP/1.1 client, one connection per thread."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = http.client.HTTPConnection(self.host, self.port, timeout=120, blocksize=MIB)
            self.local.c = c
        return c

    def req(self, method, path, body=None, headers=None, expect=None):
        headers = dict(headers or {})
        if body is None and method in ("PUT", "POST", "PATCH"):
            headers.setdefault("Content-Length", "0")
        for attempt in range(6):
            c = self.conn()
            try:
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                c.close()
                self.local.c = None
                if attempt or (body is not None and not isinstance(body, (bytes, str))):
                    raise
                continue
            # A busy server says when to come back (503/429 with Retry-After), as
            # docker and containerd honour it; a streamed body cannot be sent twice.
            retry = r.getheader("Retry-After")
            if r.status in (429, 503) and retry and attempt < 5 and \
                    (body is None or isinstance(body, (bytes, str))):
                self.retries = getattr(self, "retries", 0) + 1
                time.sleep(min(float(retry), 5.0))
                continue
            break
        if expect and r.status not in expect:
            raise RuntimeError(f"{method} {path} -> {r.status}: {data[:300]!r}")
        return r.status, r.headers, data

    @staticmethod
    def path_of(location):
        u = urllib.parse.urlsplit(location)
        return u.path + ("?" + u.query if u.query else "")

    def start_upload(self, repo):
        _, h, _ = self.req("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
        return self.path_of(h["Location"])

    @staticmethod
    def with_digest(loc, digest):
        return loc + ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(digest)

    def push_blob(self, repo, data, digest=None):
        digest = digest or digest_of(data)
        loc = self.start_upload(repo)
        self.req("PUT", self.with_digest(loc, digest), body=data,
                 headers={"Content-Type": "application/octet-stream",
                          "Content-Length": str(len(data))}, expect=(201,))
        return digest

    def mount(self, repo, digest, frm):
        st, h, _ = self.req("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={frm}",
                            expect=(201, 202))
        if st == 202:  # not mountable here: the spec says upload instead
            raise RuntimeError(f"mount of {digest} into {repo} refused")

    def put_manifest(self, repo, ref, data, media_type=OCI_MANIFEST):
        self.req("PUT", f"/v2/{repo}/manifests/{ref}", body=data,
                 headers={"Content-Type": media_type}, expect=(201,))


def descriptor(media_type, data_or_digest, size=None, **extra):
    if isinstance(data_or_digest, bytes):
        d = {"mediaType": media_type, "digest": digest_of(data_or_digest),
             "size": len(data_or_digest)}
    else:
        d = {"mediaType": media_type, "digest": data_or_digest, "size": size}
    d.update(extra)
    return d


def image_manifest(config, layers, **extra):
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    m.update(extra)
    return json.dumps(m, separators=(",", ":")).encode()


def parallel(fn, items, workers=16):
    with cf.ThreadPoolExecutor(workers) as ex:
        for _ in ex.map(fn, items):
            pass


# ---------------------------------------------------------------- wrk

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,'..
    '"mean_us":%f,"errors":%d,"status_errors":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(99), latency.mean, e.connect + e.read + e.write + e.timeout,
    e.status))
end
"""


def wrk(url, conns, dur, method="GET", headers=None, range_spec=None, workdir="/tmp"):
    """One wrk run; returns req/s, MiB/s, p50/p99 in ms and wrk's own CPU seconds."""
    lines = [f'wrk.method = "{method}"']
    for k, v in (headers or {}).items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    if range_spec:  # (size, length): random aligned Range per request
        size, length = range_spec
        lines.append(f"local n = {size // length}")
        lines.append("request = function()\n"
                     f"  local s = math.random(0, n - 1) * {length}\n"
                     f'  wrk.headers["Range"] = "bytes=" .. s .. "-" .. (s + {length} - 1)\n'
                     "  return wrk.format()\nend")
    lines.append(WRK_DONE)
    fd, script = tempfile.mkstemp(suffix=".lua", dir=workdir)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    threads = 1 if conns == 1 else 2
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{dur}s", "--timeout", "5s",
                          "-s", script, url], capture_output=True, text=True,
                         timeout=dur + 30).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.unlink(script)
    line = [l for l in out.splitlines() if l.startswith("WRKJSON ")]
    if not line:
        raise RuntimeError(f"wrk printed no summary for {url}:\n{out}")
    r = json.loads(line[0][8:])
    secs = r["duration_us"] / 1e6
    return {
        "rps": r["requests"] / secs,
        "mib_s": r["bytes"] / secs / MIB,
        "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
        "requests": r["requests"], "errors": r["errors"] + r["status_errors"],
        "wrk_cpu": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / secs,
    }


LOADGEN = None  # path of signet-bench (bench/src/main.rs), set by Bench.run


def pusher_path(signet_bin):
    """signet-push-blobs (bench/src/push_blobs.rs), built beside the signet binary."""
    return os.environ.get("SIGNET_BENCH_PUSHER") or os.path.join(
        os.path.dirname(signet_bin), "signet-push-blobs")


def push_blobs(pusher, base, repo, prefix, first, count, conns=16):
    """Pushes the blobs `prefix` + index (9 digits) for `first`..`first+count` as a
    client pushes a blob (POST, then PUT with the body), `conns` at once; returns
    (blobs/s, requests retried after 503/429). Bounded by a time that grows with the
    count: 50 blobs/s at the slowest (a million blobs into docker-registry beside other
    work ran past a fixed hour at 190/s)."""
    out = subprocess.run([pusher, "--base", base, "--repo", repo, "--prefix", prefix,
                          "--width", "9", "--first", str(first), "--count", str(count),
                          "-c", str(conns)], capture_output=True, text=True, check=True,
                         timeout=600 + count // 50).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["pushed"] / r["seconds"], r["retries"]


def loadgen(url, conns, dur, method="GET", headers=None):
    """signet-bench: used for HEAD, which wrk 4.1 cannot drive (it waits for a body)."""
    argv = [LOADGEN, "--url", url, "--method", method, "-c", str(conns), "-d", str(dur),
            "-t", "1" if conns == 1 else "2", "--max-requests", "2000000"]
    for k, v in (headers or {}).items():
        argv += ["-H", f"{k}: {v}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=dur + 30,
                         check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = json.loads(out.strip().splitlines()[-1])
    secs = r["duration_us"] / 1e6
    return {
        "rps": r["requests"] / secs, "mib_s": r["bytes"] / secs / MIB,
        "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
        "requests": r["requests"], "errors": r["errors"],
        "wrk_cpu": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / secs,
    }


def wrk_with_server_cpu(server, *a, **kw):
    c0, t0 = cpu_seconds(server.pid), time.monotonic()
    if kw.get("method") == "HEAD":
        kw.pop("workdir", None)
        r = loadgen(*a, **kw)
    else:
        r = wrk(*a, **kw)
    r["server_cpu"] = (cpu_seconds(server.pid) - c0) / (time.monotonic() - t0)
    return r


# ---------------------------------------------------------------- curl streams

def curl_get(url, extra=()):
    out = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w",
                          "%{size_download} %{time_total}", *extra, url],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    size, secs = out.split()
    return int(size), float(secs)


def blob_streams(url, streams, expect_size):
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(streams) as ex:
        sizes = list(ex.map(lambda _: curl_get(url)[0], range(streams)))
    wall = time.monotonic() - t0
    if any(s != expect_size for s in sizes):
        raise RuntimeError(f"short blob download from {url}: {sizes}")
    return sum(sizes) / wall / MIB


def walk(c, first, max_pages=10_000):
    """Follows Link headers from `first` to the end; returns (pages, entries)."""
    path, pages, entries = first, 0, 0
    while path:
        _, h, body = c.req("GET", path, expect=(200,))
        pages += 1
        doc = json.loads(body)
        entries += len(doc.get("tags") or doc.get("repositories") or [])
        link = h.get("Link")
        path = c.path_of(link.split(";")[0].strip().strip("<>")) if link else None
        if pages > max_pages:
            raise RuntimeError("pagination does not end")
    return pages, entries


def run_record(args, params, started, **fields):
    """The head every harness's JSON result starts with, then its own `fields`."""
    return dict({
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "smoke": args.smoke,
        "binary": "debug" if args.debug else "release",
        "params": params,
        "elapsed_s": round(time.monotonic() - started, 1),
    }, **fields)


# ---------------------------------------------------------------- the peers

class Bench:
    def __init__(self, args):
        self.args = args
        self.p = SMOKE if args.smoke else FULL
        self.work = tempfile.mkdtemp(prefix="signet-bench-")
        os.chmod(self.work, 0o755)  # nginx workers run as nobody
        self.results = {}   # metric -> {peer: value}
        self.meta = {}      # metric -> dict(unit, better, target...)
        self.notes = []
        self.servers = {}

    # ---- result bookkeeping

    def wants(self, workload):
        return not self.args.only or workload in self.args.only

    def put(self, metric, peer, value, unit, better="higher"):
        self.results.setdefault(metric, {})[peer] = value
        self.meta.setdefault(metric, {"unit": unit, "better": better})

    # ---- set-up

    def signet_binary(self):
        if os.environ.get("SIGNET_BENCH_BIN"):
            return os.environ["SIGNET_BENCH_BIN"]
        profile = "debug" if self.args.debug else "release"
        if not self.args.no_build:
            if profile == "release":
                cmds = [["cargo", "build", "--release", "-p", "signet-server", "--bin", "signet"],
                        ["cargo", "build", "--release", "-p", "signet-bench"]]
            else:
                # The test command's own build (see .cargo/config.toml): nothing to redo.
                cmds = [["cargo", "build-all"]]
            for cmd in cmds:
                log("building: " + " ".join(cmd))
                subprocess.run(cmd, cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        return os.path.join(target, profile, "signet")

    def make_signet(self):
        d = os.path.join(self.work, "signet")
        os.makedirs(d, exist_ok=True)
        port = free_port()
        env = dict(os.environ, SIGNET_LOG="warn")
        return Server("signet", port, [self.signet_bin, "serve", "--listen",
                                       f"127.0.0.1:{port}", "--data-dir", d + "/data"],
                      env=env, log_path=d + "/log")

    def make_distribution(self):
        d = os.path.join(self.work, "distribution")
        os.makedirs(d + "/storage", exist_ok=True)
        port = free_port()
        with open(d + "/config.yml", "w") as f:
            f.write(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {d}/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
""")
        return Server("distribution", port, ["docker-registry", "serve", d + "/config.yml"],
                      log_path=d + "/log")

    def make_nginx(self):
        d = os.path.join(self.work, "nginx")
        os.makedirs(d + "/logs", exist_ok=True)
        os.makedirs(d + "/html", exist_ok=True)
        port = free_port()
        with open(d + "/nginx.conf", "w") as f:
            f.write(f"""daemon off;
master_process on;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {d}/tmp_body;
  proxy_temp_path {d}/tmp_proxy;
  fastcgi_temp_path {d}/tmp_fcgi;
  uwsgi_temp_path {d}/tmp_uwsgi;
  scgi_temp_path {d}/tmp_scgi;
  server {{
    listen 127.0.0.1:{port};
    root {d}/html;
    location = /v2/ {{ return 200 '{{}}'; }}
    location = /empty {{ return 204; }}
    location /v2/bench/app/manifests/ {{ default_type {OCI_MANIFEST}; }}
    location /v2/bench/app/blobs/ {{ default_type application/octet-stream; }}
  }}
}}
""")
        self.nginx_root = d + "/html"
        return Server("nginx", port, ["nginx", "-p", d, "-c", d + "/nginx.conf"],
                      log_path=d + "/logs/stderr.log")

    def content(self):
        log(f"generating content in {self.work}")
        p = self.p
        self.config = json.dumps({"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        self.layer = os.urandom(4096)
        self.manifest = image_manifest(descriptor(OCI_CONFIG, self.config),
                                       [descriptor(OCI_LAYER, self.layer)])
        self.mdigest = digest_of(self.manifest)
        self.big = os.path.join(self.work, "big.blob")
        self.big_digest = random_file(self.big, p["big_blob"])
        self.push_files = []
        for i in range(2):
            path = os.path.join(self.work, f"push{i}.blob")
            self.push_files.append((path, random_file(path, p["push_blob"])))

    def load_common(self, srv):
        c = Client(srv.base)
        c.push_blob("bench/app", self.config)
        c.push_blob("bench/app", self.layer)
        c.put_manifest("bench/app", "latest", self.manifest)
        loc = c.start_upload("bench/app")
        size = os.path.getsize(self.big)
        with open(self.big, "rb") as f:
            c.req("PUT", c.with_digest(loc, self.big_digest), body=f,
                  headers={"Content-Length": str(size)}, expect=(201,))
        return c

    def load_nginx(self):
        r = self.nginx_root
        os.makedirs(r + "/v2/bench/app/manifests", exist_ok=True)
        os.makedirs(r + "/v2/bench/app/blobs", exist_ok=True)
        for name in ("latest", self.mdigest):
            with open(f"{r}/v2/bench/app/manifests/{name}", "wb") as f:
                f.write(self.manifest)
        os.link(self.big, f"{r}/v2/bench/app/blobs/{self.big_digest}")

    # ---- workloads

    def w_loadgen(self, ngx):
        dur = self.p["dur"]
        for conns in self.p["conns"]:
            r = wrk_with_server_cpu(ngx, ngx.base + "/empty", conns, dur, method="HEAD")
            self.put(f"load generator alone: signet-bench HEAD -> nginx 204, c={conns} "
                     "(req/s)", "nginx", r["rps"], "req/s")
            self.put(f"load generator alone: signet-bench CPU (cores), c={conns}", "nginx",
                     r["wrk_cpu"], "cores", better="info")
            r = wrk_with_server_cpu(ngx, ngx.base + "/empty", conns, dur, workdir=self.work)
            self.put(f"load generator alone: wrk -> nginx 204, c={conns} (req/s)", "nginx",
                     r["rps"], "req/s")
            self.put(f"load generator alone: wrk CPU (cores), c={conns}", "nginx",
                     r["wrk_cpu"], "cores", better="info")
            self.put(f"load generator alone: nginx CPU (cores), c={conns}", "nginx",
                     r["server_cpu"], "cores", better="info")

    def w_manifests(self, srv):
        dur = self.p["dur"]
        variants = [("GET by tag", "GET", "latest"), ("GET by digest", "GET", self.mdigest),
                    ("HEAD by tag", "HEAD", "latest")]
        for label, method, ref in variants:
            url = f"{srv.base}/v2/bench/app/manifests/{ref}"
            for conns in self.p["conns"]:
                r = wrk_with_server_cpu(srv, url, conns, dur, method=method,
                                        headers={"Accept": ACCEPT}, workdir=self.work)
                if r["errors"]:
                    self.notes.append(f"{srv.name}: manifest {label} c={conns}: "
                                      f"{r['errors']} errors")
                key = f"manifest {label}, c={conns}"
                self.put(key + " (req/s)", srv.name, r["rps"], "req/s")
                self.put(key + " p50 (ms)", srv.name, r["p50_ms"], "ms", "lower")
                self.put(key + " p99 (ms)", srv.name, r["p99_ms"], "ms", "lower")
                self.put(key + " server CPU (cores)", srv.name, r["server_cpu"], "cores",
                         "info")

    def w_blobs(self, srv):
        p = self.p
        url = f"{srv.base}/v2/bench/app/blobs/{self.big_digest}"
        size = p["big_blob"]
        one = [blob_streams(url, 1, size) for _ in range(p["repeats"])]
        self.put(f"blob GET {size // MIB} MiB, 1 stream (MiB/s)", srv.name,
                 statistics.median(one), "MiB/s")
        many = [blob_streams(url, p["streams"], size) for _ in range(max(1, p["repeats"] - 1))]
        self.put(f"blob GET {size // MIB} MiB, {p['streams']} streams (MiB/s, total)",
                 srv.name, statistics.median(many), "MiB/s")
        for conns in self.p["conns"]:
            r = wrk(url, conns, p["dur"], range_spec=(size, MIB), workdir=self.work)
            if r["errors"]:
                self.notes.append(f"{srv.name}: Range c={conns}: {r['errors']} errors")
            self.put(f"blob Range GET 1 MiB, c={conns} (MiB/s)", srv.name, r["mib_s"], "MiB/s")
            self.put(f"blob Range GET 1 MiB, c={conns} p99 (ms)", srv.name, r["p99_ms"], "ms",
                     "lower")

    def push_once(self, srv, rep):
        """One monolithic and one chunked push of 1 GiB; returns {metric: value}."""
        p = self.p
        c = Client(srv.base)
        size_mib = p["push_blob"] // MIB
        out = {}
        # monolithic: POST, then PUT ?digest= with the whole body (what docker does)
        path, digest = self.push_files[0]
        with RssSampler(srv.pid) as rss, open(path, "rb") as f:
            t0 = time.monotonic()
            loc = c.start_upload(f"bench/push-mono-{rep}")
            c.req("PUT", c.with_digest(loc, digest), body=f,
                  headers={"Content-Length": str(p["push_blob"])}, expect=(201,))
            secs = time.monotonic() - t0
        out["mono"] = (size_mib / secs, rss.growth / MIB, rss.peak / MIB)
        # chunked: PATCH 16 MiB parts with Content-Range, then PUT ?digest=
        path, digest = self.push_files[1]
        chunk = p["chunk"]
        with RssSampler(srv.pid) as rss, open(path, "rb") as f:
            t0 = time.monotonic()
            loc = c.start_upload(f"bench/push-chunked-{rep}")
            off = 0
            while True:
                data = f.read(chunk)
                if not data:
                    break
                _, h, _ = c.req("PATCH", loc, body=data, headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{off}-{off + len(data) - 1}",
                    "Content-Length": str(len(data))}, expect=(202,))
                loc = c.path_of(h["Location"])
                off += len(data)
            c.req("PUT", c.with_digest(loc, digest), expect=(201,))
            secs = time.monotonic() - t0
        out["chunked"] = (size_mib / secs, rss.growth / MIB, rss.peak / MIB)
        return out

    def w_push(self, servers):
        """Pushes alternate between the registries for `push_rounds` rounds, each round a
        new repository: throughput is the median, RSS growth and peak the worst round.
        One round by default: a later round pushes the same bytes again, so both
        registries then also unlink the previous copy, and on a disk mounted with
        `discard` that unlink is slower than the push itself."""
        p = self.p
        size_mib = p["push_blob"] // MIB
        rounds = {srv.name: [] for srv in servers}
        for rep in range(p["push_rounds"]):
            for srv in servers:
                log(f"push: {srv.name}, round {rep + 1}")
                rounds[srv.name].append(self.push_once(srv, rep))
        for srv in servers:
            for kind, label in (("mono", "monolithic"), ("chunked", f"{p['chunk'] // MIB} MiB chunks")):
                got = [r[kind] for r in rounds[srv.name]]
                short = "monolithic" if kind == "mono" else "chunked"
                self.put(f"push {size_mib} MiB blob, {label} (MiB/s)", srv.name,
                         statistics.median(g[0] for g in got), "MiB/s")
                self.put(f"push {size_mib} MiB {short}: server RSS growth (MiB)", srv.name,
                         max(g[1] for g in got), "MiB", "lower")
                self.put(f"push {size_mib} MiB {short}: server peak RSS (MiB)", srv.name,
                         max(g[2] for g in got), "MiB", "info")
        # Many small blobs (signatures, configs, small layers): the cost per blob.
        n = p["small_blobs"]
        for srv in servers:
            log(f"push: {n} small blobs to {srv.name}")
            rate, retried = push_blobs(pusher_path(self.signet_bin), srv.base,
                                       "bench/small-blobs", f"small blob {srv.name} ", 0, n)
            self.put(f"push {n} small blobs, POST + PUT, 16 connections (blobs/s)", srv.name,
                     rate, "blobs/s")
            if retried:
                self.notes.append(f"{srv.name}: {retried} small-blob pushes answered 503 or "
                                  "429 with Retry-After, and retried")

    def make_images(self):
        """One OCI layout holding N small images of 3 unique layers each."""
        n = self.p["images"]
        lay = os.path.join(self.work, "layout")
        os.makedirs(lay + "/blobs/sha256", exist_ok=True)

        def blob(data):
            d = digest_of(data)
            with open(f"{lay}/blobs/sha256/{d[7:]}", "wb") as f:
                f.write(data)
            return d

        index = []
        for i in range(n):
            layers = []
            for size in (1024, 32 * 1024, 256 * 1024):
                data = os.urandom(size)
                layers.append(descriptor(OCI_LAYER, blob(data), len(data)))
            cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": str(i),
                              "rootfs": {"type": "layers",
                                         "diff_ids": [l["digest"] for l in layers]}}).encode()
            m = image_manifest(descriptor(OCI_CONFIG, blob(cfg), len(cfg)), layers)
            index.append(descriptor(OCI_MANIFEST, blob(m), len(m),
                                    annotations={"org.opencontainers.image.ref.name":
                                                 f"img{i}"}))
        with open(lay + "/index.json", "w") as f:
            json.dump({"schemaVersion": 2, "manifests": index}, f)
        with open(lay + "/oci-layout", "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        with open(self.work + "/policy.json", "w") as f:
            f.write('{"default":[{"type":"insecureAcceptAnything"}]}')
        self.layout = lay

    def w_skopeo(self, srv):
        n = self.p["images"]

        def copy(i):
            subprocess.run(["skopeo", "--policy", self.work + "/policy.json", "copy", "-q",
                            "--dest-tls-verify=false", f"oci:{self.layout}:img{i}",
                            f"docker://127.0.0.1:{srv.port}/bench/small{i}:v1"],
                           check=True, timeout=120, capture_output=True)

        t0 = time.monotonic()
        parallel(copy, range(n), workers=4)
        secs = time.monotonic() - t0
        self.put(f"skopeo push of {n} images x 3 layers, 4 parallel (images/s)", srv.name,
                 n / secs, "images/s")

    def load_tags_and_repos(self, srv, c):
        p = self.p
        c.mount("bench/tags", digest_of(self.config), "bench/app")
        c.mount("bench/tags", digest_of(self.layer), "bench/app")
        t0 = time.monotonic()
        parallel(lambda i: c.put_manifest("bench/tags", f"t{i:05d}", self.manifest),
                 range(p["tags"]))
        secs = time.monotonic() - t0
        self.put(f"load: manifest PUT by tag x{p['tags']}, 16 parallel (req/s)", srv.name,
                 p["tags"] / secs, "req/s")

        def repo(i):
            name = f"bench/r{i:05d}"
            c.mount(name, digest_of(self.config), "bench/app")
            c.mount(name, digest_of(self.layer), "bench/app")
            c.put_manifest(name, "v1", self.manifest)

        t0 = time.monotonic()
        parallel(repo, range(p["repos"]))
        secs = time.monotonic() - t0
        self.put(f"load: {p['repos']} repositories (2 mounts + manifest PUT), "
                 "16 parallel (repos/s)", srv.name, p["repos"] / secs, "repos/s")

    def walk(self, c, first):
        return walk(c, first)

    def w_lists(self, srv, c):
        p = self.p
        times = []
        for _ in range(p["walks"]):
            t0 = time.monotonic()
            pages, entries = self.walk(c, "/v2/bench/tags/tags/list")
            times.append(time.monotonic() - t0)
        self.put(f"tags list: list all {p['tags']} without n, full walk (ms)", srv.name,
                 statistics.median(times) * 1000, "ms", "lower")
        self.put("tags list without n: pages / entries returned", srv.name,
                 f"{pages} / {entries}", "", "info")
        for what, first, total, mid in (
                ("tags list", "/v2/bench/tags/tags/list?n=100", p["tags"],
                 f"/v2/bench/tags/tags/list?n=100&last=t{p['tags'] // 2:05d}"),
                ("_catalog", "/v2/_catalog?n=100", p["repos"] + 5,
                 f"/v2/_catalog?n=100&last=bench/r{p['repos'] // 2:05d}")):
            times = []
            for _ in range(p["walks"]):
                t0 = time.monotonic()
                pages, entries = self.walk(c, first)
                times.append(time.monotonic() - t0)
            n = p["tags"] if what == "tags list" else p["repos"]
            self.put(f"{what}: list all {n} by n=100, full walk (ms)", srv.name,
                     statistics.median(times) * 1000, "ms", "lower")
            self.put(f"{what}: pages / entries returned", srv.name, f"{pages} / {entries}",
                     "", "info")
            if entries < n:
                self.notes.append(f"{srv.name}: {what} returned {entries} entries, "
                                  f"expected >= {n}")
            for conns in self.p["conns"]:
                r = wrk_with_server_cpu(srv, srv.base + mid, conns, p["dur"],
                                        workdir=self.work)
                if r["requests"] == 0:
                    self.notes.append(f"{srv.name}: {what} page c={conns}: no request "
                                      f"completed in {p['dur']} s (wrk timeout 5 s)")
                self.put(f"{what}: one page n=100 from the middle, c={conns} (req/s)",
                         srv.name, r["rps"], "req/s")
                self.put(f"{what}: one page n=100 from the middle, c={conns} p99 (ms)",
                         srv.name, r["p99_ms"] if r["requests"] else "none done", "ms",
                         "lower")

    def w_referrers(self, srv, c):
        p = self.p
        repo = "bench/ref"
        c.mount(repo, digest_of(self.config), "bench/app")
        c.mount(repo, digest_of(self.layer), "bench/app")
        c.put_manifest(repo, self.mdigest, self.manifest)
        empty = c.push_blob(repo, b"{}")
        payload = c.push_blob(repo, b'{"sbom":"bench"}')
        subject = descriptor(OCI_MANIFEST, self.manifest)

        def referrer(i):
            m = image_manifest(descriptor(OCI_EMPTY, empty, 2),
                               [descriptor("application/json", payload, 16)],
                               artifactType="application/vnd.example.sbom.v1+json",
                               subject=subject,
                               annotations={"bench.index": str(i)})
            c.put_manifest(repo, digest_of(m), m)

        parallel(referrer, range(p["referrers"]))
        st, _, body = c.req("GET", f"/v2/{repo}/referrers/{self.mdigest}")
        if st != 200:
            self.put(f"referrers: list of {p['referrers']}, c={p['conns'][0]} (req/s)", srv.name,
                     f"n/a ({st})", "req/s", "info")
            return
        got = len(json.loads(body)["manifests"])
        if got != p["referrers"]:
            self.notes.append(f"{srv.name}: referrers returned {got}, expected "
                              f"{p['referrers']}")
        for conns in self.p["conns"]:
            r = wrk_with_server_cpu(srv, f"{srv.base}/v2/{repo}/referrers/{self.mdigest}",
                                    conns, p["dur"], workdir=self.work)
            self.put(f"referrers: list of {p['referrers']}, c={conns} (req/s)", srv.name,
                     r["rps"], "req/s", "info")
            self.put(f"referrers: list of {p['referrers']}, c={conns} p99 (ms)", srv.name,
                     r["p99_ms"], "ms", "info")

    def w_cosign(self, srv, c):
        p = self.p
        repo = "bench/sig"
        c.mount(repo, digest_of(self.config), "bench/app")
        c.mount(repo, digest_of(self.layer), "bench/app")
        c.put_manifest(repo, "latest", self.manifest)
        tag = "sha256-" + self.mdigest[7:] + ".sig"
        cfg = json.dumps({"architecture": "", "os": "", "config": {},
                          "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        cfg_desc = descriptor(OCI_CONFIG, c.push_blob(repo, cfg), len(cfg))

        def sig_layer(i):
            payload = json.dumps({"critical": {
                "identity": {"docker-reference": f"127.0.0.1/{repo}"},
                "image": {"docker-manifest-digest": self.mdigest},
                "type": "cosign container image signature"},
                "optional": {"n": i}}).encode()
            d = c.push_blob(repo, payload)
            sig = hashlib.sha256(payload).hexdigest()
            return descriptor(COSIGN_LAYER, d, len(payload), annotations={
                "dev.cosignproject.cosign/signature": sig})

        layers = [sig_layer(i) for i in range(p["sigs"])]
        c.put_manifest(repo, tag, image_manifest(cfg_desc, layers))
        times = []
        for i in range(p["appends"]):
            t0 = time.monotonic()
            _, _, body = c.req("GET", f"/v2/{repo}/manifests/{tag}",
                               headers={"Accept": ACCEPT}, expect=(200,))
            m = json.loads(body)
            m["layers"].append(sig_layer(p["sigs"] + i))
            c.put_manifest(repo, tag, json.dumps(m, separators=(",", ":")).encode())
            times.append(time.monotonic() - t0)
        self.put(f"cosign .sig append on {p['sigs']} signatures: GET+blob push+PUT "
                 "(appends/s)", srv.name, len(times) / sum(times), "ops/s")
        self.put("cosign .sig append p50 (ms)", srv.name, statistics.median(times) * 1000,
                 "ms", "lower")

    def w_restart(self, srv):
        srv.stop()
        srv.start()
        time.sleep(1.0 if self.args.smoke else 3.0)
        self.put(f"start-up time with {self.p['repos']} repositories stored (ms)", srv.name,
                 srv.startup * 1000, "ms", "lower")
        self.put(f"idle RSS with {self.p['repos']} repositories stored (MiB)", srv.name,
                 proc_status(srv.pid, "VmRSS") / MIB, "MiB", "lower")

    # ---- the run

    def run(self):
        t_start = time.monotonic()
        global LOADGEN
        self.signet_bin = self.signet_binary()
        LOADGEN = os.environ.get("SIGNET_BENCH_LOADGEN") or os.path.join(
            os.path.dirname(self.signet_bin), "signet-bench")
        if not os.path.exists(self.signet_bin):
            raise SystemExit(f"no signet binary at {self.signet_bin}")
        self.content()
        self.make_images()
        peers = [self.make_nginx(), self.make_signet(), self.make_distribution()]
        try:
            try:
                for srv in peers:
                    srv.start()
                    self.servers[srv.name] = srv
                    log(f"{srv.name} up on {srv.base} (pid {srv.pid}, {srv.startup * 1000:.0f} ms)")
                ngx = self.servers["nginx"]
                self.load_nginx()
                if self.wants("loadgen"):
                    log("load generator alone (wrk -> nginx)")
                    self.w_loadgen(ngx)
                clients = {}
                for name in ("signet", "distribution"):
                    clients[name] = self.load_common(self.servers[name])
                if self.wants("manifests"):
                    for srv in peers:
                        log(f"manifests: {srv.name}")
                        self.w_manifests(srv)
                if self.wants("blobs"):
                    for srv in peers:
                        log(f"blobs: {srv.name}")
                        self.w_blobs(srv)
                if self.wants("push"):
                    self.w_push([self.servers["signet"], self.servers["distribution"]])
                for name in ("signet", "distribution"):
                    srv, c = self.servers[name], clients[name]
                    if self.wants("skopeo"):
                        log(f"skopeo: {name}")
                        self.w_skopeo(srv)
                    if self.wants("lists"):
                        log(f"loading tags and repositories: {name}")
                        self.load_tags_and_repos(srv, c)
                        log(f"tags/catalog: {name}")
                        self.w_lists(srv, c)
                    if self.wants("referrers"):
                        log(f"referrers: {name}")
                        self.w_referrers(srv, c)
                    if self.wants("cosign"):
                        log(f"cosign append: {name}")
                        self.w_cosign(srv, c)
                    if self.wants("restart"):
                        log(f"restart: {name}")
                        self.w_restart(srv)
            finally:
                for srv in peers:
                    srv.stop()
            self.elapsed = time.monotonic() - t_start
            return self.report()
        finally:
            # after the report: removing gigabytes can take minutes on a disk that
            # discards synchronously
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)

    # ---- report

    TARGETS = [
        # (metric prefix, peer, kind, bound)
        ("manifest GET by tag, c=", "nginx", "ratio>=", 0.5),
        ("manifest GET by digest, c=", "nginx", "ratio>=", 0.5),
        ("manifest HEAD by tag, c=", "nginx", "ratio>=", 0.5),
        ("manifest GET by tag, c=", "distribution", "ratio>=", 20),
        ("manifest GET by digest, c=", "distribution", "ratio>=", 20),
        ("manifest HEAD by tag, c=", "distribution", "ratio>=", 20),
        ("blob GET ", "nginx", "ratio>=", 0.9),
        ("push ", "distribution", "ratio>=", 1.5),
        ("tags list: list all", "distribution", "ratio>=", 10),
        ("_catalog: list all", "distribution", "ratio>=", 10),
        ("tags list: one page", "distribution", "ratio>=", 10),
        ("_catalog: one page", "distribution", "ratio>=", 10),
    ]

    def target_of(self, metric):
        m = self.meta[metric]
        if "RSS growth" in metric:
            return ("abs<=", None, 64)
        if metric.startswith("manifest") and metric.endswith("p99 (ms)"):
            return ("ratio<=", "distribution", 0.05)
        if metric.endswith("full walk (ms)"):
            return ("ratio>=", "distribution", 10)
        if m["unit"] not in ("req/s", "MiB/s"):
            return None
        if metric.startswith("blob Range"):
            return None
        for prefix, peer, kind, bound in self.TARGETS:
            if metric.startswith(prefix) and not metric.endswith("(ms)"):
                return (kind, peer, bound)
        return None

    def report(self):
        rows = []
        for metric, vals in self.results.items():
            m = self.meta[metric]
            s = vals.get("signet")
            row = {"metric": metric, "unit": m["unit"], **{k: vals.get(k) for k in
                   ("nginx", "signet", "distribution")}}
            for peer in ("nginx", "distribution"):
                v = vals.get(peer)
                if isinstance(s, (int, float)) and isinstance(v, (int, float)):
                    # Signet/peer for every metric; for time-like ones (lower is better)
                    # the target says which way. A peer that completed nothing: inf.
                    if v:
                        row[f"signet/{peer}"] = s / v
                    elif s and m["better"] == "higher":
                        row[f"signet/{peer}"] = float("inf")
            t = self.target_of(metric)
            if t and isinstance(s, (int, float)):
                kind, peer, bound = t
                if kind == "abs<=":
                    row["target"], row["met"] = f"<= {bound}", s <= bound
                else:
                    ratio = row.get(f"signet/{peer}")
                    if m["better"] == "lower" and kind == "ratio>=":
                        # time metrics: Signet must take <= 1/bound of the peer's time
                        ratio = None if not ratio else (1 / ratio if ratio != float("inf")
                                                        else 0.0)
                    if ratio is not None:
                        if kind == "ratio>=":
                            row["target"] = f">= {bound}x {peer}"
                            row["met"] = ratio >= bound
                        else:
                            row["target"] = f"<= {bound}x {peer}"
                            row["met"] = ratio <= bound
            rows.append(row)
        out = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "mode": "smoke" if self.args.smoke else "full",
            "signet_binary": self.signet_bin,
            "machine": machine(),
            "params": self.p,
            "elapsed_s": round(self.elapsed, 1),
            "rows": rows,
            "notes": self.notes,
        }
        print(format_table(out))
        os.makedirs(self.args.results, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        if self.args.only:
            # a partial run never stands in for the full table
            name = f"partial-{'-'.join(sorted(self.args.only))}-{stamp}.json"
        else:
            name = ("smoke-latest" if self.args.smoke else "bench-" + stamp) + ".json"
        path = os.path.join(self.args.results, name)
        with open(path, "w") as f:
            json.dump(json_safe(out), f, indent=1)
        if not self.args.smoke and not self.args.only:
            shutil.copyfile(path, os.path.join(self.args.results, "latest.json"))
        log(f"wrote {path}")
        return out


def json_safe(v):
    """Infinity (a peer that completed nothing) as a string: JSON has no inf."""
    if isinstance(v, float) and v == float("inf"):
        return "inf"
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")),
                         "")
    except OSError:
        pass
    osname = ""
    try:
        with open("/etc/os-release") as f:
            osname = next((l.split("=", 1)[1].strip().strip('"') for l in f
                           if l.startswith("PRETTY_NAME=")), "")
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), {osname}"


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def format_table(out):
    head = ["workload", "nginx", "signet", "docker-registry", "signet/nginx",
            "signet/registry", "target", "met"]
    lines = [head]
    for r in out["rows"]:
        ratio = lambda k: "-" if r.get(k) is None else f"{r[k]:.2f}x"
        lines.append([r["metric"], fmt(r["nginx"]), fmt(r["signet"]), fmt(r["distribution"]),
                      ratio("signet/nginx"), ratio("signet/distribution"),
                      r.get("target", ""), fmt(r["met"]) if "met" in r else ""])
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    text = [f"Signet benchmark, {out['date']}, {out['mode']} mode, {out['machine']}"]
    for i, l in enumerate(lines):
        text.append("| " + " | ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j])
                                      for j, c in enumerate(l)) + " |")
        if i == 0:
            text.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for n in out["notes"]:
        text.append(f"note: {n}")
    return "\n".join(text)


def harness(name, doc, tools):
    """What a companion harness (sync_bench.py, scaleout.py) shares with this one: its
    command line (--smoke, --debug, --no-build, --results), the tools it needs, a Bench
    that builds or finds the signet binary, and a fresh work folder (removed by the
    caller). Returns (args, bench, work)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="seconds, tiny counts (CI)")
    ap.add_argument("--debug", action="store_true", help="the debug build of signet")
    ap.add_argument("--no-build", action="store_true", help="use the binary already built")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    for tool in tools:
        if not shutil.which(tool):
            raise SystemExit(f"{name}: {tool} is not installed")
    b = Bench(argparse.Namespace(smoke=args.smoke, debug=args.debug,
                                 no_build=args.no_build, keep=False))
    b.signet_bin = b.signet_binary()
    b.work = tempfile.mkdtemp(prefix=f"signet-{name.replace(' ', '-')}-")
    return args, b, b.work


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="seconds, tiny counts (CI)")
    ap.add_argument("--debug", action="store_true",
                    help="use the debug build of signet (no release build)")
    ap.add_argument("--no-build", action="store_true", help="use the binary already built")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--only", type=lambda v: set(v.split(",")), default=None,
                    metavar="W1,W2",
                    help="run only these workloads (" + ", ".join(WORKLOADS) + "); the "
                    "results go to partial-*.json, never latest.json")
    args = ap.parse_args()
    if args.only and args.only - set(WORKLOADS):
        ap.error("unknown workload(s): " + ", ".join(sorted(args.only - set(WORKLOADS))))
    for tool in ("wrk", "nginx", "docker-registry", "skopeo", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is not installed")
    out = Bench(args).run()
    if args.smoke:
        # the smoke run checks the harness works; it does not judge performance
        bad = [n for n in out["notes"] if "errors" in n or "expected" in n]
        if bad:
            raise SystemExit("bench smoke: " + "; ".join(bad))


if __name__ == "__main__":
    main()
