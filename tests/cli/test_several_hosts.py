"""Several hosts: `bdi serve` processes (each its own process, caches and registry connections) over one
PostgreSQL registry and one models dir, behind Debian's nginx running tools/nginx/bdi.conf itself.

What one host changes is what every other one serves at its next request, and the faults of a plant
(a host killed mid-fit, fits of one ROI racing through two hosts, PostgreSQL restarted under load) never
leave a half version active nor lose a write that was answered 200.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import Result

from service.storage import ModelStore
from tests.cli.support import as_json, bdi, free_port, start_serve, wait_healthy
from tests.support import POSTGRES_SKIP, png_bytes, synthetic_roi, temporary_database

pytestmark = pytest.mark.skipif(os.name != "posix", reason="nginx, SIGKILL and pg_ctl are POSIX")

NGINX_CONF = Path(__file__).resolve().parents[2] / "tools" / "nginx" / "bdi.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
NGINX_SKIP = "the several-hosts tests need Debian's nginx: apt-get install nginx (.ci/run installs it)"
HOST_ENV = {"BDI_KEEP_VERSIONS": "20", "BDI_LOG_LEVEL": "INFO"}
ROLE = "Plant"
PROBE = png_bytes(synthetic_roi(64, 48, seed=99, defect=(30, 20, 6)))


# ---- hosts, nginx, a private PostgreSQL ---------------------------------------------------------
@dataclasses.dataclass
class Host:
    """One `bdi serve` process: a stand-in for one machine of the plant."""

    models_dir: Path
    database_url: str
    log: Path
    port: int = dataclasses.field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process, _ = start_serve(self.models_dir, port=self.port, log=self.log,
                                      BDI_DATABASE_URL=self.database_url, **HOST_ENV)

    def wait(self) -> None:
        assert self.process is not None
        wait_healthy(self.process, self.base)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)


@contextlib.contextmanager
def running(hosts: list[Host]) -> Iterator[list[Host]]:
    """Start the hosts together (they migrate the empty registry at the same time) and stop them after."""
    try:
        for host in hosts:
            host.start()
        for host in hosts:
            host.wait()
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def nginx_config(prefix: Path, port: int, hosts: list[Host]) -> Path:
    """tools/nginx/bdi.conf with this test's port, hosts and access log, included by a minimal main config."""
    text = NGINX_CONF.read_text()
    text, listens = re.subn(r"(?m)^(\s*)listen \d+;", rf"\1listen 127.0.0.1:{port};", text)
    servers = "".join(f"    server 127.0.0.1:{host.port} max_fails=3 fail_timeout=10s;\n" for host in hosts)
    text, upstreams = re.subn(r"(?m)(^ *server \S+:\d+ [^\n]*\n)+", servers, text)
    text, logs = re.subn(r"access_log \S+ bdi;", f"access_log {prefix}/access.log bdi;", text)
    assert (listens, upstreams, logs) == (1, 1, 1), "tools/nginx/bdi.conf changed shape: update nginx_config"
    (prefix / "bdi.conf").write_text(text)
    temp = " ".join(f"{kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = prefix / "nginx.conf"
    main.write_text(
        f"master_process off;  # one process, as the test's user, writing only under {prefix}\n"
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n    {temp}\n    include {prefix}/bdi.conf;\n}}\n"
    )
    return main


@contextlib.contextmanager
def nginx_in_front(prefix: Path, hosts: list[Host]) -> Iterator[str]:
    prefix.mkdir(parents=True)
    port = free_port()
    config = nginx_config(prefix, port, hosts)
    assert NGINX is not None
    process = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log"),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _answers(base), "nginx did not answer", lambda: (prefix / "error.log").read_text())
        yield base
    finally:
        process.terminate()
        process.wait(30)


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def eventually(condition: Callable[[], bool], what: str, details: Callable[[], str] = str, seconds: float = 60) -> None:
    """Wait for something another process does (a log line written after the answer, a server up)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: {details()}"
        time.sleep(0.2)


@dataclasses.dataclass
class Plant:
    models_dir: Path
    database_url: str
    a: Host
    b: Host
    front: str  # nginx
    access_log: Path

    def admin(self, *args: str) -> Result:
        """`bdi` on the plant's registry and models dir, as an operator on any machine would run it."""
        return bdi(self.models_dir, *args, BDI_DATABASE_URL=self.database_url)

    def host_logs(self) -> str:
        return self.a.log.read_text() + self.b.log.read_text()


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    """Hosts a and b over one PostgreSQL database and one models dir, nginx in front of both."""
    server = os.environ.get("BDI_TEST_DATABASE_URL", "")
    if not server:
        pytest.skip(POSTGRES_SKIP)
    if NGINX is None:
        pytest.skip(NGINX_SKIP)
    tmp = tmp_path_factory.mktemp("plant")
    with temporary_database(server) as url:
        a, b = (Host(tmp / "models", url, tmp / f"host-{name}.log") for name in "ab")
        with running([a, b]), nginx_in_front(tmp / "nginx", [a, b]) as front:
            yield Plant(tmp / "models", url, a, b, front, tmp / "nginx" / "access.log")


