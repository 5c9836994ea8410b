"""Benchmark of the service against one bare backbone forward, measured in the same run.

Starts ``bdi serve`` on loopback (or uses ``--url``), then measures: one bare forward, /fit_ok of N ROIs, sequential
/infer, concurrent /infer, a replay job over their records (alone, then beside sequential /infer), /infer with
inspection records on against off, /infer with a shadow version against without, an append of M ROIs
(``append=true``) beside the refit of all N + M, /calibrate_dataset over stored samples (the newer GUI waits 120 s
for it), the coreset alone, the nearest-neighbour search of one image against memories of growing size, and the
server's peak RSS. Prints a table and writes JSON with absolute times and the ratios the speed targets are stated
in. The bare forward is re-measured around each phase, so each ratio compares the service with the machine as it
was during that phase.

Records: the started server records every inspection with its image and heatmap (BDI_RECORD_IMAGES=all,
the heaviest setting); a second server with BDI_RECORD=0 over the same models dir answers the same
requests, alternating one by one with the first, so both see the same machine.

    .venv/bin/python tools/bench.py --weights random --json bench.json
    .venv/bin/python tools/bench.py --device cuda --precision bf16 --infer-batch-size 8
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.core import InspectionService, Upload  # noqa: E402
from service.pipeline import FeatureExtractor  # noqa: E402
from service.pipeline.patchcore import MemoryIndex, coreset_size, select_coreset  # noqa: E402
from service.settings import PRECISIONS, Settings  # noqa: E402


def synthetic_roi(width: int, height: int, seed: int, light: float = 0) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = np.hypot(xx - width / 2, yy - height / 2)
    grey = 120 + light + 18 * np.sin(radius * 0.9 + rng.uniform(0, np.pi)) + rng.normal(0, 6, (height, width))
    image = np.clip(np.stack([grey] * 3, axis=-1), 0, 255).astype(np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """``bdi serve`` on a free loopback port with these BDI_* settings; returns once /health answers."""
    port = free_port()
    bdi = str(Path(sys.executable).with_name("bdi"))
    process = subprocess.Popen([bdi, "serve", "--port", str(port)], env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=2)
            return process, url
        except httpx.TransportError:
            if process.poll() is not None:
                raise SystemExit("bdi serve exited during start-up")
            time.sleep(0.5)
    process.terminate()
    raise SystemExit("bdi serve did not start within 300 s")


def proc_status_mb(pid: int, field: str) -> float | None:
    """A memory figure of a process from /proc (``VmRSS`` now, ``VmHWM`` peak); None off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class BareForward:
    """One bare backbone forward of a ROI in this process, re-measured around every phase so that a
    machine whose speed drifts during the run (shared cores) is compared with itself."""

    def __init__(self, args: argparse.Namespace, image: bytes, precision: str) -> None:
        self.extractor = FeatureExtractor(input_size=args.input_size, weights=args.weights, device=args.device,
                                          precision=precision)
        self.bgr = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        self.repeats = args.repeats
        self.samples: list[float] = []
        self.extractor.extract([self.bgr])  # warm-up

    def measure(self) -> float:
        """Median of ``repeats`` forwards now; also kept for the run's overall median."""
        times = []
        for _ in range(self.repeats):
            started = time.perf_counter()
            self.extractor.extract([self.bgr])
            times.append(time.perf_counter() - started)
        self.samples.extend(times)
        return statistics.median(times)

    def around(self, phase):
        """(phase's result, the mean of the forward measured just before and just after it)."""
        before = self.measure()
        result = phase()
        return result, (before + self.measure()) / 2


def bench_coreset(n: int, rate: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, 1152), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    size = coreset_size(n, rate)
    tracemalloc.start()
    started = time.perf_counter()
    first = select_coreset(data, size, seed=0)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    same = bool(np.array_equal(first, select_coreset(data, size, seed=0)))
    return {"n": n, "size": size, "seconds": elapsed, "peak_extra_mb": peak / 2**20,
            "input_mb": data.nbytes / 2**20, "same_seed_same_coreset": same}


