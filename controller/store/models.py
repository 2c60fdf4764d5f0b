"""peewee models: the schema as of the newest migration."""

from __future__ import annotations

import peewee as pw


class BaseModel(pw.Model):
    class Meta:
        legacy_table_names = False


class SchemaVersion(BaseModel):
    version = pw.IntegerField(primary_key=True)
    name = pw.CharField()
    applied_at = pw.DoubleField()


class Node(BaseModel):
    id = pw.CharField(primary_key=True, max_length=64)
    name = pw.CharField(index=True, max_length=64)
    drone_type = pw.CharField(max_length=16, default="unknown")
    cores = pw.IntegerField(default=0)
    network = pw.CharField(default="")
    hostname = pw.CharField(default="")
    agent_version = pw.CharField(default="")
    payload_version = pw.CharField(default="")
    heartbeat_interval_ms = pw.IntegerField(default=1000)
    status = pw.CharField(max_length=16, default="offline")
    first_seen_at = pw.DoubleField()
    last_seen_at = pw.DoubleField(null=True)
    last_heartbeat_at = pw.DoubleField(null=True)
    last_ping_at = pw.DoubleField(null=True)
    last_pong_at = pw.DoubleField(null=True)
    ping_latency_ms = pw.DoubleField(null=True)
    load1 = pw.DoubleField(default=0)
    load5 = pw.DoubleField(default=0)
    load15 = pw.DoubleField(default=0)
    cpu_percent = pw.DoubleField(default=0)
    memory_percent = pw.DoubleField(default=0)
    disk_percent = pw.DoubleField(default=0)
    disk_free_bytes = pw.BigIntegerField(default=0)
    emerge_running = pw.BooleanField(default=False)
    current_job_id = pw.CharField(default="")


class Event(BaseModel):
    # Ids are handed out by the controller (it keeps recent events in
    # memory and pages by id), so this is not an auto-increment column.
    id = pw.BigIntegerField(primary_key=True)
    ts = pw.DoubleField(index=True)
    type = pw.CharField(max_length=48, index=True)
    message = pw.TextField(default="")
    drone_id = pw.CharField(max_length=64, null=True, index=True)
    drone_name = pw.CharField(max_length=64, null=True)
    data = pw.TextField(default="{}")


