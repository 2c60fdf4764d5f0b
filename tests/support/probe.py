"""An outside probe of a live controller's web tiers: schemathesis reads the
OpenAPI document a tier serves, makes requests for every operation (its
fixed coverage cases, then generated valid ones and, in negative mode,
ones that break the schema on purpose), sends them over HTTP and checks
each answer.

A finding is a check that failed (``CHECKS``): a 5xx, an answer that the
operation's documentation does not describe, or no answer (status 0 in
the counts). Findings are collected, never raised inside Hypothesis:
nothing is shrunk, every operation gets exactly its budget of examples,
and one run lists everything it found.

Used by tests/test_probe.py (a small fixed budget) and bench/probe.py (a
longer one that prints figures).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.core.failures import Failure, FailureGroup

from support.fleet import Fleet, start_fleet
from support.procs import Controller

# A 5xx; and drift between the generated documents (controller/web/openapi.py)
# and real answers: a body its schema does not describe, a status or a
# content type the operation does not document. All four only read the answer.
CHECKS = (
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
)
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
SEED = 1313
FREE_TEXT_KEYS = frozenset({"type", "maxLength", "minLength"})
REQUEST_TIMEOUT = 15.0
# Generated examples for a round where only the credentials vary (see budget()).
CREDENTIAL_EXAMPLES = 5

# Operations of the admin tier the probe never calls: they would cut off
# the probe itself (its key, its session) or the fleet under it (a drone's
# certificates), and every later answer would be a 401 or a gone drone.
ADMIN_EXCLUDED = (
    ("DELETE", "/admin/api/keys/{name}"),  # removes an admin key, the probe's own too (issue 13 item 6)
    ("POST", "/admin/api/drones/{name}/revoke"),  # revokes a drone's certificates
    ("POST", "/admin/api/logout"),  # ends a session
)

DRONES = ("probe-a", "probe-b")
PUBLIC_TARGETS = {"GET /api/v1/nodes/{name}": {"name": DRONES[0]}}
# Operations on a real drone that neither change what it runs nor cut it off:
# not rename, access (PUT), restart, reboot or exec, whose generated values
# would rename the drone away or run generated commands on this machine.
ADMIN_TARGETS = {
    **{
        f"{method} /admin/api/drones/{{name}}{suffix}": {"name": DRONES[0]}
        for method, suffix in (
            ("GET", "/health"),
            ("POST", "/ping"),
            ("POST", "/drain"),
            ("POST", "/undrain"),
            ("POST", "/ground"),
            ("POST", "/unground"),
        )
    },
    "GET /admin/api/drones/{drone}/logs": {"drone": DRONES[1]},
    "GET /ws/logs/drones/{drone}": {"drone": DRONES[1]},
    "GET /ws/ssh/{drone}": {"drone": DRONES[1]},
}


def probe_fleet(root: Path, *extra: str, agent_logs: bool = False, heartbeat_interval: float = 1.0) -> Fleet:
    """A controller with Portage (so the build routes reach their handlers) and
    the enrolled agents of DRONES (no prefixes: they build nothing), all online;
    ``extra`` controller options; with ``agent_logs`` each agent also logs to a
    file (a drone's ``agent`` log source). The caller stops it."""
    # Four wrong keys an address, refilled over 10 minutes instead of ten over
    # one: the few generated keys of the login call use it up while the probe
    # lasts, so the 429 it then answers is probed too, whatever the machine's
    # speed. (Every other call carries the probe's own key, never a wrong one.)
    fleet = start_fleet(
        root,
        (),
        *("--ping-interval", "0.5", "--admin-auth-failures", "4", "--admin-auth-window", "600"),
        *extra,
        portage=True,
    )
    try:
        for name in DRONES:
            logs = ("--log-file", str(root / f"agent-{name}-own.log")) if agent_logs else ()
            fleet.add_agent(name, *logs, portage=False, heartbeat_interval=heartbeat_interval)
        fleet.wait_online()
    except BaseException:
        fleet.stop()
        raise
    return fleet


@dataclass(frozen=True, slots=True)
class Finding:
    operation: str
    status: int
    check: str
    message: str
    request: str  # a curl command line (the admin key masked)


@dataclass(slots=True)
class ProbeReport:
    requests: int = 0
    # Generated cases not sent: the same request as one sent before for the
    # operation (the credentials it would lose to the probe's own count as sent).
    repeats: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    def status_totals(self) -> Counter[int]:
        totals: Counter[int] = Counter()
        for (_, status), count in self.statuses.items():
            totals[status] += count
        return totals

    def describe_findings(self, limit: int = 40) -> str:
        """One paragraph per distinct (operation, check, status), with one request that shows it."""
        seen: dict[tuple[str, str, int], tuple[Finding, int]] = {}
        for finding in self.findings:
            key = (finding.operation, finding.check, finding.status)
            first, count = seen.get(key, (finding, 0))
            seen[key] = (first, count + 1)
        lines = []
        for (operation, check, status), (first, count) in list(seen.items())[:limit]:
            message = first.message.strip()[:600]
            request = first.request
            if len(request) > 800:
                request = f"{request[:800]}... ({len(request)} characters)"
            lines.append(f"{operation}: {check} ({status}) x{count}\n  {message}\n  {request}")
        if len(seen) > limit:
            lines.append(f"... and {len(seen) - limit} more kinds")
        return "\n".join(lines)


def load_schema(url: str, headers: dict[str, str] | None = None) -> Any:
    """The tier's OpenAPI document as schemathesis sees it."""
    return schemathesis.openapi.from_url(url, headers=headers or {}, timeout=REQUEST_TIMEOUT)


def excluding(schema: Any, operations: Iterable[tuple[str, str]]) -> Any:
    """The schema without these (method, path template) operations."""
    for method, path in operations:
        schema = schema.exclude(method=method, path=path)
    return schema


def operations(schema: Any) -> list[Any]:
    """Every operation of the schema; a part schemathesis cannot read is an error here, not a skip."""
    return [result.ok() for result in schema.get_all_operations()]


def breakable(operation: Any) -> bool:
    """Whether negative mode has anything to break: a body, or a parameter
    that is more than free text. No string breaks a bare string schema, and
    Hypothesis spends seconds of CPU per operation finding that out; the
    length bound every query and path value has (parse.MAX_QUERY_VALUE,
    checked by the tier for all of them alike) is no more to break."""
    raw = operation.definition.raw
    return "requestBody" in raw or any(not _free_text(p.get("schema", {})) for p in raw.get("parameters", ()))


def budget(operation: Any, examples: int, path_parameters: dict[str, Any] | None) -> int:
    """Generated examples for one round of the operation: ``examples`` while it
    has inputs of its own to vary. Without any (no parameters and no body, or a
    round whose path parameters all name a real object) the only generated
    inputs are the credentials beside the probe's key (a bearer token, a session
    cookie), which the tier reads before routing, alike for every operation:
    Hypothesis finds a handful of distinct ones (it repeats itself after that),
    and the coverage cases already sent them missing and wrongly typed."""
    raw = operation.definition.raw
    fixed = set(path_parameters or ())
    own = [p for p in raw.get("parameters", ()) if not (p.get("in") == "path" and p.get("name") in fixed)]
    if own or "requestBody" in raw:
        return examples
    return min(examples, CREDENTIAL_EXAMPLES)


def _free_text(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "string" and not set(schema) - FREE_TEXT_KEYS


def run_probe(
    schema: Any,
    base_url: str,
    *,
    examples: int,
    target_examples: int | None = None,
    seed: int = SEED,
    headers: dict[str, str] | None = None,
    modes: Sequence[GenerationMode] = MODES,
    targets: dict[str, dict[str, Any]] | None = None,
    checks: Sequence[str] = CHECKS,
    coverage: bool = True,
    on_operation: Callable[[str], None] | None = None,
) -> ProbeReport:
    """Send ``examples`` generated requests per operation and mode (fewer where only the
    credentials vary: budget()), ``target_examples`` (default ``examples``) in
    the rounds that name real objects (``targets``); return what came back.

    ``coverage``: first schemathesis's coverage cases of each operation, a
    fixed list without randomness (boundary values, missing and wrongly
    typed parameters, methods the path does not have).

    ``headers`` go with every request (the admin key): generated cases never
    lose their credentials, so the probe reaches each handler's own checks.
    ``targets`` maps operation labels (``"GET /api/v1/nodes/{name}"``) to
    path parameters naming real objects: those operations get a second
    round with them, since generated names only ever reach the 404.
    """
    started = time.monotonic()
    with requests.Session() as session:
        # The tiers are on 127.0.0.1: no proxy or .netrc applies, and reading
        # them from the environment for every request was some 3 % of the
        # probe's CPU.
        session.trust_env = False
        sender = _Sender(session, base_url, headers or {}, [getattr(schemathesis.checks, c) for c in checks])
        for operation in operations(schema):
            if on_operation is not None:
                on_operation(operation.label)
            if coverage:
                settings = schema.config.generation_for(operation=operation, phase="coverage")
                for case in schema.iter_coverage_cases(
                    operation, generation_modes=list(modes), generation_config=settings
                ):
                    sender.send(case)
            rounds: list[dict[str, Any] | None] = [None]
            per_target = examples if target_examples is None else target_examples
            if targets and operation.label in targets:
                rounds.append(targets[operation.label])
            for path_parameters in rounds:
                for mode in modes:
                    if mode is GenerationMode.NEGATIVE and not breakable(operation):
                        continue
                    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
                    per_round = examples if path_parameters is None else per_target
                    sender.examine(strategy, budget(operation, per_round, path_parameters), seed)
    sender.report.seconds = time.monotonic() - started
    return sender.report


class _Sender:
    """Sends generated cases over one HTTP session and files what came back."""

    def __init__(self, session: requests.Session, base_url: str, headers: dict[str, str], checks: list[Any]):
        self.session = session
        self.base_url = base_url
        self.headers = headers
        self.checks = checks
        self.report = ProbeReport()
        self.sent: set[tuple[str, ...]] = set()

    def examine(self, strategy: Any, examples: int, seed: int) -> None:
        @hypothesis.seed(seed)
        @hypothesis.settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @hypothesis.given(case=strategy)
        def send(case: Any) -> None:
            self.send(case)

        # Negative mode may find nothing to break after all (breakable() is a cheap guess).
        with contextlib.suppress(hypothesis.errors.Unsatisfiable):
            send()

    def send(self, case: Any) -> None:
        label = case.operation.label
        # Hypothesis repeats itself where there is little to vary (an operation
        # whose only inputs are the credentials beside the probe's key): a
        # request already answered would only be answered again.
        wire = self.request_of(case)
        if wire in self.sent:
            self.report.repeats += 1
            return
        self.sent.add(wire)
        self.report.requests += 1
        try:
            response = case.call(
                base_url=self.base_url, session=self.session, headers=self.headers, timeout=REQUEST_TIMEOUT
            )
        except requests.RequestException as exc:
            # No answer (a timeout, a dropped connection) is a finding too, not the end of the probe.
            self.report.statuses[(label, 0)] += 1
            request = f"{case.method} {case.formatted_path} query={case.query!r}"
            self.report.findings.append(Finding(label, 0, "no answer", repr(exc), request))
            return
        self.report.statuses[(label, response.status_code)] += 1
        try:
            case.validate_response(response, checks=self.checks, headers=self.headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                self.report.findings.append(_finding(case, response, failure))

    def request_of(self, case: Any) -> tuple[str, ...]:
        """What goes over the wire for the case: its headers as the probe's own override them."""
        headers = {**(case.headers or {}), **self.headers}
        return (
            case.operation.label,
            case.method,
            case.formatted_path,
            repr(sorted((case.query or {}).items())),
            repr(sorted(headers.items())),
            repr(sorted((case.cookies or {}).items())),
            repr(case.body),
            str(case.media_type),
        )


def _finding(case: Any, response: Any, failure: Failure) -> Finding:
    try:
        request = case.as_curl_command(headers=dict(response.request.headers))
    except Exception as exc:  # a request curl cannot spell still gets reported
        request = f"{case.method} {case.formatted_path} (no curl command: {exc})"
    return Finding(
        operation=case.operation.label,
        status=response.status_code,
        check=failure.title,
        message=failure.message,
        request=request,
    )


# -- the checks tests/test_probe*.py make ------------------------------------------


def assert_probe_held(controller: Controller, report: ProbeReport, operations_probed: list[str]) -> None:
    """Every operation reached, no finding, and the fleet whole after the probe."""
    reached = {label for label, _ in report.statuses}
    assert reached == set(operations_probed), f"no request reached {set(operations_probed) - reached}"
    assert not report.findings, (
        f"{len(report.findings)} of {report.requests} probe requests failed a check:\n"
        + report.describe_findings()
    )
    assert controller.alive(), "the controller died under the probe"
    assert "Traceback" not in controller.log(), controller.log()[-4000:]
    for name in DRONES:
        node = controller.node(name)
        assert node is not None and node["status"] == "online", f"{name} after the probe: {node}"


def probe_admin_tier(
    controller: Controller, *, reads: bool, examples: int, target_examples: int | None = None
) -> None:
    """Probe the admin tier's reads (GET, websockets included) or the rest of
    its operations (what changes something), then check that it held.

    The two halves run in two test modules, on two fleets: side by side (xdist
    keeps a module on one worker) they take half as long as the whole."""
    key = {"X-Admin-Key": controller.admin_key}
    full = load_schema(controller.admin_url + "/admin/api/openapi.json", key)
    everything = {op.label for op in operations(full)}
    excluded = {f"{method} {path}" for method, path in ADMIN_EXCLUDED}
    # A renamed route must not slip back into the probe unnoticed.
    assert excluded <= everything, f"excluded operations the document lacks: {excluded - everything}"
    schema = excluding(full, ADMIN_EXCLUDED)
    # exclude, not include: include would bring back what the document's own filters leave out.
    half = (
        schema.exclude(method=["POST", "PUT", "PATCH", "DELETE"]) if reads else schema.exclude(method="GET")
    )
    labels = [op.label for op in operations(half)]
    # Together the halves are every operation: one takes the GETs, the other all the rest.
    expected = {label for label in everything - excluded if label.startswith("GET ") == reads}
    assert labels and set(labels) == expected, (
        sorted(set(labels) - expected),
        sorted(expected - set(labels)),
    )
    report = run_probe(
        half,
        controller.admin_url,
        examples=examples,
        target_examples=target_examples,
        headers=key,
        targets=ADMIN_TARGETS,
    )
    assert_probe_held(controller, report, labels)
    # The probe stayed authenticated throughout: its own key never got a 401 or 429
    # outside the login call, where generated keys are wrong by design.
    refused = {
        (label, status)
        for (label, status), _ in report.statuses.items()
        if status in (401, 429) and label != "POST /admin/api/login"
    }
    assert not refused, refused