def bench_search(rows: list[int], grid: int) -> list[dict[str, float]]:
    """Nearest-neighbour search of one image's grid x grid patches against memories of ``rows`` rows, and
    what such a memory weighs (memory.npz and index.faiss hold the rows once each): BDI_MAX_MEMORY_ROWS."""
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((grid * grid, 1152), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    results = []
    for n in rows:
        memory = rng.standard_normal((n, 1152), dtype=np.float32)
        memory /= np.linalg.norm(memory, axis=1, keepdims=True)
        index = MemoryIndex.build(memory)
        index.nearest_distances(queries)  # warm-up
        times = []
        for _ in range(3):
            started = time.perf_counter()
            index.nearest_distances(queries)
            times.append(time.perf_counter() - started)
        results.append({"rows": n, "search_s": statistics.median(times), "memory_mb": memory.nbytes / 2**20})
        del index, memory
    return results


def compare_with_fp32(args: argparse.Namespace, env: dict[str, str], images: list[bytes],
                      scores: dict[int, float]) -> dict[str, float]:
    """Reduced precision against fp32 on the server's own memory: fp32 scores of the probe images, the
    speed of one fp32 forward, and the largest score differences."""
    reference = BareForward(args, images[0], "fp32")
    settings = Settings.load({**env, "BDI_PRECISION": "fp32"})
    service = InspectionService(settings, reference.extractor)
    try:
        diffs = []
        for image, score in scores.items():
            upload = Upload("x.png", images[image])
            full = service.infer("bench", "roi-0", 0.2, upload)["score"]
            diffs.append((abs(score - full), abs(score - full) / max(abs(full), 1e-12)))
    finally:
        service.close()
    return {"precision": args.precision, "bare_forward_fp32_s": reference.measure(), "images": len(diffs),
            "score_max_abs_diff": max(d for d, _ in diffs), "score_max_rel_diff": max(r for _, r in diffs)}


def compare_recording(args: argparse.Namespace, env: dict[str, str], client: httpx.Client, fields: dict[str, str],
                      images: list[bytes]) -> dict[str, float]:
    """/infer p50 of the recording server (images too) against a server with BDI_RECORD=0 over the same models
    dir, requests alternating between the two so that both see the same machine."""
    off_process, off_url = start_server({**env, "BDI_RECORD": "0"})
    try:
        off = httpx.Client(base_url=off_url, timeout=600)
        latencies: dict[str, list[float]] = {"on": [], "off": []}
        for i in range(-1, args.record_infers):  # -1: a warm-up of each (memory cache) that is not counted
            for name, target in (("on", client), ("off", off)) if i % 2 else (("off", off), ("on", client)):
                begin = time.perf_counter()
                target.post("/infer", data=fields, files={"image": ("x.png", images[i % len(images)], "image/png")}
                            ).raise_for_status()
                if i >= 0:
                    latencies[name].append(time.perf_counter() - begin)
        written = off_written = 0.0
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("bdi_records_written_total "):
                written = float(line.split()[1])
        for line in off.get("/metrics").text.splitlines():
            if line.startswith("bdi_records_written_total "):
                off_written = float(line.split()[1])
    finally:
        off_process.terminate()
        off_process.wait(30)
    p50_on, p50_off = statistics.median(latencies["on"]), statistics.median(latencies["off"])
    return {"n": args.record_infers, "p50_on_s": p50_on, "p50_off_s": p50_off, "on_over_off": p50_on / p50_off,
            "records_written": written, "records_written_off": off_written}


def bench_replay(client: httpx.Client, fields: dict[str, str], one_infer, infers: int) -> dict[str, float]:
    """A replay job of the active version over the records the /infer phases kept, alone (its images per second),
    then again while sequential /infer runs beside it (their p50 against the same /infer with the host idle)."""
    body = {"role_id": fields["role_id"], "roi_id": fields["roi_id"], "version": 1, "last": 10_000}

    def run_replay(beside=None) -> dict:
        """Start a replay and wait for its end; ``beside()`` runs once the replay has scored its first image, and
        its result and whether the replay was still running after it are added to the job."""
        reply = client.post("/models/replay", json=body)
        reply.raise_for_status()
        job_id, extra = reply.json()["job_id"], {}
        while (job := client.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
            if beside is not None and not extra and job["status"] == "running" and job["progress"]["done"] >= 1:
                extra["beside"] = beside()
                extra["still_running"] = client.get(f"/jobs/{job_id}").json()["status"] == "running"
            time.sleep(0.05)
        if job["status"] != "done":
            raise SystemExit(f"replay failed: {job['error']}")
        return {**job, **extra}

    alone = run_replay()
    started = dt.datetime.fromisoformat(alone["started_at"].replace("Z", "+00:00"))
    finished = dt.datetime.fromisoformat(alone["finished_at"].replace("Z", "+00:00"))
    images = alone["progress"]["total"]
    idle = statistics.median(one_infer(i)[0] for i in range(infers))
    beside = run_replay(lambda: statistics.median(one_infer(i)[0] for i in range(infers)))
    return {"images": images, "seconds": (finished - started).total_seconds(),
            "images_per_s": images / (finished - started).total_seconds(), "infer_p50_idle_s": idle,
            "infer_p50_during_replay_s": beside["beside"], "replay_still_running_after": beside["still_running"]}


def bench_shadow(client: httpx.Client, fields: dict[str, str], images: list[bytes], infers: int,
                 fit_images: int) -> dict[str, float]:
    """/infer p50 of a model whose version 1 shadows its active version 2 against a twin model fitted alike without a
    shadow, requests alternating between the two (same image, same memory sizes) so that both see the same machine."""
    models = {"shadow": {**fields, "roi_id": "shadowed"}, "plain": {**fields, "roi_id": "unshadowed"}}
    for model in models.values():
        for version in range(2):  # versions 1 and 2, fitted alike for both twins: equal memories, equal searches
            files = [("images", (f"{i}.png", images[(i + version) % len(images)], "image/png"))
                     for i in range(fit_images)]
            client.post("/fit_ok", data=model, files=files).raise_for_status()
        client.post("/calibrate_ng", json={"role_id": model["role_id"], "roi_id": model["roi_id"],
                                           "ok_scores": [0.5]}).raise_for_status()
    client.post("/models/shadow", json={"role_id": fields["role_id"], "roi_id": models["shadow"]["roi_id"],
                                        "version": 1}).raise_for_status()
    latencies: dict[str, list[float]] = {"shadow": [], "plain": []}
    for i in range(-1, infers):  # -1: a warm-up of each (both memories loaded) that is not counted
        order = ("shadow", "plain") if i % 2 else ("plain", "shadow")
        for name in order:
            begin = time.perf_counter()
            client.post("/infer", data=models[name], files={"image": ("x.png", images[i % len(images)], "image/png")}
                        ).raise_for_status()
            if i >= 0:
                latencies[name].append(time.perf_counter() - begin)
    time.sleep(1)  # the records reach the registry through the background writer
    summary = client.get("/models/shadow", params={"role_id": fields["role_id"],
                                                   "roi_id": models["shadow"]["roi_id"]}).json()
    p50_shadow, p50_plain = statistics.median(latencies["shadow"]), statistics.median(latencies["plain"])
    return {"n": infers, "p50_shadow_s": p50_shadow, "p50_plain_s": p50_plain,
            "shadow_over_plain": p50_shadow / p50_plain, "shadow_scored": summary["n"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--input-size", type=int, default=448)
    parser.add_argument("--roi", default="300x270", help="ROI size WxH")
    parser.add_argument("--fit-images", type=int, default=20)
    parser.add_argument("--fit-rate", type=float, default=0.10, help="coreset rate of the started server")
    parser.add_argument("--append-images", type=int, default=10,
                        help="ROIs appended (under brighter light) to a memory of --fit-images ROIs")
    parser.add_argument("--infers", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--infer-batch-size", default="auto",
                        help="BDI_INFER_BATCH_SIZE of the started server (1: no micro-batching; auto: 1 on CPU)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="BDI_PRECISION of the started server; the bare forward runs at the same precision, "
                             "and for bf16/fp16 the scores are compared with fp32 scores of the same memory")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--coreset-n", type=int, default=100_000)
    parser.add_argument("--search-rows", default="2000,10000,50000",
                        help="memory sizes (rows) the search of one image is timed against")
    parser.add_argument("--rss-rois", type=int, default=10, help="ROIs fitted and served before peak RSS is read")
    parser.add_argument("--dataset-samples", type=int, default=40,
                        help="samples stored (3/4 OK, 1/4 NG) and scored by one /calibrate_dataset")
    parser.add_argument("--record-infers", type=int, default=30,
                        help="/infer requests to each of the recording and the non-recording server")
    parser.add_argument("--replay-infers", type=int, default=10,
                        help="sequential /infer timed idle, then again while a replay runs on the same host")
    parser.add_argument("--shadow-infers", type=int, default=30,
                        help="/infer requests to each of a model with a shadow version and its twin without one")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    width, height = map(int, args.roi.lower().split("x"))
    images = [synthetic_roi(width, height, seed) for seed in range(max(args.fit_images, 1) + 8)]
    lit = [synthetic_roi(width, height, 1000 + seed, light=40) for seed in range(args.append_images)]

    bare = BareForward(args, images[0], args.precision)
    env = {"BDI_WEIGHTS": args.weights, "BDI_INPUT_SIZE": str(args.input_size), "BDI_DEVICE": args.device,
           "BDI_MODELS_DIR": tempfile.mkdtemp(prefix="bdi-bench-"), "BDI_CORESET_RATE": str(args.fit_rate),
           "BDI_INFER_BATCH_SIZE": args.infer_batch_size, "BDI_PRECISION": args.precision, "BDI_LOG_LEVEL": "WARNING",
           "BDI_MIN_OK_SAMPLES": "1", "BDI_RECORD_IMAGES": "all"}
    process, url = (None, args.url) if args.url else start_server(env)
    try:
        client = httpx.Client(base_url=url, timeout=600)
        fields = {"role_id": "bench", "roi_id": "roi-0", "mm_per_px": "0.2"}

        def fit() -> tuple[float, dict]:
            begin = time.perf_counter()
            files = [("images", (f"{i}.png", images[i], "image/png")) for i in range(args.fit_images)]
            reply = client.post("/fit_ok", data=fields, files=files)
            reply.raise_for_status()
            return time.perf_counter() - begin, reply.json()

        (fit_seconds, fit_body), fit_forward = bare.around(fit)
        probes = min(args.infers, len(images))
        expected: dict[int, float] = {}  # image -> its score when served alone

        def one_infer(seed: int) -> tuple[float, bool]:
            """(latency, whether the score equals the one the image got alone)."""
            begin = time.perf_counter()
            reply = client.post("/infer", data=fields, files={"image": ("x.png", images[seed % probes], "image/png")})
            reply.raise_for_status()
            score = reply.json()["score"]
            same = abs(expected.setdefault(seed % probes, score) - score) <= 1e-5 * max(abs(score), 1e-6)
            return time.perf_counter() - begin, same

        one_infer(0)  # warm the memory cache
        sequential, infer_forward = bare.around(lambda: [one_infer(i) for i in range(args.infers)])
        latencies = sorted(latency for latency, _ in sequential)
        total = args.clients * max(args.infers // 2, 4)

        def concurrent_run() -> tuple[float, int]:
            begin = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                answers = list(pool.map(one_infer, range(total)))
            return total / (time.perf_counter() - begin), sum(not same for _, same in answers)

        (concurrent_rps, mismatches), concurrent_forward = bare.around(concurrent_run)
        batches = client.get("/health").json().get("infer_forwards", {})
        time.sleep(2)  # the records of the /infer phases reach the registry through the background writer
        replay, replay_forward = bare.around(lambda: bench_replay(client, fields, one_infer, args.replay_infers))
        for roi in range(1, args.rss_rois):  # the memory target: a server that fitted N ROIs and served them all,
            # read before the append, refit and dataset phases, which fit more and larger memories
            roi_fields = {**fields, "roi_id": f"roi-{roi}"}
            files = [("images", (f"{i}.png", images[(i + roi) % len(images)], "image/png")) for i in range(args.fit_images)]
            client.post("/fit_ok", data=roi_fields, files=files).raise_for_status()
        for roi in range(args.rss_rois):
            client.post("/infer", data={**fields, "roi_id": f"roi-{roi}"},
                        files={"image": ("x.png", images[roi % len(images)], "image/png")}).raise_for_status()
        rss = proc_status_mb(process.pid, "VmHWM") if process else None
        shadow = bench_shadow(client, fields, images[:probes], args.shadow_infers, args.fit_images)
        recording = None if args.url else compare_recording(args, env, client, fields, images[:probes])

        def post_fit(roi: str, uploads: list[bytes], **extra: str) -> tuple[float, dict]:
            begin = time.perf_counter()
            files = [("images", (f"{i}.png", image, "image/png")) for i, image in enumerate(uploads)]
            reply = client.post("/fit_ok", data={**fields, "roi_id": roi, **extra}, files=files)
            reply.raise_for_status()
            return time.perf_counter() - begin, reply.json()

        base = images[: args.fit_images]
        post_fit("grow", base)  # the memory the append grows (not timed)
        (append_seconds, append_body), append_forward = bare.around(lambda: post_fit("grow", lit, append="true"))
        (refit_seconds, refit_body), refit_forward = bare.around(lambda: post_fit("refit", base + lit))
        dataset = {**fields, "roi_id": "dataset"}
        n_ng = max(1, args.dataset_samples // 4)
        for label, count in (("ok", max(1, args.dataset_samples - n_ng)), ("ng", n_ng)):
            files = [("images", (f"{label}{i}.png", images[i % len(images)], "image/png")) for i in range(count)]
            metas = [json.dumps({"mm_per_px": 0.2})] * count
            client.post(f"/datasets/{label}/upload", data={**dataset, "metas": metas}, files=files).raise_for_status()
        text_parts = [(name, (None, value)) for name, value in {**dataset, "use_dataset": "true"}.items()]
        client.post("/fit_ok", files=text_parts).raise_for_status()  # multipart with no file part, as the GUI sends

        def calibrate_dataset() -> tuple[float, dict]:
            begin = time.perf_counter()
            reply = client.post("/calibrate_dataset", json={"role_id": "bench", "roi_id": "dataset"})
            reply.raise_for_status()
            return time.perf_counter() - begin, reply.json()

        (calibrate_seconds, calibrate_body), calibrate_forward = bare.around(calibrate_dataset)
        scored = calibrate_body["n_ok"] + calibrate_body["n_ng"]
    finally:
        if process:
            process.terminate()
            process.wait(30)
    precision = None if args.url or args.precision == "fp32" else compare_with_fp32(args, env, images, expected)
    coreset = bench_coreset(args.coreset_n, 0.02)
    search = bench_search([int(n) for n in args.search_rows.split(",") if n], args.input_size // 14)

    p50 = statistics.median(latencies)
    forward = statistics.median(bare.samples)
    results = {
        "input_size": args.input_size, "roi": args.roi, "weights": args.weights, "device": args.device,
        "bare_forward_s": forward,
        "bare_forward_around_s": {"fit": fit_forward, "infer": infer_forward, "concurrent": concurrent_forward,
                                  "append": append_forward, "refit": refit_forward,
                                  "calibrate_dataset": calibrate_forward},
        "fit": {"images": args.fit_images, "rate": args.fit_rate, "seconds": fit_seconds, **fit_body},
        "append": {"images": args.append_images, "onto_images": args.fit_images, "seconds": append_seconds,
                   **append_body},
        "refit": {"images": args.fit_images + args.append_images, "seconds": refit_seconds, **refit_body},
        "search": search,
        "infer": {"n": len(latencies), "p50_s": p50, "p90_s": latencies[int(0.9 * (len(latencies) - 1))]},
        "concurrent": {"clients": args.clients, "requests": total, "rps": concurrent_rps,
                       "score_mismatches": mismatches, "infer_batch_size": args.infer_batch_size,
                       "forwards_by_batch_size": batches},
        "calibrate_dataset": {"samples": scored, "seconds": calibrate_seconds, "samples_per_s": scored / calibrate_seconds,
                              "samples_in_120_s": int(120 * scored / calibrate_seconds)},
        "coreset": coreset,
        "replay": replay,
        "server_peak_rss_mb": rss,
        "precision": precision or {"precision": args.precision},
        "rss_rois": args.rss_rois,
        "recording": recording,
        "shadow": shadow,
        "ratios": {
            "infer_p50_over_forward": p50 / infer_forward,
            "fit_over_n_forwards": fit_seconds / (args.fit_images * fit_forward),
            "concurrent_rps_times_forward": concurrent_rps * concurrent_forward,
            "append_over_n_forwards": append_seconds / (args.append_images * append_forward),
            "refit_over_n_forwards": refit_seconds / ((args.fit_images + args.append_images) * refit_forward),
            # the same server's time per image both ways: unaffected by how this process's forward fares
            "append_per_image_over_refit_per_image": (append_seconds / args.append_images)
            / (refit_seconds / (args.fit_images + args.append_images)),
            "calibrate_dataset_over_n_forwards": calibrate_seconds / (scored * calibrate_forward),
            "calibrate_dataset_per_sample_over_infer_p50": calibrate_seconds / scored / p50,
            "replay_images_per_s_times_forward": replay["images_per_s"] * replay_forward,
            "infer_p50_during_replay_over_idle": replay["infer_p50_during_replay_s"] / replay["infer_p50_idle_s"],
            **({"infer_p50_recording_over_off": recording["on_over_off"]} if recording else {}),
            "infer_p50_shadow_over_plain": shadow["shadow_over_plain"],
        },
    }
    rows = [
        ("bare forward", f"{forward * 1000:.0f} ms",
         "median of all; each ratio uses the forward measured just before and after its phase"),
        (f"/fit_ok {args.fit_images} ROIs @ {args.fit_rate}", f"{fit_seconds:.2f} s",
         f"{results['ratios']['fit_over_n_forwards']:.2f} x {args.fit_images} forwards (target <= 1.5)"),
        ("/infer p50", f"{p50 * 1000:.0f} ms", f"{results['ratios']['infer_p50_over_forward']:.2f} x forward (target <= 1.2)"),
        (f"{args.clients} concurrent clients, batch <= {args.infer_batch_size}", f"{concurrent_rps:.2f} req/s",
         f"{results['ratios']['concurrent_rps_times_forward']:.2f} / forward (target >= 0.9); "
         f"{mismatches} wrong scores; forwards by batch size {batches}"),
        (f"/fit_ok append=true, {args.append_images} ROIs onto {args.fit_images}", f"{append_seconds:.2f} s",
         (f"{results['ratios']['append_over_n_forwards']:.2f} x {args.append_images} forwards (target <= 1.3); "
          f"{append_body['append']['admitted']} of {append_body['append']['new_embeddings']} patches admitted, "
          f"{append_body['append']['added_rows']} rows added")),
        (f"/fit_ok refit of all {args.fit_images + args.append_images} ROIs", f"{refit_seconds:.2f} s",
         (f"{results['ratios']['refit_over_n_forwards']:.2f} x {args.fit_images + args.append_images} forwards; "
          f"an appended image costs {results['ratios']['append_per_image_over_refit_per_image']:.2f} x a refit "
          "image")),
        (f"/calibrate_dataset {scored} samples", f"{calibrate_seconds:.2f} s",
         (f"{results['calibrate_dataset']['samples_per_s']:.2f} samples/s = "
          f"{results['ratios']['calibrate_dataset_over_n_forwards']:.2f} x {scored} forwards, a sample costs "
          f"{results['ratios']['calibrate_dataset_per_sample_over_infer_p50']:.2f} x an /infer; "
          f"{results['calibrate_dataset']['samples_in_120_s']} samples fit in the GUI's 120 s")),
        (f"replay of {replay['images']} recorded images", f"{replay['seconds']:.2f} s",
         f"{results['ratios']['replay_images_per_s_times_forward']:.2f} images per forward time (target >= 0.9)"),
        (f"/infer p50 during a replay, {args.replay_infers}", f"{replay['infer_p50_during_replay_s'] * 1000:.0f} ms",
         (f"against {replay['infer_p50_idle_s'] * 1000:.0f} ms idle: "
          f"{results['ratios']['infer_p50_during_replay_over_idle']:.2f} x (target <= 1.5); the replay was "
          f"{'still' if replay['replay_still_running_after'] else 'no longer'} running after them")),
        (f"coreset {coreset['n']}x1152 @ 0.02", f"{coreset['seconds']:.2f} s",
         f"peak extra {coreset['peak_extra_mb']:.0f} MB of {coreset['input_mb']:.0f} MB input (target <= 30 s, <= 2x)"),
        *((f"search of one image, {row['rows']} rows", f"{row['search_s'] * 1000:.0f} ms",
           f"{row['search_s'] / forward:.2f} x forward; memory {row['memory_mb']:.0f} MB (+ as much for the index)")
          for row in search),
        (f"server peak RSS, {args.rss_rois} ROIs", f"{rss:.0f} MB" if rss else "n/a", "(target < 2048 MB)"),
    ]
    rows.append((f"/infer p50 with a shadow version, {shadow['n']} each", f"{shadow['p50_shadow_s'] * 1000:.0f} ms",
                 (f"against {shadow['p50_plain_s'] * 1000:.0f} ms without: {shadow['shadow_over_plain']:.3f} x "
                  f"(target <= 1.05); {shadow['shadow_scored']} records scored by the shadow")))
    if recording:
        rows.append((f"/infer p50 recording on / off, {recording['n']} each", f"{recording['p50_on_s'] * 1000:.0f} ms",
                     (f"against {recording['p50_off_s'] * 1000:.0f} ms off: {recording['on_over_off']:.3f} x "
                      f"(target <= 1.03); {recording['records_written']:.0f} records written")))
    if precision:
        rows.append((f"{args.precision} against fp32", f"{precision['bare_forward_fp32_s'] * 1000:.0f} ms",
                     f"one fp32 forward = {precision['bare_forward_fp32_s'] / forward:.2f} x this run's; scores of "
                     f"{precision['images']} images differ by <= {precision['score_max_abs_diff']:.2e} "
                     f"({100 * precision['score_max_rel_diff']:.2f}%)"))
    width_name = max(len(r[0]) for r in rows)
    for name, value, ratio in rows:
        print(f"{name:<{width_name}}  {value:>12}  {ratio}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