class JoinToken(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    secret_hash = pw.CharField(max_length=64)
    name = pw.CharField(max_length=64, null=True)
    created_at = pw.DoubleField()
    expires_at = pw.DoubleField()
    created_by = pw.CharField(max_length=64, default="")
    used_at = pw.DoubleField(null=True)
    used_by = pw.CharField(max_length=64, null=True)
    revoked_at = pw.DoubleField(null=True)


class Certificate(BaseModel):
    serial = pw.CharField(primary_key=True, max_length=48)
    drone_id = pw.CharField(max_length=64, index=True)
    issued_at = pw.DoubleField()
    not_after = pw.DoubleField(index=True)
    revoked_at = pw.DoubleField(null=True)


class DroneName(BaseModel):
    drone_id = pw.CharField(primary_key=True, max_length=64)
    name = pw.CharField(max_length=64, unique=True)
    bound_at = pw.DoubleField()
    bound_by = pw.CharField(max_length=64, default="")


class BuildSession(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    name = pw.CharField(max_length=128)
    state = pw.CharField(max_length=16, index=True)
    atoms = pw.TextField(default="[]")
    created_at = pw.DoubleField()
    created_by = pw.CharField(max_length=64, default="")
    started_at = pw.DoubleField(null=True)
    finished_at = pw.DoubleField(null=True)


class Job(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    session_id = pw.CharField(max_length=32, index=True)
    cpv = pw.CharField(max_length=255)
    deps = pw.TextField(default="[]")
    state = pw.CharField(max_length=16, index=True)
    attempts = pw.IntegerField(default=0)
    failed_on = pw.TextField(default="[]")
    drone_id = pw.CharField(max_length=64, null=True)
    build_id = pw.CharField(max_length=32, null=True)
    reason = pw.TextField(default="")
    priority = pw.DoubleField(default=0)
    created_at = pw.DoubleField()
    ready_at = pw.DoubleField(null=True)
    assigned_at = pw.DoubleField(null=True)
    started_at = pw.DoubleField(null=True)
    finished_at = pw.DoubleField(null=True)


class Build(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    job_id = pw.CharField(max_length=32, index=True)
    session_id = pw.CharField(max_length=32, index=True)
    cpv = pw.CharField(max_length=255)
    drone_id = pw.CharField(max_length=64)
    state = pw.CharField(max_length=16)
    created_at = pw.DoubleField(index=True)
    started_at = pw.DoubleField(null=True)
    finished_at = pw.DoubleField(null=True)
    exit_code = pw.IntegerField(null=True)
    reason = pw.TextField(default="")


class Artifact(BaseModel):
    build_id = pw.CharField(max_length=32)
    filename = pw.CharField(max_length=255)
    cpv = pw.CharField(max_length=255, index=True)
    sha256 = pw.CharField(max_length=64)
    size = pw.BigIntegerField()
    stored_at = pw.DoubleField()

    class Meta:
        primary_key = pw.CompositeKey("build_id", "filename")


class PackageStat(BaseModel):
    cpn = pw.CharField(primary_key=True, max_length=255)
    mean_seconds = pw.DoubleField()
    builds = pw.IntegerField()
    updated_at = pw.DoubleField()


class DroneAccess(BaseModel):
    drone_id = pw.CharField(primary_key=True, max_length=64)
    drone_type = pw.CharField(max_length=16, default="")
    ssh = pw.CharField(max_length=300, default="")
    host = pw.CharField(max_length=300, default="")
    vmid = pw.CharField(max_length=16, default="")
    reboot = pw.TextField(default="")
    healing_paused = pw.BooleanField(default=False)
    updated_at = pw.DoubleField(default=0)
    updated_by = pw.CharField(max_length=200, default="")


class Incident(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    drone_id = pw.CharField(max_length=64, index=True)
    kind = pw.CharField(max_length=16)
    reason = pw.TextField(default="")
    failed_at = pw.DoubleField(index=True)
    detected_at = pw.DoubleField()
    recovered_at = pw.DoubleField(null=True)
    level = pw.IntegerField(default=0)
    outcome = pw.CharField(max_length=32, default="")


class Setting(BaseModel):
    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()


class BinhostTarget(BaseModel):
    name = pw.CharField(primary_key=True, max_length=32)
    kind = pw.CharField(max_length=16)
    url = pw.CharField(max_length=512, default="")
    destination = pw.CharField(max_length=400, default="")
    networks = pw.TextField(default="[]")  # a JSON list of network names
    priority = pw.IntegerField(default=0)
    enabled = pw.BooleanField(default=True)
    updated_at = pw.DoubleField(default=0)
    updated_by = pw.CharField(max_length=200, default="")

    class Meta:
        table_name = "binhost_targets"


class TestBuild(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    package = pw.CharField(max_length=255)
    cpv = pw.CharField(max_length=255)
    user = pw.CharField(max_length=64, index=True)
    token_id = pw.CharField(max_length=32, index=True)
    state = pw.CharField(max_length=16, index=True)
    queued_at = pw.DoubleField(index=True)
    use = pw.TextField(default="[]")  # a JSON list of USE flags
    started_at = pw.DoubleField(null=True)
    finished_at = pw.DoubleField(null=True, index=True)
    drone = pw.CharField(max_length=64, default="")
    build_id = pw.CharField(max_length=32, default="")
    exit_code = pw.IntegerField(null=True)
    reason = pw.TextField(default="")
    log_tail = pw.TextField(default="")
    packages = pw.TextField(default="[]")  # a JSON list of paths under the test PKGDIR
    notify_email = pw.CharField(max_length=254, default="")
    webhook_url = pw.CharField(max_length=2048, default="")
    notified = pw.TextField(default="")

    class Meta:
        table_name = "test_builds"


class TestBuildToken(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    user = pw.CharField(max_length=64, index=True)
    secret_hash = pw.CharField(max_length=64)
    rate = pw.CharField(max_length=16)
    burst = pw.IntegerField()
    max_queued = pw.IntegerField()
    created_at = pw.DoubleField()
    created_by = pw.CharField(max_length=200, default="")
    revoked_at = pw.DoubleField(null=True)
    last_used_at = pw.DoubleField(null=True)

    class Meta:
        table_name = "test_build_tokens"


class PayloadVersion(BaseModel):
    kind = pw.CharField(max_length=32)
    version = pw.BigIntegerField()
    sha256 = pw.CharField(max_length=64)
    size = pw.BigIntegerField()
    uploaded_by = pw.CharField(max_length=200, default="")
    uploaded_at = pw.DoubleField()
    notes = pw.TextField(default="")
    state = pw.CharField(max_length=16, default="uploaded")

    class Meta:
        table_name = "payload_versions"
        primary_key = pw.CompositeKey("kind", "version")


class DronePayload(BaseModel):
    drone_id = pw.CharField(max_length=64)
    kind = pw.CharField(max_length=32)
    expected_version = pw.BigIntegerField(default=0)
    running_version = pw.BigIntegerField(default=0)
    sha256 = pw.CharField(max_length=64, default="")
    state = pw.CharField(max_length=16, default="")
    reason = pw.TextField(default="")
    deploy_id = pw.CharField(max_length=32, default="")
    updated_at = pw.DoubleField(default=0)

    class Meta:
        table_name = "drone_payloads"
        primary_key = pw.CompositeKey("drone_id", "kind")


MODELS: list[type[BaseModel]] = [
    SchemaVersion,
    Node,
    Event,
    JoinToken,
    Certificate,
    DroneName,
    BuildSession,
    Job,
    Build,
    Artifact,
    PackageStat,
    DroneAccess,
    Incident,
    Setting,
    BinhostTarget,
    TestBuild,
    TestBuildToken,
    PayloadVersion,
    DronePayload,
]
