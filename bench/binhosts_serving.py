"""Binhost serving benchmark: the controller's own binhost beside nginx on
the same 1 GB file over loopback, and how the public API answers while
clients download. It prints figures; it asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/binhosts_serving.py                 # 3-10 minutes, with the machine's load
    .venv/bin/python bench/binhosts_serving.py --rounds 5 --window 0 --no-loop
    .venv/bin/python bench/binhosts_serving.py --json figures.json --keep

The 1 GB file is real bytes (random, not sparse: a sparse file reads as
zero pages the kernel never has to fetch), written once into
``--cache`` (default ``$TMPDIR/swarm-bench-binhost``) and reused by later
runs. Both servers serve that same inode from the page cache:

- nginx (``/usr/sbin/nginx`` or ``--nginx``) with a config of our own in
  the temporary directory: one worker, ``sendfile on``, no access log (the
  controller keeps none either), on 127.0.0.1 and a free port;
- a real controller process (``swarm.controller.main`` with
  ``--portage-eprefix``: a controller prefix from tools/prefix.py), the
  file hard-linked into its staging PKGDIR and fetched from
  ``/binhost/staging/``, then hard-linked into a release the bench lays
  out itself and fetched from ``/binhost/releases/{v}/`` (the same handler
  as ``/binhost/current/``);
- unless ``--no-loop``, a second controller started with
  ``--binhost-senders 0``, every file sent by the event loop as aiohttp's
  FileResponse does (the code before sender threads): row ``loop``,
  fetched from its staging path.

Clients are ``curl`` processes (not threads of this process, nor of a
server): for each client count in ``--clients`` (default 1 and 8), all of
them start at once and each downloads the whole file to /dev/null. Each
round runs nginx and the controller one after the other (which goes first
alternates), ``--rounds`` rounds; the report gives the median of the
rounds: MB/s per client, the aggregate MB/s and controller / nginx, and
the server's CPU seconds per GB sent (nginx: master and worker; the
controller: the whole process), which the machine's other load disturbs
far less than MB/s.

Then, unless ``--window 0``, side by side: N clients on nginx and N on
one controller path at the same time, for ``--window`` seconds (small
Python clients that fetch the file again and again until the window
ends, so that none finishes early and leaves the other side a quieter
machine): the machine's other load falls on both alike, and the ratio
of the two sides' MB/s is the fairest figure a shared machine gives.

While the clients download, a thread here sends ``GET /api/v1/nodes`` to
the controller every ``--api-every`` ms on one keep-alive connection:
p50, p99 and max milliseconds of the answers, over every round, for the
controller's own downloads and, as the floor the machine allows, during
nginx's (the controller idle but the CPUs as busy).

``run(argv)`` runs it with these command-line arguments, prints the
table and returns the figures (bench/binhosts.py calls it at the end of
its own run); ``report(figures)`` prints the table again.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from harness import ROOT, BenchError, Children, Controller, env_info, own_pid_group, percentile, say

sys.path.insert(0, str(ROOT / "tools"))
import prefix as prefixes  # tools/prefix.py

from swarm.controller import releases

HOST = "127.0.0.1"
FILE_NAME = "swarm-bench.bin"
STAGING_URL = "/binhost/staging/" + FILE_NAME
# A release the bench lays out by hand (controller/releases.py lists a
# directory of this name with a manifest): the releases' own handler.
RELEASE = "v2000.01.01"
RELEASE_URL = f"/binhost/releases/{RELEASE}/{FILE_NAME}"
API_PATH = "/api/v1/nodes"
MB = 1e6
CHUNK = 8 << 20
RATIO_TARGET = 0.9
API_P99_TARGET_MS = 50.0
NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 60;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen {host}:{port};
        root {root};
    }}
}}
"""


@dataclass(frozen=True, slots=True)
class Options:
    size_mb: int
    clients: tuple[int, ...]
    rounds: int
    api_every_ms: float
    paths: tuple[str, ...]
    loop: bool
    window: float
    cache: Path
    nginx: str
    keep: bool
    json_path: Path | None


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected client counts like 1,8, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("client counts must be positive")
    return counts


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binhosts_serving.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1000, help="size of the file served (default 1000)")
    parser.add_argument("--clients", type=_counts, default=(1, 8), help="client counts (default 1,8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per client count (default 3)")
    parser.add_argument(
        "--api-every",
        type=float,
        default=20.0,
        dest="api_every_ms",
        help="ms between API requests (default 20)",
    )
    parser.add_argument(
        "--paths",
        default="staging,release",
        help="controller paths measured: staging, release or both (default staging,release)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=8.0,
        help="seconds of each side-by-side round (default 8; 0: no side-by-side rounds)",
    )
    parser.add_argument(
        "--no-loop",
        action="store_true",
        help="leave out the second controller that sends every file by the event loop (--binhost-senders 0)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "swarm-bench-binhost",
        help="where the file is written once and kept for later runs",
    )
    parser.add_argument(
        "--nginx", default="/usr/sbin/nginx", help="the nginx binary (default /usr/sbin/nginx)"
    )
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and its logs")
    return parser


