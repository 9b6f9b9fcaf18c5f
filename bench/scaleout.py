#!/usr/bin/env python3
"""Scaled out against embedded: Signet on PostgreSQL, one process and two replicas behind
nginx, against Signet on SQLite, side by side, in one run.

    python3 bench/scaleout.py                 # full: builds Signet in release mode
    python3 bench/scaleout.py --smoke --debug # seconds, debug binary (CI)

Three deployments serve the same content (an image tagged `latest` in bench/app, 100
tags in bench/tags):

- sqlite: one Signet process on its embedded SQLite (the default), measured directly
  and again through the nginx the replicas sit behind ("sqlite behind nginx", no
  target): on a small machine the balancer's own cost bounds what replicas can reach;
- postgres: one Signet process on a throwaway PostgreSQL cluster;
- 2 replicas: two Signet processes on that database behind a round-robin nginx
  (keep-alive upstream connections), sharing one blob folder, with the default
  `replica_consistency = "read-after-write"`;
- 2 replicas, bounded: the same with `replica_consistency = "bounded"`.

Each answers the same wrk loads (64 connections): manifest GET by tag, and one page of
the tags list (n=100). Prints req/s and the ratios to SQLite, with the targets (on
PostgreSQL >= 0.5x SQLite for both; two replicas >= 0.8x one SQLite process, judged in
each consistency mode), and writes
bench/results/scaleout[-smoke]-latest.json. Everything runs on 127.0.0.1 and is bounded
in time (wrk -d, subprocess timeouts).
"""

import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared servers, client, wrk and content helpers)

FULL = dict(dur=5, conns=64, tags=100)
SMOKE = dict(dur=1, conns=64, tags=100)
TARGETS = {"postgres": 0.5, "2 replicas": 0.8, "2 replicas, bounded": 0.8}
# One SQLite process reached through the balancer: what the balancer alone leaves.
BEHIND = "sqlite behind nginx"


def pg_bin():
    """The newest /usr/lib/postgresql/*/bin (or PG_BIN)."""
    if os.environ.get("PG_BIN"):
        return os.environ["PG_BIN"]
    root = "/usr/lib/postgresql"
    versions = sorted((int(v), v) for v in os.listdir(root) if v.isdigit()) if \
        os.path.isdir(root) else []
    if not versions:
        raise SystemExit("scaleout bench: PostgreSQL is not installed "
                         "(scripts/install-test-deps.sh installs it)")
    return os.path.join(root, versions[-1][1], "bin")


class Postgres:
    """A throwaway cluster in `folder`, on a free loopback port."""

    def __init__(self, folder):
        self.bin, self.data = pg_bin(), os.path.join(folder, "pg")
        self.port = bench.free_port()
        os.makedirs(self.data)
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.data, "postgres")

    def run(self, *argv):
        cmd = [os.path.join(self.bin, argv[0]), *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=120)

    def start(self):
        self.run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.data, "log"), "-w", "-o",
                 f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "start")
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self):
        try:
            self.run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass


def signet(b, folder, name, metadata_url=None, blob_dir=None, consistency=None, extra=""):
    """A Signet server in `folder`/`name`, configured by `name`/signet.toml; `extra` is
    TOML appended to it (tables after [storage])."""
    d = os.path.join(folder, name)
    os.makedirs(d)
    config = os.path.join(d, "signet.toml")
    with open(config, "w") as f:
        f.write("[storage]\n")
        f.write(f'data_dir = "{d}/data"\n')
        if metadata_url:
            f.write(f'metadata_url = "{metadata_url}"\n')
        if blob_dir:
            f.write(f'blob_dir = "{blob_dir}"\n')
        if consistency:
            f.write(f'replica_consistency = "{consistency}"\n')
        f.write(extra)
    port = bench.free_port()
    return bench.Server(name, port, [b.signet_bin, "serve", "--config", config, "--listen",
                                     f"127.0.0.1:{port}"],
                        env=dict(os.environ, SIGNET_LOG="warn"), log_path=d + "/log")


def balancer(folder, replicas, tag, server_params="", http_extra="", location_extra=""):
    """nginx round robin over `replicas`; the extras add to the server lines, the
    http block and the location (chaos.py: fail over fast, stream bodies)."""
    d = os.path.join(folder, f"nginx-{tag}")
    os.makedirs(d + "/logs")
    port = bench.free_port()
    upstreams = "\n".join(f"    server 127.0.0.1:{r.port}{server_params};" for r in replicas)
    with open(d + "/nginx.conf", "w") as f:
        f.write(f"""daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp_body;
  proxy_temp_path {d}/tmp_proxy;
  fastcgi_temp_path {d}/tmp_fcgi;
  uwsgi_temp_path {d}/tmp_uwsgi;
  scgi_temp_path {d}/tmp_scgi;{http_extra}
  upstream signet {{
{upstreams}
    keepalive 128;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://signet;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;{location_extra}
    }}
  }}
}}
""")
    return bench.Server("nginx", port, ["nginx", "-p", d, "-c", d + "/nginx.conf"],
                        log_path=d + "/logs/stderr.log")


