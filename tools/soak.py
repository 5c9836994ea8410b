"""Soak test: N clients for T seconds on loopback, mixing infer / fit / calibrate / state.

Starts ``bdi serve`` on 127.0.0.1 (or uses ``--url``, which must be a loopback address), and reports
errors, p50/p99 latency per operation and the server's RSS growth between the end of the warm-up
and the end of the run. Bounded in time and count; it stops by itself.

    .venv/bin/python tools/soak.py --clients 4 --seconds 300 --json soak.json
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import proc_status_mb, start_server, synthetic_roi  # noqa: E402

OPERATIONS = (("infer", 0.70), ("state", 0.15), ("calibrate", 0.10), ("fit", 0.05))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service on loopback")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--warmup", type=float, default=20, help="seconds before the RSS baseline is taken")
    parser.add_argument("--rois", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    if args.url:
        process, url = None, args.url
        host = urlparse(url).hostname or ""
        if not (host.startswith("127.") or host in {"localhost", "::1"}):
            raise SystemExit("soak only targets loopback addresses")
    else:
        process, url = start_server({"BDI_WEIGHTS": "random", "BDI_INPUT_SIZE": str(args.input_size),
                                     "BDI_MODELS_DIR": tempfile.mkdtemp(prefix="bdi-soak-"), "BDI_LOG_LEVEL": "WARNING"})
    client = httpx.Client(base_url=url, timeout=120)

    images = [synthetic_roi(300, 270, seed) for seed in range(12)]
    rois = [f"roi-{i}" for i in range(args.rois)]
    for roi in rois:
        files = [("images", (f"{i}.png", images[i], "image/png")) for i in range(3)]
        client.post("/fit_ok", data={"role_id": "soak", "roi_id": roi, "mm_per_px": "0.2"}, files=files).raise_for_status()

    latencies: dict[str, list[float]] = collections.defaultdict(list)
    errors: list[str] = []
    count = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds

    def request(rng: random.Random) -> tuple[str, httpx.Response]:
        op = rng.choices([o for o, _ in OPERATIONS], [w for _, w in OPERATIONS])[0]
        roi = rng.choice(rois)
        form = {"role_id": "soak", "roi_id": roi, "mm_per_px": "0.2"}
        if op == "infer":
            files = {"image": ("x.png", rng.choice(images), "image/png")}
            return op, client.post("/infer", data=form, files=files)
        if op == "state":
            return op, client.get("/state", params={"role_id": "soak", "roi_id": roi})
        if op == "calibrate":
            body = {"role_id": "soak", "roi_id": roi, "ok_scores": [rng.uniform(0.1, 0.3) for _ in range(5)], "ng_scores": None}
            return op, client.post("/calibrate_ng", json=body)
        files = [("images", (f"{i}.png", rng.choice(images), "image/png")) for i in range(2)]
        return op, client.post("/fit_ok", data=form, files=files)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            with lock:
                if count[0] >= args.max_requests:
                    return
                count[0] += 1
            started = time.perf_counter()
            try:
                op, response = request(rng)
                ok = response.status_code == 200
                detail = f"{op} {response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                op, ok, detail = "transport", False, repr(exc)
            with lock:
                latencies[op].append(time.perf_counter() - started)
                if not ok:
                    errors.append(detail)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    time.sleep(min(args.warmup, args.seconds / 2))
    rss_start = proc_status_mb(process.pid, "VmRSS") if process else None
    for thread in threads:
        thread.join()
    rss_end = proc_status_mb(process.pid, "VmRSS") if process else None
    if process:
        process.terminate()
        process.wait(30)

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    report = {
        "clients": args.clients, "seconds": args.seconds, "requests": count[0], "errors": len(errors),
        "error_samples": errors[:10],
        "operations": {op: {"n": len(v), "p50_s": pct(v, 0.5), "p99_s": pct(v, 0.99)} for op, v in latencies.items()},
        "rss_mb_after_warmup": rss_start, "rss_mb_end": rss_end,
        "rss_growth_pct": (rss_end - rss_start) / rss_start * 100 if rss_start and rss_end else None,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