def options(argv: Sequence[str]) -> Options:
    ns = parser().parse_args(list(argv))
    paths = tuple(p for p in ns.paths.split(",") if p)
    if not paths or set(paths) - {"staging", "release"}:
        raise BenchError(f"--paths must name staging and/or release, not {ns.paths!r}")
    return Options(
        max(1, ns.size_mb),
        ns.clients,
        max(1, ns.rounds),
        max(1.0, ns.api_every_ms),
        paths,
        not ns.no_loop,
        max(0.0, ns.window),
        ns.cache,
        ns.nginx,
        ns.keep,
        ns.json_path,
    )


# -- the file and the servers ------------------------------------------------


def big_file(cache: Path, size_mb: int) -> Path:
    """The file of ``size_mb`` MB of random bytes, written once (atomically) and reused."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{size_mb}mb.bin"
    size = size_mb * 1_000_000
    if path.is_file() and path.stat().st_size == size:
        return path
    say(f"writing {size_mb} MB of random bytes to {path} (once)")
    part = path.with_suffix(".part")
    block = os.urandom(CHUNK)
    with part.open("wb") as out:
        written = 0
        while written < size:
            # One random block, varied per block: cheap, and no two pages alike.
            piece = (written.to_bytes(8, "little") + block[8:])[: size - written]
            out.write(piece)
            written += len(piece)
    part.rename(path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Nginx:
    def __init__(self, children: Children, binary: str, work: Path, root: Path) -> None:
        if not Path(binary).is_file():
            raise BenchError(f"no nginx at {binary} (--nginx)")
        self._children = children
        self.dir = work / "nginx"
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, host=HOST, port=self.port, root=root))
        self.proc = children.spawn(
            [binary, "-p", str(self.dir), "-c", str(conf)], log=self.dir / "stderr.log"
        )
        wait_http(self.port, "/" + FILE_NAME, self.proc, self.dir / "error.log")

    def stop(self) -> None:
        self._children.stop(self.proc)


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise BenchError(f"server exited with {proc.returncode}: {tail}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            try:
                conn.request("HEAD", path)
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        if time.monotonic() > deadline:
            raise BenchError(f"{HOST}:{port}{path} not answering 200 within {timeout:.0f}s")
        time.sleep(0.05)


def lay_out_release(data_dir: Path, source: Path) -> None:
    """A release the controller lists at start: its directory with a manifest
    (the core's own format) and the file hard-linked in; no cut needed."""
    folder = data_dir / "releases" / "releases" / RELEASE
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / FILE_NAME
    if not link.exists():
        os.link(source, link)
    manifest = releases.Manifest(
        version=RELEASE,
        created_at=time.time(),
        notes="bench/binhosts_serving.py",
        sessions=(),
        profile="",
        repository=releases.Repository("gentoo", "", None),
        kernel="",
        packages=(),
        total_size=0,
        signing_key="",
    )
    (folder / "manifest.json").write_bytes(releases.manifest_bytes(manifest))


@contextlib.contextmanager
def controller(
    children: Children, work: Path, source: Path, name: str, extra: Sequence[str] = ()
) -> Iterator[Controller]:
    say(f"laying out a controller prefix and starting the controller ({name})")
    ctl_prefix = prefixes.create_prefix(
        prefixes.PrefixConfig(work / name / "prefix", prefixes.Role.CONTROLLER)
    )
    staged = ctl_prefix.pkgdir / FILE_NAME
    if not staged.exists():
        os.link(source, staged)
    data_dir = work / name / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    lay_out_release(data_dir, source)
    ctl = Controller(
        children, data_dir, ping_interval=5.0, extra=["--portage-eprefix", str(ctl_prefix.root), *extra]
    )
    ctl.start(timeout=120)
    try:
        yield ctl
    finally:
        ctl.stop()


# -- clients -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a server process and its children (nginx's worker)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def download(port: int, path: str, clients: int, size: int) -> list[float]:
    """``clients`` curl processes at once, each the whole file: MB/s of each."""
    url = f"http://{HOST}:{port}{path}"
    argv = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}\n", url]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(clients)]
    speeds = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise BenchError(
                f"curl {url} exited with {proc.returncode}: {err.decode(errors='replace')[-500:]}"
            )
        got, seconds = out.split()
        if int(got) != size:
            raise BenchError(f"curl {url} got {got} bytes, not {size}")
        speeds.append(size / float(seconds) / MB)
    return speeds


