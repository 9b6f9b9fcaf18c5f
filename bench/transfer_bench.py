#!/usr/bin/env python3
"""Carrying images across a gap: `signet export` + `signet import` against `skopeo copy`
to and from an OCI layout, side by side, in one run.

    python3 bench/transfer_bench.py                 # full: 2 GiB, release build
    python3 bench/transfer_bench.py --smoke --debug # seconds, tiny sizes, debug binary (CI)

A Signet holds IMAGES images of `bench/app` (LAYERS layers each, SIZE in all). Each tool
writes every image into a fresh OCI layout folder, then stores that layout into a fresh,
empty Signet:

- skopeo: `skopeo copy --all docker://SRC/bench/app:vN oci:LAYOUT:bench/app:vN` per tag,
  then `skopeo copy --all oci:LAYOUT:bench/app:vN docker://DEST/bench/app:vN` into a
  running Signet;
- Signet: `signet export bench/app -o LAYOUT` beside the running source, then
  `signet import LAYOUT` into the destination's stores (which also checks every digest
  of the layout before it stores anything).

Each step is timed until what it wrote is on disk (`sync` after it): skopeo leaves its
layout in the page cache, Signet flushes each blob it writes. Prints the best times and the ratios skopeo/Signet (higher is better for Signet), the
peak RSS of the export and import processes, and writes
bench/results/transfer-latest.json.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared servers, client and content helpers)

FULL = dict(images=16, layers=4, layer=32 * bench.MIB, repeats=3)
SMOKE = dict(images=2, layers=2, layer=64 * 1024, repeats=1)
REPO = "bench/app"
# Layers that are gzip streams (stored, level 0): skopeo gzips a layer it finds
# uncompressed when it writes a layout, which would time gzip, not transfer (and change
# every digest).
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def populate(src, p):
    """IMAGES images in REPO; their manifests by tag."""
    c = bench.Client(src.base)
    manifests = {}
    for i in range(p["images"]):
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": i,
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        c.push_blob(REPO, config)
        layers = []
        for _ in range(p["layers"]):
            layer = gzip.compress(os.urandom(p["layer"]), compresslevel=0)
            c.push_blob(REPO, layer)
            layers.append(bench.descriptor(GZIP_LAYER, layer))
        m = bench.image_manifest(bench.descriptor(bench.OCI_CONFIG, config), layers)
        c.put_manifest(REPO, f"v{i}", m)
        manifests[f"v{i}"] = m
    return manifests


def timed(argv, env=None):
    """Runs argv, then flushes what it wrote to disk (as for skopeo: a layout counts once
    it is on disk); the wall time and the peak RSS in bytes."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    with bench.RssSampler(proc.pid) as rss:
        _, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}...: {err.decode()[-2000:]}")
    os.sync()
    return time.monotonic() - t0, rss.peak


def byte_exact(dest, manifests):  # both tools must copy byte for byte
    """Whether every tag arrived, its manifest byte for byte the source's."""
    c = bench.Client(dest.base)
    exact = True
    for tag, m in manifests.items():
        _, _, body = c.req("GET", f"/v2/{REPO}/manifests/{tag}", expect=(200,),
                           headers={"Accept": bench.OCI_MANIFEST})
        exact = exact and body == m
    return exact


