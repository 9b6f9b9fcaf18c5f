#!/usr/bin/env python3
"""Mirroring speed: Signet's sync against `skopeo sync`, side by side, in one run.

    python3 bench/sync_bench.py                 # full: builds Signet in release mode
    python3 bench/sync_bench.py --smoke --debug # seconds, tiny counts, debug binary (CI)

The upstream is Debian's docker-registry (distribution 2.8.2) holding signed images: a
repository of IMAGES tags, each a multi-platform index over two platform manifests (three
layers each) with a cosign `.sig` tag on the index. Both tools mirror it into a fresh
Signet on loopback, so the destination is the same and only the tool differs:

- skopeo: `skopeo sync --all` of the repository (its signature tags are ordinary tags);
- Signet: a sync job run through the admin API of the destination server (every
  platform, the `.sig` attachments), timed from `POST .../run` to the finished status.

Each mirrors twice: a first copy, then a rerun with nothing changed upstream (the
incremental case a scheduled mirror lives in). Prints the times and the ratios
skopeo/Signet (higher is better for Signet) and writes bench/results/sync-latest.json.
"""

import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared servers, client and content helpers)

INDEX = "application/vnd.oci.image.index.v1+json"
FULL = dict(images=20, layer=2 * bench.MIB, repeats=3)
SMOKE = dict(images=2, layer=64 * 1024, repeats=1)
REPO = "bench/app"
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))


def populate(up, p):
    """IMAGES signed multi-platform images in REPO; returns the number of blob bytes."""
    c = bench.Client(up.base)
    total = 0
    for i in range(p["images"]):
        children = []
        for os_, arch in PLATFORMS:
            config = json.dumps({"architecture": arch, "os": os_, "n": i,
                                 "rootfs": {"type": "layers", "diff_ids": []}}).encode()
            layers = [os.urandom(p["layer"]) for _ in range(3)]
            c.push_blob(REPO, config)
            for layer in layers:
                c.push_blob(REPO, layer)
                total += len(layer)
            m = bench.image_manifest(bench.descriptor(bench.OCI_CONFIG, config),
                                     [bench.descriptor(bench.OCI_LAYER, l) for l in layers])
            c.put_manifest(REPO, bench.digest_of(m), m)
            children.append(bench.descriptor(bench.OCI_MANIFEST, m,
                                             platform={"os": os_, "architecture": arch}))
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": children},
                           separators=(",", ":")).encode()
        c.put_manifest(REPO, f"v{i}", index, media_type=INDEX)
        push_signature(c, up, REPO, bench.digest_of(index), i)
    return total


def push_signature(c, up, repo, digest, i, push_empty=True):
    """A cosign signature of `digest`, pushed as `cosign sign` writes it (the tag
    scheme); the signature value is a placeholder: nothing here verifies it. Callers
    pushing in parallel push the shared empty config once, first (docker-registry can
    lose a blob pushed twice at once)."""
    payload = json.dumps({"critical": {
        "identity": {"docker-reference": f"{up.base[7:]}/{repo}"},
        "image": {"docker-manifest-digest": digest},
        "type": "cosign container image signature"}, "optional": None}).encode()
    empty = b"{}"
    if push_empty:
        c.push_blob(repo, empty)
    c.push_blob(repo, payload)
    sig = bench.image_manifest(
        bench.descriptor(bench.OCI_CONFIG, empty),
        [bench.descriptor(bench.COSIGN_LAYER, payload, annotations={
            "dev.cosignproject.cosign/signature": "MEUCIQDbench" + str(i)})])
    c.put_manifest(repo, digest.replace(":", "-") + ".sig", sig)


def tags_of(base, repo=REPO):
    _, _, body = bench.Client(base).req("GET", f"/v2/{repo}/tags/list?n=10000",
                                        expect=(200,))
    return sorted(json.loads(body)["tags"])