FETCHER = """
import socket, sys, time, json
port, path, start, end = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
buf = bytearray(1 << 20)
view = memoryview(buf)
request = f"GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n".encode()
got = 0
time.sleep(max(0.0, start - time.time()))
began = time.time()
with socket.create_connection(("127.0.0.1", port)) as sock:
    while time.time() < end:
        sock.sendall(request)
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            head += sock.recv(4096)
        head, _, body = head.partition(b"\\r\\n\\r\\n")
        lines = head.lower().split(b"\\r\\n")
        length = int(next(h.split(b":")[1] for h in lines if h.startswith(b"content-length")))
        left = length - len(body)
        got += len(body)
        while left > 0 and time.time() < end:
            n = sock.recv_into(view[: min(left, len(buf))])
            if not n:
                raise SystemExit("connection closed")
            left -= n
            got += n
        if left > 0:
            break
print(json.dumps({"bytes": got, "seconds": time.time() - began}))
"""


def side_by_side(specs: list[tuple[int, str, int]], seconds: float) -> list[list[float]]:
    """Clients on several servers at once, all over the same window: for each
    (port, path, clients), the MB/s of each client. A client fetches the
    file again and again until the window ends (none finishes early and
    leaves the others a quieter machine)."""
    start = time.time() + 0.5
    end = start + seconds
    procs = [
        [
            subprocess.Popen(
                [sys.executable, "-c", FETCHER, str(port), path, str(start), str(end)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(clients)
        ]
        for port, path, clients in specs
    ]
    speeds = []
    for group in procs:
        mine = []
        for proc in group:
            out, err = proc.communicate(timeout=seconds + 120)
            if proc.returncode != 0:
                raise BenchError(
                    f"fetch client exited with {proc.returncode}: {err.decode(errors='replace')[-500:]}"
                )
            got = json.loads(out)
            mine.append(got["bytes"] / got["seconds"] / MB)
        speeds.append(mine)
    return speeds


def bench_side_by_side(
    targets: dict[str, tuple[int, str]], clients: int, opts: Options, probes: dict[str, ApiProbe]
) -> dict[str, Any]:
    """nginx and one controller path at once, ``clients`` each, ``--rounds`` times."""
    nginx_port, nginx_path = targets["nginx"]
    result: dict[str, Any] = {}
    for name, (port, path) in targets.items():
        if name == "nginx":
            continue
        ratios, mine, theirs, api = [], [], [], []
        probe = probes[name]
        for i in range(opts.rounds):
            say(f"side by side, {clients} client(s) on nginx and on {name}, round {i + 1} of {opts.rounds}")
            probe.take()
            with probe.measuring():
                ours, nginx = side_by_side(
                    [(port, path, clients), (nginx_port, nginx_path, clients)], opts.window
                )
            api += probe.take()
            mine.append(sum(ours))
            theirs.append(sum(nginx))
            ratios.append(sum(ours) / sum(nginx) if sum(nginx) else 0.0)
        result[name] = {
            "ratio": round(statistics.median(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
            "mb_s_total": round(statistics.median(mine), 1),
            "nginx_mb_s_total": round(statistics.median(theirs), 1),
            "api_ms": latency(api),
        }
    return result


class ApiProbe:
    """GET /api/v1/nodes every ``every`` seconds on one keep-alive connection,
    from a thread of this process, while ``measuring``: milliseconds per answer."""

    def __init__(self, port: int, every: float) -> None:
        self._port = port
        self._every = every
        self._stop = threading.Event()
        self._measuring = threading.Event()
        self._lock = threading.Lock()
        self._times: list[float] = []
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="api probe", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        self._measuring.set()
        try:
            yield
        finally:
            self._measuring.clear()

    def take(self) -> list[float]:
        with self._lock:
            times, self._times = self._times, []
        return times

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if not self._measuring.wait(0.1):
                continue
            if conn is None:
                conn = http.client.HTTPConnection(HOST, self._port, timeout=30)
            started = time.perf_counter()
            try:
                conn.request("GET", API_PATH)
                answer = conn.getresponse()
                answer.read()
                ok = answer.status == 200
            except (OSError, http.client.HTTPException):
                # The server closes a keep-alive connection now and then (its request cap): not a miss.
                conn.close()
                conn, ok = None, False
                started = time.perf_counter()
                with contextlib.suppress(OSError, http.client.HTTPException):
                    conn = http.client.HTTPConnection(HOST, self._port, timeout=30)
                    conn.request("GET", API_PATH)
                    answer = conn.getresponse()
                    answer.read()
                    ok = answer.status == 200
            elapsed = time.perf_counter() - started
            with self._lock:
                if ok:
                    self._times.append(elapsed * 1000)
                else:
                    self.errors += 1
            self._stop.wait(max(0.0, self._every - elapsed))
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def latency(times: list[float]) -> dict[str, float | int | None]:
    def ms(q: float) -> float | None:
        value = percentile(times, q)
        return None if value is None else round(value, 2)

    return {"n": len(times), "p50": ms(50), "p99": ms(99), "max": round(max(times), 2) if times else None}


# -- the run ---------------------------------------------------------------------------


def run(argv: Sequence[str] = ()) -> dict[str, Any]:
    """Run the bench with these command-line arguments; the figures, also printed."""
    opts = options(argv)
    size = opts.size_mb * 1_000_000
    source = big_file(opts.cache, opts.size_mb)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-", dir=opts.cache))
    # nginx started as root serves from its workers, as nobody.
    work.chmod(0o755)
    children = Children()
    figures: dict[str, Any] = {
        "env": env_info(),
        "size_bytes": size,
        "rounds": opts.rounds,
        "clients": {},
        "side_by_side": {},
    }
    try:
        root = work / "www"
        root.mkdir()
        os.link(source, root / FILE_NAME)
        nginx = Nginx(children, opts.nginx, work, root)
        with contextlib.ExitStack() as stack:
            ctl = stack.enter_context(controller(children, work, source, "controller"))
            assert ctl.ports is not None
            public = ctl.ports.public
            targets = {"nginx": (nginx.port, "/" + FILE_NAME)}
            pids = {"nginx": nginx.proc.pid, "staging": ctl.pid, "release": ctl.pid}
            if "staging" in opts.paths:
                targets["staging"] = (public, STAGING_URL)
            if "release" in opts.paths:
                targets["release"] = (public, RELEASE_URL)
            if opts.loop:
                # The same controller with every file sent by the event loop (aiohttp's
                # FileResponse as it is): the code before sender threads, in the same run.
                loop_ctl = stack.enter_context(
                    controller(children, work, source, "loop", ["--binhost-senders", "0"])
                )
                assert loop_ctl.ports is not None
                targets["loop"] = (loop_ctl.ports.public, STAGING_URL)
                pids["loop"] = loop_ctl.pid
            for port, path in targets.values():
                wait_http(port, path, nginx.proc, ctl.data_dir / "controller.log")
            probes = {
                name: ApiProbe(port, opts.api_every_ms / 1000)
                for name, (port, _) in targets.items()
                if name != "nginx"
            }
            # While nginx serves: the API of the controller measured first.
            probes["nginx"] = next(iter(probes.values()))
            try:
                say("warming the page cache and the servers")
                for port, path in targets.values():
                    download(port, path, 1, size)
                idle = probes["nginx"]
                with idle.measuring():
                    time.sleep(1.0)
                figures["api_idle_ms"] = latency(idle.take())
                for clients in opts.clients:
                    figures["clients"][str(clients)] = bench_clients(
                        targets, pids, clients, size, opts, probes
                    )
                if opts.window:
                    for clients in opts.clients:
                        figures["side_by_side"][str(clients)] = bench_side_by_side(
                            targets, clients, opts, probes
                        )
            finally:
                for probe in set(probes.values()):
                    probe.close()
            figures["api_errors"] = sum(p.errors for p in set(probes.values()))
        nginx.stop()
    finally:
        children.close()
        if opts.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(figures)
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def bench_clients(
    targets: dict[str, tuple[int, str]],
    pids: dict[str, int],
    clients: int,
    size: int,
    opts: Options,
    probes: dict[str, ApiProbe],
) -> dict[str, Any]:
    rounds: dict[str, list[list[float]]] = {name: [] for name in targets}
    cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
    api: dict[str, list[float]] = {name: [] for name in targets}
    names = list(targets)
    for i in range(opts.rounds):
        say(f"{clients} client(s), round {i + 1} of {opts.rounds}")
        # Who goes first alternates: neither gets the quieter half of the machine's noise.
        for name in names if i % 2 == 0 else names[::-1]:
            port, path = targets[name]
            probe = probes[name]
            probe.take()
            used = cpu_seconds(pids[name])
            with probe.measuring():
                rounds[name].append(download(port, path, clients, size))
            cpu[name] += cpu_seconds(pids[name]) - used
            api[name] += probe.take()
    result: dict[str, Any] = {}
    for name, speeds in rounds.items():
        totals = [sum(r) for r in speeds]
        result[name] = {
            "mb_s_per_client": round(statistics.median(statistics.mean(r) for r in speeds), 1),
            "mb_s_total": round(statistics.median(totals), 1),
            "mb_s_total_rounds": [round(t, 1) for t in totals],
            "cpu_s_per_gb": round(cpu[name] / (size * clients * len(speeds) / 1e9), 3),
            "api_ms": latency(api[name]),
        }
    base = result["nginx"]["mb_s_total"]
    for name in names[1:]:
        result[name]["ratio"] = round(result[name]["mb_s_total"] / base, 3) if base else None
    return result


def report(figures: dict[str, Any]) -> None:
    print(
        f"{figures['size_bytes'] / MB:.0f} MB file over loopback, median of {figures['rounds']} rounds; "
        f"GET {API_PATH} while the clients download"
    )
    print(
        f"{'clients':>7} {'server':>8} {'MB/s each':>10} {'MB/s total':>11} {'x nginx':>8} "
        f"{'CPU s/GB':>9} {'API p50 ms':>11} {'p99':>7} {'max':>7}  rounds MB/s"
    )
    worst_ratio, worst_p99 = None, None
    for clients, per_server in figures["clients"].items():
        for name, f in per_server.items():
            ratio = f.get("ratio")
            api = f["api_ms"]
            shown = "" if ratio is None else f"{ratio:.3f}"
            print(
                f"{clients:>7} {name:>8} {f['mb_s_per_client']:>10.1f} {f['mb_s_total']:>11.1f} {shown:>8} "
                f"{f['cpu_s_per_gb']:>9.3f} {_ms(api['p50']):>11} {_ms(api['p99']):>7} {_ms(api['max']):>7}  "
                + " ".join(f"{t:.0f}" for t in f["mb_s_total_rounds"])
            )
            if ratio is not None and name != "loop":
                worst_ratio = ratio if worst_ratio is None else min(worst_ratio, ratio)
                if api["p99"] is not None:
                    worst_p99 = api["p99"] if worst_p99 is None else max(worst_p99, api["p99"])
    if figures["side_by_side"]:
        print()
        print(
            "side by side: N clients on nginx and N on the controller at the same time, over the same "
            "window (the machine's other load falls on both alike); median of the rounds"
        )
        print(
            f"{'clients':>7} {'server':>8} {'MB/s total':>11} {'nginx MB/s':>11} {'x nginx':>8} "
            f"{'API p50 ms':>11} {'p99':>7} {'max':>7}  rounds x nginx"
        )
        for clients, per_server in figures["side_by_side"].items():
            for name, f in per_server.items():
                api = f["api_ms"]
                print(
                    f"{clients:>7} {name:>8} {f['mb_s_total']:>11.1f} {f['nginx_mb_s_total']:>11.1f} "
                    f"{f['ratio']:>8.3f} {_ms(api['p50']):>11} {_ms(api['p99']):>7} {_ms(api['max']):>7}  "
                    + " ".join(f"{r:.2f}" for r in f["ratios"])
                )
    idle = figures["api_idle_ms"]
    print(f"API with nothing downloading: p50 {_ms(idle['p50'])} ms, p99 {_ms(idle['p99'])} ms")
    print("(nginx rows: the controller's API while nginx serves, the floor the busy machine allows;")
    print(" loop rows: a controller with --binhost-senders 0, every file sent by the event loop)")
    if worst_ratio is not None:
        met = "met" if worst_ratio >= RATIO_TARGET else "MISSED"
        print(f"target >= {RATIO_TARGET:g}x nginx: {met} (worst {worst_ratio:.3f})")
    if worst_p99 is not None:
        met = "met" if worst_p99 < API_P99_TARGET_MS else "MISSED"
        print(
            f"target API p99 < {API_P99_TARGET_MS:g} ms while the controller serves: "
            f"{met} (worst {worst_p99:.2f})"
        )
    if figures.get("api_errors"):
        print(f"API requests that failed: {figures['api_errors']}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    own_pid_group()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    try:
        run(sys.argv[1:])
    except BenchError as exc:
        print(f"bench/binhosts_serving.py: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