def main():
    args, b, work = bench.harness("transfer bench", __doc__, ("skopeo",))
    p = SMOKE if args.smoke else FULL
    servers = []
    try:
        os.makedirs(os.path.join(work, "src"))
        b.work = os.path.join(work, "src")
        src = b.make_signet()
        src.start()
        servers.append(src)
        src_data = os.path.join(b.work, "signet", "data")
        manifests = populate(src, p)
        total = p["images"] * p["layers"] * p["layer"]
        bench.log(f"source: {p['images']} images, {total / bench.MIB:.0f} MiB of layers")

        times = {k: [] for k in ("skopeo export", "skopeo import", "signet export",
                                 "signet import")}
        rss = {"signet export": 0, "signet import": 0}
        for r in range(p["repeats"]):
            # skopeo, into a fresh layout and a fresh Signet
            layout = os.path.join(work, f"skopeo-{r}")
            t0 = time.monotonic()
            for tag in manifests:
                subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false",
                                f"docker://{src.base[7:]}/{REPO}:{tag}",
                                f"oci:{layout}:{REPO}:{tag}"],
                               check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=1800)
            os.sync()
            times["skopeo export"].append(time.monotonic() - t0)
            os.makedirs(os.path.join(work, f"sd{r}"))
            b.work = os.path.join(work, f"sd{r}")
            dest = b.make_signet()
            dest.start()
            servers.append(dest)
            t0 = time.monotonic()
            for tag in manifests:
                subprocess.run(["skopeo", "copy", "--all", "--dest-tls-verify=false",
                                f"oci:{layout}:{REPO}:{tag}",
                                f"docker://{dest.base[7:]}/{REPO}:{tag}"],
                               check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=1800)
            os.sync()
            times["skopeo import"].append(time.monotonic() - t0)
            if not byte_exact(dest, manifests):
                raise RuntimeError("skopeo's copy differs from the source")
            dest.stop()
            shutil.rmtree(layout, ignore_errors=True)

            # Signet, into a fresh layout and a fresh Signet
            layout = os.path.join(work, f"signet-{r}")
            took, peak = timed([b.signet_bin, "export", REPO, "-o", layout,
                                "--data-dir", src_data])
            times["signet export"].append(took)
            rss["signet export"] = max(rss["signet export"], peak)
            os.makedirs(os.path.join(work, f"gd{r}"))
            b.work = os.path.join(work, f"gd{r}")
            dest_data = os.path.join(b.work, "signet", "data")
            os.makedirs(dest_data)
            took, peak = timed([b.signet_bin, "import", layout, "--data-dir", dest_data],
                               env=dict(os.environ, SIGNET_LOG="warn"))
            times["signet import"].append(took)
            rss["signet import"] = max(rss["signet import"], peak)
            dest = b.make_signet()
            dest.start()
            servers.append(dest)
            if not byte_exact(dest, manifests):
                raise RuntimeError("signet's copy differs from the source")
            dest.stop()
            shutil.rmtree(layout, ignore_errors=True)

        best = {k: min(v) for k, v in times.items()}
        both = {t: best[f"{t} export"] + best[f"{t} import"] for t in ("skopeo", "signet")}
        out = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": bench.machine(),
            "smoke": args.smoke,
            "binary": "debug" if args.debug else "release",
            "images": p["images"], "layers_each": p["layers"], "layer_bytes": p["layer"],
            "mib_total": round(total / bench.MIB, 1),
            "seconds_best_of": p["repeats"],
            "seconds": {k: round(v, 3) for k, v in best.items()},
            "ratio_export": round(best["skopeo export"] / best["signet export"], 2),
            "ratio_import": round(best["skopeo import"] / best["signet import"], 2),
            "ratio_both": round(both["skopeo"] / both["signet"], 2),
            "signet_peak_rss_mib": {k: round(v / bench.MIB, 1) for k, v in rss.items()},
        }
        print(f"\nexport + import of {p['images']} images ({out['mib_total']} MiB), "
              f"best of {p['repeats']}:")
        print(f"  {'':8} {'skopeo':>9} {'signet':>9} {'skopeo/signet':>14}")
        for case in ("export", "import"):
            print(f"  {case:8} {best['skopeo ' + case]:>8.2f}s {best['signet ' + case]:>8.2f}s "
                  f"{out['ratio_' + case]:>13.2f}x")
        print(f"  {'both':8} {both['skopeo']:>8.2f}s {both['signet']:>8.2f}s "
              f"{out['ratio_both']:>13.2f}x")
        print(f"  signet peak RSS: export {out['signet_peak_rss_mib']['signet export']} MiB, "
              f"import {out['signet_peak_rss_mib']['signet import']} MiB")
        os.makedirs(args.results, exist_ok=True)
        name = "transfer-smoke-latest.json" if args.smoke else "transfer-latest.json"
        with open(os.path.join(args.results, name), "w") as f:
            json.dump(out, f, indent=2)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