def load(base, tags):
    """The content every deployment serves: one image, tagged `latest` in bench/app and
    `t00000`... in bench/tags."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(4096)
    manifest = bench.image_manifest(bench.descriptor(bench.OCI_CONFIG, config),
                                    [bench.descriptor(bench.OCI_LAYER, layer)])
    c = bench.Client(base)
    for repo in ("bench/app", "bench/tags"):
        c.push_blob(repo, config)
        c.push_blob(repo, layer)
    c.put_manifest("bench/app", "latest", manifest)
    bench.parallel(lambda i: c.put_manifest("bench/tags", f"t{i:05d}", manifest),
                   range(tags))


def measure(base, p, work):
    """req/s of each load against `base`."""
    loads = {
        "manifest GET by tag": ("/v2/bench/app/manifests/latest", {"Accept": bench.ACCEPT}),
        f"tags/list, {p['tags']} tags (n=100)": ("/v2/bench/tags/tags/list?n=100", None),
    }
    out = {}
    for label, (path, headers) in loads.items():
        r = bench.wrk(base + path, p["conns"], p["dur"], headers=headers, workdir=work)
        if r["errors"] or not r["requests"]:
            raise RuntimeError(f"{label} on {base}: {r}")
        out[label] = r["rps"]
    return out


def main():
    args, b, work = bench.harness("scaleout bench", __doc__, ("wrk", "nginx"))
    # PostgreSQL runs as its own user: it must reach its folder inside.
    os.chmod(work, 0o755)
    p = SMOKE if args.smoke else FULL
    servers, pg = [], Postgres(work)
    results = {}
    t0 = time.monotonic()
    try:
        url = pg.start()
        shared_blobs = os.path.join(work, "blobs")

        def up(srv):
            srv.start()
            servers.append(srv)
            return srv

        bench.log("sqlite: one process")
        s = up(signet(b, work, "sqlite"))
        load(s.base, p["tags"])
        results["sqlite"] = measure(s.base, p, work)
        # The balancer's own ceiling: the same process through the nginx the replicas
        # sit behind (no target; it bounds what two replicas can reach on this machine).
        bench.log("sqlite: one process behind nginx")
        lb = up(balancer(work, [s], "sqlite"))
        results[BEHIND] = measure(lb.base, p, work)
        lb.stop()
        s.stop()

        bench.log("postgres: one process")
        s = up(signet(b, work, "postgres", url, shared_blobs))
        load(s.base, p["tags"])
        results["postgres"] = measure(s.base, p, work)
        s.stop()

        for label, consistency in (("2 replicas", None), ("2 replicas, bounded", "bounded")):
            bench.log(f"postgres: {label} behind nginx")
            tag = consistency or "raw"
            replicas = [up(signet(b, work, f"replica-{tag}-{i}", url, shared_blobs, consistency))
                        for i in (1, 2)]
            lb = up(balancer(work, replicas, tag))
            results[label] = measure(lb.base, p, work)
            for s in (lb, *replicas):
                s.stop()
    finally:
        for s in servers:
            s.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for label in results["sqlite"]:
        base = results["sqlite"][label]
        row = {"load": label, "sqlite": round(base), BEHIND: round(results[BEHIND][label]),
               f"{BEHIND}/sqlite": round(results[BEHIND][label] / base, 2)}
        for deployment, target in TARGETS.items():
            v = results[deployment][label]
            ratio = v / base
            row[deployment] = round(v)
            row[f"{deployment}/sqlite"] = round(ratio, 2)
            row[f"{deployment} target"] = f">= {target}x"
            row[f"{deployment} met"] = ratio >= target
        rows.append(row)
    out = bench.run_record(args, p, t0, rows=rows)
    print(f"\nscaled out vs embedded, wrk c={p['conns']} d={p['dur']}s (req/s):")
    columns = (BEHIND, *TARGETS)
    print(f"  {'':34} {'sqlite':>8}" + "".join(f" {d:>21} {'ratio':>6}" for d in columns))
    for r in rows:
        print(f"  {r['load']:34} {r['sqlite']:>8}" + "".join(
            f" {r[d]:>21} {r[d + '/sqlite']:>5.2f}x" for d in columns))
    print("  targets: postgres >= 0.5x sqlite, two replicas >= 0.8x sqlite; met: " +
          "; ".join(f"{r['load']}: " + ", ".join(f"{d} {r[d + ' met']}" for d in TARGETS)
                    for r in rows))
    os.makedirs(args.results, exist_ok=True)
    name = "scaleout-smoke-latest.json" if args.smoke else "scaleout-latest.json"
    with open(os.path.join(args.results, name), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