def skopeo_sync(up, dest, repo=REPO):
    """`skopeo sync` of `repo` from `up` to the same name on `dest`."""
    t0 = time.monotonic()
    subprocess.run(["skopeo", "sync", "--all", "--src", "docker", "--dest", "docker",
                    "--src-tls-verify=false", "--dest-tls-verify=false", "--retry-times", "0",
                    f"{up.base[7:]}/{repo}", f"{dest.base[7:]}/{repo.rsplit('/', 1)[0]}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=900)
    return time.monotonic() - t0


def signet_sync(dest, job):
    c = bench.Client(dest.base)
    t0 = time.monotonic()
    c.req("POST", f"/v2/_signet/sync/jobs/{job}/run", expect=(202,))
    deadline = t0 + 900
    while time.monotonic() < deadline:
        _, _, body = c.req("GET", f"/v2/_signet/sync/jobs/{job}", expect=(200,))
        run = json.loads(body)["run"] or {}
        if run.get("status") not in (None, "running", "cancelling"):
            elapsed = time.monotonic() - t0
            if run["status"] != "succeeded":
                raise RuntimeError(f"signet sync run: {json.dumps(run)[:2000]}")
            return elapsed, run["progress"]
        time.sleep(0.01)
    raise RuntimeError("signet sync run did not finish in 900 s")


def main():
    args, b, work = bench.harness("sync bench", __doc__, ("docker-registry", "skopeo"))
    p = SMOKE if args.smoke else FULL
    servers = []
    try:
        up = b.make_distribution()
        up.start()
        servers.append(up)
        blob_bytes = populate(up, p)
        want = tags_of(up.base)
        bench.log(f"upstream: {p['images']} signed two-platform images, "
                  f"{blob_bytes / bench.MIB:.1f} MiB of layers, {len(want)} tags")

        times = {"skopeo first": [], "skopeo rerun": [], "signet first": [],
                 "signet rerun": []}
        summary = None
        growth = []  # the destination server's peak RSS growth during Signet's first copy
        for r in range(p["repeats"]):
            # skopeo into a fresh Signet
            os.makedirs(os.path.join(work, f"s{r}"))
            b.work = os.path.join(work, f"s{r}")
            dest = b.make_signet()
            dest.start()
            servers.append(dest)
            times["skopeo first"].append(skopeo_sync(up, dest))
            times["skopeo rerun"].append(skopeo_sync(up, dest))
            got = tags_of(dest.base)
            if got != want:
                raise RuntimeError(f"skopeo mirrored {len(got)} tags, upstream has {len(want)}")
            dest.stop()

            # Signet's sync job into a fresh Signet
            os.makedirs(os.path.join(work, f"g{r}"))
            b.work = os.path.join(work, f"g{r}")
            dest = b.make_signet()
            dest.start()
            servers.append(dest)
            c = bench.Client(dest.base)
            c.req("POST", "/v2/_signet/sync/jobs", body=json.dumps({
                "name": "bench", "upstream": up.base, "repositories": [REPO],
                "concurrency": 8}).encode(), headers={"Content-Type": "application/json"},
                expect=(201,))
            with bench.RssSampler(dest.pid) as rss:
                first, summary = signet_sync(dest, "bench")
            growth.append(rss.peak - rss.base)
            times["signet first"].append(first)
            rerun, again = signet_sync(dest, "bench")
            times["signet rerun"].append(rerun)
            if again["blobs_copied"] or again["manifests_copied"]:
                raise RuntimeError(f"the rerun copied again: {again}")
            got = tags_of(dest.base)
            if got != want:
                raise RuntimeError(f"signet mirrored {len(got)} tags, upstream has {len(want)}")
            dest.stop()

        best = {k: min(v) for k, v in times.items()}
        out = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": bench.machine(),
            "smoke": args.smoke,
            "binary": "debug" if args.debug else "release",
            "images": p["images"], "layer_bytes": p["layer"], "tags": len(want),
            "layer_mib_total": round(blob_bytes / bench.MIB, 1),
            "seconds_best_of": p["repeats"],
            "seconds": {k: round(v, 3) for k, v in best.items()},
            "ratio_first": round(best["skopeo first"] / best["signet first"], 2),
            "ratio_rerun": round(best["skopeo rerun"] / best["signet rerun"], 2),
            "signet_rss_growth_mib": round(max(growth) / bench.MIB, 1),
            "signet_first_run": summary,
        }
        print(f"\nsync of {p['images']} signed two-platform images ({len(want)} tags, "
              f"{out['layer_mib_total']} MiB of layers), best of {p['repeats']}:")
        print(f"  {'':14} {'skopeo sync':>12} {'signet sync':>12} {'skopeo/signet':>14}")
        for case, ratio in (("first", out["ratio_first"]), ("rerun", out["ratio_rerun"])):
            print(f"  {case + ' copy':14} {best['skopeo ' + case]:>11.2f}s "
                  f"{best['signet ' + case]:>11.2f}s {ratio:>13.2f}x")
        print(f"  server RSS growth during Signet's first copy: "
              f"{out['signet_rss_growth_mib']} MiB")
        os.makedirs(args.results, exist_ok=True)
        name = "sync-smoke-latest.json" if args.smoke else "sync-latest.json"
        with open(os.path.join(args.results, name), "w") as f:
            json.dump(out, f, indent=2)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