@dataclasses.dataclass
class PrivatePostgres:
    """A PostgreSQL server of one test only, to restart at will (the machine's shared one is never touched)."""

    bindir: Path
    root: Path
    port: int
    as_postgres: list[str]  # initdb and postgres refuse to run as root

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run([*self.as_postgres, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-w", *args],
                       check=check, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-l", str(self.root / "server.log"), "-o", options, "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    programs = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda path: path.parts[-3].zfill(4))
    if not programs:
        pytest.skip("needs PostgreSQL's server programs under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="bdi-pg-"))
    as_postgres: list[str] = []
    try:
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' OS user to run a private PostgreSQL as")
            os.chown(root, owner.pw_uid, owner.pw_gid)
            as_postgres = ["runuser", "-u", "postgres", "--"]
        bindir = programs[-1].parent
        subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=300)
        server = PrivatePostgres(bindir, root, free_port(), as_postgres)
        server.start()
        try:
            yield server
        finally:
            server.pg_ctl("-m", "immediate", "stop", check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- requests -----------------------------------------------------------------------------------
def _form(roi: str) -> dict[str, str]:
    return {"role_id": ROLE, "roi_id": roi, "mm_per_px": "0.2"}


def fit_files(seeds: Iterable[int]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{seed}.png", png_bytes(synthetic_roi(64, 48, seed)), "image/png")) for seed in seeds]


def fit(base: str, roi: str, seeds: Iterable[int], **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/fit_ok", data=_form(roi), files=fit_files(seeds), headers=headers, timeout=600)


def infer(base: str, roi: str, image: bytes = PROBE, **fields: str) -> httpx.Response:
    return httpx.post(f"{base}/infer", data={**_form(roi), **fields}, files={"image": ("x.png", image, "image/png")},
                      timeout=120)


def calibrate(base: str, roi: str, correlation_id: str = "", ok_scores: list[float] | None = None) -> httpx.Response:
    body = {"role_id": ROLE, "roi_id": roi, "ok_scores": ok_scores or [0.1, 0.2], "ng_scores": None}
    headers = {"X-Correlation-Id": correlation_id} if correlation_id else {}
    return httpx.post(f"{base}/calibrate_ng", json=body, headers=headers, timeout=120)


def state(base: str, roi: str) -> httpx.Response:
    return httpx.get(f"{base}/state", params={"role_id": ROLE, "roi_id": roi}, timeout=120)


def score(base: str, roi: str) -> float:
    answer = infer(base, roi)
    assert answer.status_code == 200, answer.text
    return answer.json()["score"]


# ---- the plant ----------------------------------------------------------------------------------
def test_the_gui_flow_works_through_nginx(plant):
    front = plant.front
    probe = httpx.options(f"{front}/fit_ok", timeout=30)  # the GUI reads a 404 here as "no such endpoint"
    assert 200 <= probe.status_code < 300 and "POST" in probe.headers["allow"]

    images = [png_bytes(synthetic_roi(400, 300, seed)) for seed in range(20)]
    assert sum(map(len, images)) > 1024 * 1024  # over nginx's default body limit of 1 MB
    files = [("images", (f"ok_{i}.png", data, "image/png")) for i, data in enumerate(images)]
    fitted = httpx.post(f"{front}/fit_ok", data=_form("gui"), files=files, headers={"X-Correlation-Id": "gui-fit-1"},
                        timeout=600)
    assert fitted.status_code == 200, fitted.text
    assert fitted.json()["token_shape"] == [8, 8] and fitted.headers["x-correlation-id"] == "gui-fit-1"

    ok_scores = [infer(front, "gui", png_bytes(synthetic_roi(400, 300, seed))).json()["score"] for seed in (30, 31, 32)]
    calibrated = calibrate(front, "gui", ok_scores=ok_scores)
    assert calibrated.status_code == 200, calibrated.text
    threshold = calibrated.json()["threshold"]
    part = png_bytes(synthetic_roi(400, 300, seed=40, defect=(200, 150, 12)))
    for shape in ({"kind": "rect", "x": 20, "y": 20, "w": 360, "h": 260}, {"kind": "circle", "cx": 200, "cy": 150, "r": 140},
                  {"kind": "annulus", "cx": 200, "cy": 150, "r": 140, "r_inner": 40}):
        answer = infer(front, "gui", part, shape=json.dumps(shape))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["threshold"] == pytest.approx(threshold) and body["decision"] in ("ok", "ng")
        assert body["heatmap_png_base64"] and isinstance(body["regions"], list)
    shown = state(front, "gui").json()
    assert (shown["fitted"], shown["calib_present"], shown["version"], shown["token_shape"]) == (True, True, 1, [8, 8])

    # A request without an id gets nginx's: the same id is in the answer, nginx's log and the host's log.
    health = httpx.get(f"{front}/health", timeout=30)
    request_id = health.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id) and health.headers["x-correlation-id"] == request_id
    eventually(lambda: f"id={request_id}" in plant.access_log.read_text(), "nginx's log lacks the id")
    eventually(lambda: f"[{request_id}]" in plant.host_logs() and "[gui-fit-1]" in plant.host_logs(),
               "the hosts' logs lack the correlation ids")
    used = set(re.findall(r"upstream=(\S+)", plant.access_log.read_text()))
    assert used == {f"127.0.0.1:{plant.a.port}", f"127.0.0.1:{plant.b.port}"}  # nginx spread the flow over both


def test_what_one_host_changes_is_what_the_other_serves_next(plant):
    a, b = plant.a.base, plant.b.base
    assert fit(a, "shared", [1, 2]).status_code == 200
    first = score(a, "shared")
    assert score(b, "shared") == pytest.approx(first, abs=1e-6)
    assert fit(b, "shared", [7, 8, 9]).status_code == 200  # b refits: a has version 1 in its cache
    second = score(b, "shared")
    assert second != pytest.approx(first, abs=1e-6)
    assert state(a, "shared").json()["version"] == 2 and score(a, "shared") == pytest.approx(second, abs=1e-6)

    threshold = calibrate(a, "shared").json()["threshold"]
    assert infer(b, "shared").json()["threshold"] == pytest.approx(threshold)

    rolled = plant.admin("models", "rollback", ROLE, "shared", "1")
    assert rolled.exit_code == 0, rolled.output
    for host in (a, b):
        assert state(host, "shared").json()["version"] == 1 and score(host, "shared") == pytest.approx(first, abs=1e-6)

    deleted = plant.admin("models", "delete", ROLE, "shared", "--yes")
    assert deleted.exit_code == 0, deleted.output
    for host in (a, b):
        assert state(host, "shared").json()["fitted"] is False
        gone = infer(host, "shared")
        assert gone.status_code == 400 and "Memory not fitted" in gone.json()["error"]


def test_fits_of_one_roi_racing_through_two_hosts_get_consecutive_versions(plant):
    statuses: list[int] = []

    def fit_through(base: str, seed: int) -> None:
        statuses.append(fit(base, "race", [seed, seed + 50]).status_code)

    threads = [threading.Thread(target=fit_through, args=(host.base, seed))
               for seed, host in enumerate([plant.a, plant.b] * 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    history = as_json(plant.admin("models", "history", ROLE, "race", "--json"))
    assert [v["version"] for v in history["versions"]] == [6, 5, 4, 3, 2, 1] and history["active_version"] == 6
    assert {state(host.base, "race").json()["version"] for host in (plant.a, plant.b)} == {6}
    verified = plant.admin("models", "verify")  # every version's files match their manifests and the registry
    assert verified.exit_code == 0, verified.output


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (Linux /proc): a host busy with a fit burns it."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_host_killed_mid_fit_leaves_the_other_serving_the_previous_version(plant):
    a, b = plant.a, plant.b
    if not Path("/proc/self/stat").is_file():
        pytest.skip("tells that a fit is under way from /proc (Linux)")
    assert fit(a.base, "killed", [1]).status_code == 200
    before = score(b.base, "killed")
    files = fit_files(range(100, 1100))  # 1000 images: CPU-seconds of decoding and extraction
    outcome: dict[str, object] = {}

    def long_fit() -> None:
        try:
            reply = httpx.post(f"{a.base}/fit_ok", data=_form("killed"), files=files, timeout=600)
            outcome["status"] = reply.status_code
        except httpx.TransportError as exc:
            outcome["error"] = exc

    assert a.process is not None
    idle = cpu_seconds(a.process.pid)
    thread = threading.Thread(target=long_fit)
    thread.start()
    try:
        eventually(lambda: cpu_seconds(a.process.pid) > idle + 1.0, "host a did not start the fit")
        during = [score(b.base, "killed") for _ in range(3)]
        a.stop(signal.SIGKILL)
        thread.join(120)
        assert "error" in outcome, f"the fit was not cut off mid-way: {outcome}"
        after = [score(b.base, "killed") for _ in range(3)]
        assert during + after == pytest.approx([before] * 6, abs=1e-6)
        assert state(b.base, "killed").json()["version"] == 1
        for _ in range(4):  # nginx skips the dead host
            assert infer(plant.front, "killed").status_code == 200
        history = as_json(plant.admin("models", "history", ROLE, "killed", "--json"))
        store = ModelStore(plant.models_dir)
        on_disk = [files.version for files in store.versions(store.model_dir(ROLE, "killed"))]
        assert history["active_version"] == 1 and [v["version"] for v in history["versions"]] == on_disk == [1]
    finally:
        a.start()
        a.wait()
    assert score(a.base, "killed") == pytest.approx(before, abs=1e-6)


# ---- PostgreSQL restarted under load ------------------------------------------------------------
def test_postgresql_restarted_under_load_answers_503_then_recovers_and_loses_nothing(private_postgres, tmp_path):
    models_dir = tmp_path / "models"
    hosts = [Host(models_dir, private_postgres.url, tmp_path / f"host-{name}.log") for name in "cd"]
    with running(hosts):
        c, d = (host.base for host in hosts)
        assert fit(c, "load", [1, 2]).status_code == 200
        answers: list[tuple[str, object, str, float]] = []  # kind, status, correlation id, sent at
        stop = threading.Event()

        def load(base: str, name: str) -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                kind, cid, sent = ("calibrate", "infer", "state")[i % 3], f"{name}-{i}", time.monotonic()
                try:
                    if kind == "calibrate":
                        reply = calibrate(base, "load", cid)
                    else:
                        reply = infer(base, "load") if kind == "infer" else state(base, "load")
                    answers.append((kind, reply.status_code, cid, sent))
                except httpx.TransportError as exc:
                    answers.append((kind, repr(exc), cid, sent))

        workers = [threading.Thread(target=load, args=(base, name)) for base, name in ((c, "c"), (d, "d"))]
        for worker in workers:
            worker.start()
        try:
            eventually(lambda: len(answers) >= 6, "no load")
            private_postgres.stop()
            for base in (c, d):
                down = infer(base, "load")
                assert down.status_code == 503, down.text
                body = down.json()
                assert "registry database is unavailable" in body["error"] and body["detail"] == body["error"]
                assert "retry" in body["error"] and "trace" in body
                assert [state(base, "load").status_code, calibrate(base, "load").status_code,
                        fit(base, "load", [3]).status_code] == [503, 503, 503]
                health = httpx.get(f"{base}/health", timeout=60)
                assert health.status_code == 200 and health.json()["status"] == "degraded"
                assert any("registry database unavailable" in problem for problem in health.json()["problems"])
            private_postgres.start()
            for base in (c, d):  # the hosts recover by themselves
                eventually(lambda base=base: state(base, "load").status_code == 200, "no recovery")
            recovered = time.monotonic()
            eventually(lambda: sum(sent > recovered for *_, sent in answers) >= 6, "no load after the restart")
        finally:
            stop.set()
            for worker in workers:
                worker.join(120)
        assert {status for _, status, _, _ in answers} <= {200, 503}, answers
        assert all(status == 200 for _, status, _, sent in answers if sent > recovered)

        assert fit(d, "load", [4, 5]).status_code == 200
        final = calibrate(c, "load", "final")
        assert final.status_code == 200
        for base in (c, d):
            assert infer(base, "load").json()["threshold"] == pytest.approx(final.json()["threshold"])
            assert httpx.get(f"{base}/health", timeout=60).json()["status"] == "ok"
        history = as_json(bdi(models_dir, "models", "history", ROLE, "load", "--json",
                              BDI_DATABASE_URL=private_postgres.url))
        recorded = {calibration["correlation_id"] for calibration in history["calibrations"]}
        answered = {cid for kind, status, cid, _ in answers if kind == "calibrate" and status == 200}
        assert answered and answered | {"final"} <= recorded
        assert [v["version"] for v in history["versions"]] == [2, 1] and history["active_version"] == 2
        verified = bdi(models_dir, "models", "verify", BDI_DATABASE_URL=private_postgres.url)
        assert verified.exit_code == 0, verified.output
