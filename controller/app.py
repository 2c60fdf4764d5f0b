"""The controller process: owns every component, starts and stops them in
stages."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web

from swarm import __version__
from swarm.clock import SYSTEM, Clock
from swarm.config import ConfigError
from swarm.controller import access, adminkey, authz, binhosts, payloadkey, payloadsvc
from swarm.controller.alerts import Alerter
from swarm.controller.authz import AuthzInterceptor
from swarm.controller.bounds import BoundSettings, BurstLog, Bursts, StreamBounds
from swarm.controller.builds import BuildQueue, BuildSettings
from swarm.controller.buildsvc import BuildsService
from swarm.controller.ca import CertificateAuthority
from swarm.controller.channels import KILL_WAIT, Channels
from swarm.controller.channelsvc import ChannelsService
from swarm.controller.config import DEFAULT_BINHOSTS_FILE, DEFAULT_DRONES_FILE, ControllerConfig
from swarm.controller.enrollment import EnrollmentService
from swarm.controller.errors import InvalidArgument, SwarmError
from swarm.controller.eventloop import describe_loop
from swarm.controller.events import EventLog
from swarm.controller.execs import Execs
from swarm.controller.fleet import Fleet
from swarm.controller.gateway import Gateway, serve_gateway
from swarm.controller.healer import Healer, HealSettings
from swarm.controller.health import HealthMonitor, y_for_phi
from swarm.controller.metrics import LiveCollector, Metrics
from swarm.controller.mirrors import Mirrors
from swarm.controller.notify import Notifier
from swarm.controller.oob import CommandTemplate, SshSettings
from swarm.controller.payloads import Payloads, PayloadSettings
from swarm.controller.persist import NodeWriter
from swarm.controller.pinger import Pinger
from swarm.controller.portage import PortageWorker
from swarm.controller.protolog import ProtocolLog
from swarm.controller.release_schedule import ReleaseSchedule
from swarm.controller.releases import Releases
from swarm.controller.rollout import Rollouts
from swarm.controller.selfcheck import SelfCheck, SelfCheckSettings
from swarm.controller.services import Services
from swarm.controller.shells import ShellRegistry, ShellSettings
from swarm.controller.signing import SigningError
from swarm.controller.staging import STAGING_PATH, StagingBinhost
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore
from swarm.controller.testbinhost import TEST_PATH, TestBinhost
from swarm.controller.testbuilds import TestBuilds
from swarm.controller.testrunner import RunnerSettings, TestRunner
from swarm.controller.trust import Trust
from swarm.controller.unparsable import ParseGuard
from swarm.controller.web import admin, public
from swarm.controller.web import metrics as web_metrics
from swarm.controller.web import server as web_server
from swarm.grpcopts import SERVER_OPTIONS
from swarm.payloadsig import public_bytes
from swarm.pki import PkiError
from swarm.v1 import build_pb2_grpc, enroll_pb2_grpc, payload_pb2_grpc, shell_pb2_grpc

log = logging.getLogger(__name__)

# Stop stages; together well under OpenRC's default 60 s stop timeout.
STOP_GATEWAY = 3.0
STOP_WEB = 3.0
STOP_SERVICES = 5.0
STOP_STORE = 5.0


class StartupError(Exception):
    """The controller cannot start; the message says why."""


@dataclass(frozen=True, slots=True)
class Ports:
    grpc: int
    public: int
    admin: int
    enroll: int | None
    metrics: int | None = None


class Controller:
    def __init__(self, config: ControllerConfig, clock: Clock = SYSTEM) -> None:
        self.config = config
        self.metrics = Metrics()
        self.clock = clock
        self.store = SqlStore(config.db_url)
        self.runner = StoreRunner(self.store, retry_max=config.db_retry_max, timing=self.metrics.store_call)
        self.protolog = ProtocolLog(config.protocol_buffer)
        self.events = EventLog(
            self.runner,
            buffer=config.event_buffer,
            retention=config.event_retention,
            pending_limit=config.event_pending_max,
            retry_max=config.db_retry_max,
        )
        self.selfcheck = SelfCheck(
            self.runner,
            self.events,
            config.data_dir,
            SelfCheckSettings(
                interval=config.health_interval,
                stall_after=config.db_stall_after,
                disk_min_free=int(config.disk_min_free_mb * 2**20),
            ),
        )
        self.fleet = Fleet(
            self.events,
            y_threshold=y_for_phi(config.suspect_phi),
            ping_timeout=config.ping_timeout,
            missed_pings=config.missed_pings,
            clock=clock,
        )
        self.health = HealthMonitor(
            self.fleet,
            suspect_phi=config.suspect_phi,
            offline_after_intervals=config.offline_after_intervals,
            clock=clock,
        )
        self.pinger = Pinger(self.fleet, config.ping_interval, clock, rate=config.ping_rate)
        self.writer = NodeWriter(self.fleet, self.runner, config.persist_interval, clock)
        self.bounds = StreamBounds(self.events, bound_settings(config))
        self.gateway = Gateway(
            self.fleet,
            self.events,
            self.protolog,
            hello_timeout=config.hello_timeout,
            bounds=self.bounds,
            metrics=self.metrics,
        )
        self.started_at = clock.time()
        self.trust: Trust | None = None
        self.portage: PortageWorker | None = None
        self.staging: StagingBinhost | None = None
        self.builds: BuildQueue | None = None
        self.build_logs: BuildsService | None = None
        self.releases: Releases | None = None
        self.release_schedule: ReleaseSchedule | None = None
        self.testbuilds: TestBuilds | None = None
        self.test_portage: PortageWorker | None = None
        self.testrunner: TestRunner | None = None
        self.binhosts: binhosts.BinhostTargets | None = None
        self.mirrors: Mirrors | None = None
        self.payloads: Payloads | None = None
        self.rollouts: Rollouts | None = None
        self.alerter = Alerter(config.alert_webhook)
        self.gateway.alerter = self.alerter
        self.healer: Healer | None = None
        shells = shell_settings(config)
        self.channels = Channels(shells.max_sessions, shells.open_timeout)
        self.shells = ShellRegistry(
            self.events, shells, self.channels, config.data_dir / "recordings", clock=clock
        )
        self.execs = Execs(self.events, self.channels, shells.exec_max_output, shells.exec_max_timeout)
        # Read when scraped; builds, healer and websockets join it as they start.
        self.live = LiveCollector(
            self.fleet,
            self.gateway,
            self.runner,
            self.shells,
            started_at=self.started_at,
            database=self.store.backend,
        )
        self.metrics.watch(self.live)
        self._server: grpc.aio.Server | None = None
        self._web: list[web.AppRunner] = []
        # Lines a peer can cause on the web tiers' connections, once per burst.
        self._web_notes = BurstLog(logging.getLogger(web_server.__name__), Bursts(web_server.NOTE_WINDOW))
        self._conn_settings: web_server.ConnSettings | None = None
        self._tiers: list[web_server.Connections] = []
        self.ports: Ports | None = None

    async def start(self) -> Ports:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.metrics.start()
        self._conn_settings = web_server.conn_settings(config, web_server.raise_open_files_limit())
        try:
            keys = await adminkey.KeyStore.open(config.admin_keys_path, config.admin_key_path)
        except (adminkey.AdminKeyError, OSError) as exc:
            raise StartupError(str(exc)) from None
        await self.runner.open()
        await self.events.start()
        self.fleet.load(await self.runner.call(self.store.list_nodes))

        if not config.insecure:
            try:
                ca = CertificateAuthority.load_or_create(config.data_dir / "pki")
            except (OSError, PkiError) as exc:
                raise StartupError(f"cannot load the controller CA: {exc}") from None
            self.trust = Trust(
                ca,
                self.runner,
                self.events,
                self.fleet,
                config.cert_lifetime,
                max_tokens=config.join_tokens_max,
                clock=self.clock,
            )
            await self.trust.start()
            self.gateway.trust = self.trust

        if str(config.portage_eprefix) not in ("", "."):
            await self._start_builds()
        if self.trust is not None:
            await self._start_payloads()
        self.healer = Healer(
            self.fleet,
            self.events,
            self.runner,
            self.alerter,
            heal_settings(config),
            file_entries=self._drones_file(),
            enrolled=self.trust.enrolled if self.trust is not None else None,
            metrics=self.metrics,
            clock=self.clock,
        )
        self.live.healer = self.healer
        await self._start_binhosts()
        await self.shells.start()
        grpc_port, enroll_port = await self._start_grpc()
        # Made here, started with the other loops below: the web tier shows its status.
        self.release_schedule = self._make_release_schedule()
        services = Services(
            config=config,
            fleet=self.fleet,
            events=self.events,
            protolog=self.protolog,
            runner=self.runner,
            started_at=self.started_at,
            backend=self.store.backend,
            trust=self.trust,
            grpc_port=grpc_port,
            enroll_port=enroll_port,
            builds=self.builds,
            staging=self.staging,
            build_logs=self.build_logs,
            healer=self.healer,
            pinger=self.pinger,
            shells=self.shells,
            channels=self.channels,
            execs=self.execs,
            selfcheck=self.selfcheck,
            metrics=self.metrics,
            clock=self.clock,
            releases=self.releases,
            release_schedule=self.release_schedule,
            binhosts=self.binhosts,
            mirrors=self.mirrors,
            testbuilds=self.testbuilds,
            payloads=self.payloads,
            rollouts=self.rollouts,
            testrunner=self.testrunner,
        )
        public_port = await self._serve(
            public.create_app(services), config.bind, config.public_port, "public"
        )
        admin_app = admin.create_app(services, keys)
        admin_port = await self._serve(admin_app, config.admin_bind, config.admin_port, "admin")
        self.live.websockets = web_metrics.websocket_clients(admin_app)
        metrics_port = None
        if config.metrics_port is not None:
            metrics_port = await self._serve(
                web_metrics.create_app(services), config.admin_bind, config.metrics_port, "metrics"
            )
            log.info(
                "metrics served without authentication at http://%s:%d/metrics",
                config.admin_bind,
                metrics_port,
            )
        base = config.public_url.rstrip("/")
        if not base:
            host = config.bind if config.bind not in ("0.0.0.0", "::", "") else socket.getfqdn()
            base = f"http://{host}:{public_port}"
        if self.binhosts is not None:
            self.binhosts.local_url = base + binhosts.LOCAL_PATH
        if self.staging is not None:
            self.staging.url = base + STAGING_PATH
            log.info("staging binhost served at %s", self.staging.url)
        if self.testrunner is not None:
            self.testrunner.public_url = base
            self.testrunner.binhost.url = base + TEST_PATH

        await self.selfcheck.start()
        await self.health.start()
        await self.pinger.start()
        await self.writer.start()
        await self.alerter.start()
        await self.healer.start()
        if self.release_schedule is not None:
            await self.release_schedule.start()
        self.ports = Ports(
            grpc=grpc_port, public=public_port, admin=admin_port, enroll=enroll_port, metrics=metrics_port
        )
        self.events.emit(
            "controller_started",
            f"controller {__version__} started",
            version=__version__,
            grpc_port=grpc_port,
            public_port=public_port,
            admin_port=admin_port,
            database=self.store.backend,
            drones_known=len(self.fleet),
        )
        log.info(
            "serving: gRPC %s:%d, public http://%s:%d/, admin http://%s:%d/",
            config.bind,
            grpc_port,
            config.bind,
            public_port,
            config.admin_bind,
            admin_port,
        )
        if str(config.ready_file) not in ("", "."):
            self._write_ready(self.ports)
        return self.ports

    async def _start_payloads(self) -> None:
        """Payloads need the drones' certificates (Fetch serves only the drone a
        payload is deployed to): on with mTLS, off with --insecure."""
        config = self.config
        try:
            key = await asyncio.to_thread(payloadkey.load_or_create, config.data_dir / "pki")
        except (OSError, PkiError) as exc:
            raise StartupError(f"cannot load the payload key: {exc}") from None
        self.payloads = Payloads(
            config.data_dir / "payloads",
            self.runner,
            self.events,
            self.fleet,
            payloadsvc.signer(key),
            public_bytes(key),
            PayloadSettings(
                max_bytes=config.payload_max_bytes,
                expiry=config.payload_expiry,
                confirm_within=config.payload_confirm_within,
                deploy_timeout=config.payload_deploy_timeout,
            ),
            builds=self.builds,
            clock=self.clock,
        )
        await self.payloads.start()
        self.selfcheck.add_recovery_listener(self.payloads.writer.kick)
        self.gateway.payloads = self.payloads
        self.rollouts = Rollouts(self.payloads, self.fleet, self.events, self.runner, self.clock)
        await self.rollouts.start()

    async def _start_binhosts(self) -> None:
        """Binhost targets (binhosts.py): always, they need no Portage."""
        path = self.config.binhosts_file
        entries: dict[str, dict[str, object]] = {}
        if str(path) not in ("", ".") and (path.exists() or path != DEFAULT_BINHOSTS_FILE):
            try:
                entries = binhosts.load_file(path)
            except ConfigError as exc:
                raise StartupError(str(exc)) from None
        self.binhosts = binhosts.BinhostTargets(
            self.runner, self.events, file_targets=entries, clock=self.clock
        )
        await self.binhosts.start()
        if self.releases is not None:
            config = self.config
            self.mirrors = Mirrors(
                self.binhosts,
                self.releases,
                self.events,
                ssh_settings(config),
                parallel=config.mirror_parallel,
                check_interval=config.mirror_check_interval,
                clock=self.clock,
            )
            await self.mirrors.start()
            if self.builds is not None:
                # Drones pull what the current release holds from the mirrors of their network.
                self.builds.use_mirrors(self.mirrors, self.binhosts.url_of)

    def _drones_file(self) -> dict[str, dict[str, object]]:
        path = self.config.drones_file
        if str(path) in ("", "."):
            return {}
        if not path.exists():
            if path == DEFAULT_DRONES_FILE:
                return {}
            raise StartupError(f"drones file {path} does not exist")
        try:
            return access.load_file(path)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None

    async def _start_builds(self) -> None:
        config = self.config
        self.portage = PortageWorker(config.portage_eprefix)
        try:
            pkgdir = await self.portage.pkgdir()
        except SwarmError as exc:
            raise StartupError(
                f"cannot use the Portage prefix {config.portage_eprefix}: {exc.message}"
            ) from None
        url = config.public_url or f"http://{socket.getfqdn()}:{config.public_port}"
        self.staging = StagingBinhost(
            pkgdir,
            config.data_dir / "uploads",
            url.rstrip("/") + STAGING_PATH,
            self.portage,
            self.runner,
            self.events,
        )
        await self.staging.start()
        settings = BuildSettings(
            build_timeout=config.build_timeout,
            grace=config.build_grace,
            start_timeout=config.build_start_timeout,
            ground_after=config.ground_after,
            cooldown=config.ground_cooldown,
        )
        self.builds = BuildQueue(
            self.fleet,
            self.events,
            self.runner,
            self.portage,
            self.staging,
            settings,
            metrics=self.metrics,
            clock=self.clock,
        )
        self.live.builds = self.builds
        await self.builds.start()
        self.selfcheck.add_recovery_listener(self.builds.writer.kick)
        self.gateway.builds = self.builds
        self.releases = Releases(
            config.releases_dir,
            staging=self.staging,
            worker=self.portage,
            runner=self.runner,
            events=self.events,
            sessions=self.builds,
            drone_names=self.fleet.names,
            keep=config.release_keep,
            key_file=_path(config.release_key),
            clock=self.clock,
        )
        builds = self.builds
        # Test builds' Portage questions and their binhost's index have a process
        # of their own: a token holder's request never waits behind staging's work.
        self.test_portage = PortageWorker(config.portage_eprefix, pkgdir=self._test_pkgdir)
        self.testbuilds = TestBuilds(
            self.runner,
            self.events,
            self.test_portage.match,
            max_queued=config.test_build_max_queued,
            allowed_use=config.test_build_use_flags,
            webhook_hosts=config.test_build_webhook_host_set,
            parallel=config.test_build_parallel,
            estimate=lambda cpn: s.mean_seconds if (s := builds.stats.get(cpn)) is not None else None,
            warm=self.test_portage.warm,
            clock=self.clock,
        )
        await self.testbuilds.start()
        try:
            await self.releases.start()
        except (SwarmError, SigningError, OSError) as exc:
            raise StartupError(f"cannot start releases: {getattr(exc, 'message', None) or exc}") from None
        await self._start_test_runner()
        log.info(
            "builds enabled: prefix %s, staging binhost %s at %s",
            config.portage_eprefix,
            pkgdir,
            self.staging.url,
        )

    @property
    def _test_pkgdir(self) -> Path:
        return self.config.data_dir / "binhost" / "test"

    async def _start_test_runner(self) -> None:
        """What runs the test builds (with builds on, as their queue)."""
        config = self.config
        builds, testbuilds = self.builds, self.testbuilds
        assert builds is not None and testbuilds is not None
        assert self.test_portage is not None
        binhost = TestBinhost(
            self._test_pkgdir,
            config.data_dir / "uploads-test",
            TEST_PATH,  # the full URL once the public tier listens
            # Its PKGDIR is the test binhost's: staging's index is never touched.
            self.test_portage,
            self.runner,
            self.events,
        )
        self.testrunner = TestRunner(
            testbuilds,
            builds,
            self.fleet,
            binhost,
            Notifier(config.smtp, testbuilds.notified),
            config.data_dir / "buildlogs",
            RunnerSettings(
                parallel=config.test_build_parallel,
                drones=config.test_build_drone_names,
                keep_days=config.test_build_keep_days,
                build_timeout=config.build_timeout,
                start_timeout=config.build_start_timeout,
                grace=config.build_grace,
            ),
            clock=self.clock,
        )
        await self.testrunner.start()
        self.gateway.tests = self.testrunner

    async def _start_grpc(self) -> tuple[int, int | None]:
        """The gateway port (mutual TLS) and the enrollment port (server TLS only).

        grpcio cannot ask for an optional client certificate on one port, so
        enrollment, the one call without a certificate, has a port of its own.
        The authorization interceptor guards every method on both; ParseGuard
        answers a request that does not parse (unparsable.py)."""
        config = self.config
        # Authorization first: a stranger's garbage is refused as a stranger's call.
        interceptors = [
            AuthzInterceptor(self.trust, BurstLog(authz.log, self.bounds.noise)),
            ParseGuard(self.bounds.peer_events),
        ]
        self._server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
        serve_gateway(self.gateway, self._server)
        # Always served, so that authorization answers the same with builds off.
        self.build_logs = BuildsService(
            self.builds, self.staging, config.data_dir / "buildlogs", self.bounds.noise
        )
        self.build_logs.tests = self.testrunner
        build_pb2_grpc.add_BuildsServicer_to_server(self.build_logs, self._server)
        shell_pb2_grpc.add_ChannelsServicer_to_server(
            ChannelsService(self.channels, self.bounds, self.events), self._server
        )
        if self.payloads is not None:
            payload_pb2_grpc.add_PayloadsServicer_to_server(
                payloadsvc.PayloadsService(self.payloads), self._server
            )
        address = f"{config.bind}:{config.grpc_port}"
        enroll_port = None
        try:
            if self.trust is None:
                log.warning("--insecure: agents connect in plaintext without certificates; development only")
                grpc_port = self._server.add_insecure_port(address)
            else:
                public_key = self.payloads.public_key if self.payloads is not None else b""
                enroll_pb2_grpc.add_EnrollmentServicer_to_server(
                    EnrollmentService(self.trust, self.bounds.peer_events, public_key), self._server
                )
                key, chain = self.trust.ca.issue_server(config.tls_name_list)
                mutual = grpc.ssl_server_credentials(
                    [(key, chain)], root_certificates=self.trust.ca.pem, require_client_auth=True
                )
                grpc_port = self._server.add_secure_port(address, mutual)
                address = f"{config.bind}:{config.enroll_port}"
                enroll_port = self._server.add_secure_port(
                    address, grpc.ssl_server_credentials([(key, chain)])
                )
        except RuntimeError as exc:
            raise StartupError(f"cannot listen for agents on {address}: {exc}") from None
        await self._server.start()
        return grpc_port, enroll_port

    async def _serve(self, app: web.Application, host: str, port: int, name: str) -> int:
        assert self._conn_settings is not None
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._web.append(runner)
        site = web_server.GuardedSite(
            runner,
            host,
            port,
            web_server.Connections(name, self._conn_settings, self._web_notes, self._tiers),
        )
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for the {name} tier on {host}:{port}: {exc.strerror or exc}"
            ) from None
        return site.port

    def _write_ready(self, ports: Ports) -> None:
        path = self.config.ready_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "grpc_port": ports.grpc,
                    "public_port": ports.public,
                    "admin_port": ports.admin,
                    "enroll_port": ports.enroll,
                    "metrics_port": ports.metrics,
                    "admin_key_file": str(self.config.admin_key_path),
                    "ca_pin": self.trust.ca.pin if self.trust is not None else None,
                    "staging_url": self.staging.url if self.staging is not None else None,
                    "event_loop": describe_loop(asyncio.get_running_loop()),
                }
            )
        )
        os.replace(tmp, path)

    async def stop(self) -> None:
        """Staged shutdown; each stage has its own deadline and says what hung."""
        # The healer first: drones going offline because we stop are no incident.
        await self._stage("healer", STOP_SERVICES, self._stop_healer())
        await self._stage("gateway", STOP_GATEWAY, self._stop_gateway())
        await self._stage("web", STOP_WEB, self._stop_web())
        await self._stage("services", STOP_SERVICES, self._stop_services())
        await self._stage("store", STOP_STORE, self._stop_store())

    async def _stage(self, name: str, timeout: float, work: Awaitable[None]) -> None:
        try:
            await asyncio.wait_for(work, timeout)
        except TimeoutError:
            log.error("shutdown stage %s did not finish in %.0fs", name, timeout)
        except Exception:
            log.exception("shutdown stage %s failed", name)

    async def _stop_healer(self) -> None:
        if self.healer is not None:
            await self.healer.stop()
        await self.alerter.stop()

    async def _stop_gateway(self) -> None:
        # Terminals first, while their drones are still connected to hang up the shells;
        # every channel (commands and logs too) gets a moment to end, then is cut.
        self.shells.close_all("the controller is stopping")
        await self.channels.stop(KILL_WAIT / 2)
        await self.shells.stop()
        self.gateway.close_all("controller shutting down")
        if self._server is not None:
            await self._server.stop(grace=1.0)

    async def _stop_web(self) -> None:
        for runner in self._web:
            await runner.cleanup()
        self._web.clear()
        self._web_notes.close()

    def _make_release_schedule(self) -> ReleaseSchedule | None:
        config = self.config
        cadence = config.release_cadence
        if cadence is None:
            return None
        # The config requires portage_eprefix with a schedule: releases exist.
        assert self.releases is not None
        return ReleaseSchedule(
            self.releases,
            self.builds,
            self.events,
            config.data_dir,
            cadence=cadence,
            auto_promote_after=config.auto_promote_seconds,
            clock=self.clock,
        )

    async def _stop_services(self) -> None:
        # Pushes first: they read the releases' files.
        if self.mirrors is not None:
            await self.mirrors.stop()
        if self.release_schedule is not None:
            await self.release_schedule.stop()
        if self.rollouts is not None:
            await self.rollouts.stop()
        if self.payloads is not None:
            await self.payloads.stop()
        if self.testrunner is not None:
            await self.testrunner.stop()
        if self.testbuilds is not None:
            await self.testbuilds.stop()
        if self.builds is not None:
            await self.builds.stop()
        if self.releases is not None:
            await self.releases.stop()
        for worker in (self.portage, self.test_portage):  # the test one started even without a runner
            if worker is not None:
                await worker.stop()
        await self.pinger.stop()
        await self.health.stop()
        await self.selfcheck.stop()
        await self.writer.stop()
        await self.metrics.stop()

    async def _stop_store(self) -> None:
        self.events.emit("controller_stopped", "controller stopped")
        try:
            await self.events.stop()
        except asyncio.CancelledError:
            # The stage's deadline: the database does not answer. Its thread
            # is a daemon, so the process still exits.
            log.error("%d events were never written: the database did not answer", self.events.pending)
            raise
        await self.runner.close()


def _path(value: Path) -> Path | None:
    return None if str(value) in ("", ".") else value


def bound_settings(config: ControllerConfig) -> BoundSettings:
    return BoundSettings(
        pending_per_peer=config.stream_pending_per_peer,
        pending_total=config.stream_pending_total,
        replace_max=config.stream_replace_max,
        replace_window=config.stream_replace_window,
        channel_streams_per_drone=config.channel_streams_per_drone,
    )


def shell_settings(config: ControllerConfig) -> ShellSettings:
    return ShellSettings(
        grace=config.shell_grace,
        idle_timeout=config.shell_idle_timeout,
        max_lifetime=config.shell_max_lifetime,
        max_sessions=config.shell_max_sessions,
        replay_bytes=config.shell_replay_kb * 1024,
        open_timeout=config.shell_open_timeout,
        recording_max_bytes=int(config.shell_recording_max_mb * 2**20),
        recordings_max_bytes=int(config.shell_recordings_max_mb * 2**20),
        recording_retention=config.shell_recording_retention_days * 86400,
        exec_max_output=config.exec_max_output_kb * 1024,
        exec_max_timeout=config.exec_max_timeout,
    )


def heal_settings(config: ControllerConfig) -> HealSettings:
    """The healer's settings from the config, with its commands checked now."""
    for template in (config.restart_command, config.hard_restart_command):
        try:
            CommandTemplate.parse(template)
        except InvalidArgument as exc:
            raise StartupError(exc.message) from None
    return HealSettings(
        grace=config.heal_grace,
        restart_timeout=config.heal_restart_timeout,
        hard_restart_timeout=config.heal_hard_restart_timeout,
        reboot_timeout=config.heal_reboot_timeout,
        command_timeout=config.heal_command_timeout,
        cooloff=config.heal_cooloff,
        cooloff_max=config.heal_cooloff_max,
        cooloff_reset=config.heal_cooloff_reset,
        dark_share=config.heal_dark_share,
        dark_window=config.heal_dark_window,
        dark_min_fleet=config.heal_dark_min_fleet,
        max_actions=config.heal_max_actions,
        action_window=config.heal_action_window,
        startup_grace=config.heal_startup_grace,
        restart_command=config.restart_command,
        hard_restart_command=config.hard_restart_command,
        ssh=ssh_settings(config),
    )


def ssh_settings(config: ControllerConfig) -> SshSettings:
    """How the controller runs ssh: healing and the mirror pusher alike."""
    return SshSettings(
        identity_file=_path(config.ssh_identity),
        known_hosts_file=_path(config.ssh_known_hosts),
        connect_timeout=config.ssh_connect_timeout,
    )
