"""The agent tells what its drone is (agent/dronetype.py), reports it in
Hello with the evidence, and an admin's setting still wins on the controller.

The fixture trees in tests/fixtures/dronetype/ hold the files the detector
reads, as they look on each kind of machine (trimmed to what matters).
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from swarm.agent import dronetype
from swarm.agent.dronetype import Detection, detect

from support.procs import Agent, Controller, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "dronetype"


@pytest.mark.parametrize(
    ("tree", "drone_type", "kind", "evidence"),
    [
        ("lxc", "lxc", "lxc", "container=lxc in /proc/1/environ"),
        ("lxc-lxcfs", "lxc", "lxc", "lxcfs is mounted on /proc/cpuinfo"),
        ("docker-on-qemu", "unknown", "docker", "/.dockerenv exists"),
        ("podman", "unknown", "podman", "container=podman in /proc/1/environ"),
        ("nspawn", "unknown", "systemd-nspawn", "container=systemd-nspawn"),
        ("kubernetes", "unknown", "kubernetes", "pid 1's cgroup is /kubepods/"),
        ("qemu", "qemu", "qemu", "DMI sys_vendor 'QEMU'"),
        ("kvm", "qemu", "kvm", "DMI product_name 'KVM'"),
        ("vmware", "unknown", "vmware", "DMI sys_vendor 'VMware, Inc.'"),
        ("hyper-v", "unknown", "microsoft", "'Virtual Machine' by Microsoft"),
        ("bare-metal", "bare-metal", "bare-metal", "DMI 'Dell Inc. PowerEdge R630', no hypervisor CPU flag"),
        ("arm-board", "unknown", "unknown", "no DMI tables to rule out a VM"),
    ],
)
def test_each_kind_of_machine_is_told_with_its_evidence(
    tree: str, drone_type: str, kind: str, evidence: str
) -> None:
    found = detect(FIXTURES / tree)
    assert (found.drone_type, found.kind) == (drone_type, kind), found
    assert evidence in found.reason, found.reason


@pytest.mark.parametrize(
    ("files", "drone_type", "kind"),
    [
        ({"run/systemd/container": "lxc\n"}, "lxc", "lxc"),
        ({"run/systemd/container": "lxc-libvirt\n"}, "unknown", "lxc-libvirt"),
        ({"run/host/container-manager": "podman\n"}, "unknown", "podman"),
        ({"dev/.lxc-boot-id": "5b8c1a2e-0f3d-4c6b-9e7a-1d2c3b4a5e6f\n"}, "lxc", "lxc"),
        ({"proc/1/cgroup": "12:memory:/lxc/101\n1:name=systemd:/lxc/101/init.scope\n"}, "lxc", "lxc"),
        ({"proc/1/cgroup": "0::/lxc.payload.builder/init.scope\n"}, "lxc", "lxc"),
        ({"proc/1/cgroup": "13:pids:/docker/3b8c0d9f2e31\n"}, "unknown", "docker"),
        ({"proc/1/cgroup": "0::/machine.slice/libpod-9a8b7c6d.scope\n"}, "unknown", "podman"),
    ],
)
def test_a_single_container_hint_is_enough(
    tmp_path: Path, files: dict[str, str], drone_type: str, kind: str
) -> None:
    """Every hint on its own, in a tree that would otherwise be bare metal:
    a container shows its host's DMI tables and CPU flags."""
    shutil.copytree(FIXTURES / "bare-metal", tmp_path, dirs_exist_ok=True)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = detect(tmp_path)
    assert (found.drone_type, found.kind) == (drone_type, kind), found


@pytest.mark.parametrize("tree", ["qemu", "bare-metal", "vmware"])
def test_without_pid_1s_environment_no_vm_or_bare_metal_is_claimed(tmp_path: Path, tree: str) -> None:
    """An agent that cannot read /proc/1/environ cannot rule out a container
    (LXC, podman and nspawn say so only there), so it does not claim a type
    the healer would act on from the host's DMI tables."""
    shutil.copytree(FIXTURES / tree, tmp_path, dirs_exist_ok=True)
    environ = tmp_path / "proc/1/environ"
    environ.unlink()
    environ.mkdir()  # unreadable even for root, who ignores file modes
    found = detect(tmp_path)
    assert found.drone_type == "unknown", found
    assert (
        "/proc/1/environ is unreadable (Is a directory), so a container cannot be ruled out" in found.reason
    )


@pytest.mark.parametrize("make", ["nothing", "a file", "binary junk"])
def test_unreadable_or_junk_trees_are_unknown_and_never_raise(tmp_path: Path, make: str) -> None:
    root = tmp_path / "root"
    if make == "a file":
        root.write_text("not a directory")
    elif make == "binary junk":
        shutil.copytree(FIXTURES / "bare-metal", root)
        for name in ("proc/1/environ", "proc/1/cgroup", "proc/self/mountinfo", "proc/cpuinfo"):
            (root / name).write_bytes(b"\xff\xfe\x00\x1b[31m" * 100)
        for name in ("sys_vendor", "product_name"):
            (root / "sys/class/dmi/id" / name).write_bytes(b"\xff\x00\x1b[2J" * 50)
    found = detect(root)
    assert found.drone_type == "unknown" and found.reason.startswith("cannot tell: "), found
    assert found.reason.isprintable()


def test_junk_in_a_dmi_string_is_named_but_not_echoed(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "qemu", tmp_path, dirs_exist_ok=True)
    (tmp_path / "sys/class/dmi/id/sys_vendor").write_bytes(b"QEMU\x1b[2J\xff" + b"x" * 500)
    found = detect(tmp_path)
    assert (found.drone_type, found.kind) == ("qemu", "qemu")
    assert found.reason.isprintable() and len(found.reason) < 120, found.reason


def test_a_failing_detector_leaves_the_drone_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(root: Path, environ: str | None) -> Detection | None:
        raise ValueError("a bug")

    monkeypatch.setattr(dronetype, "_container", broken)
    assert detect(FIXTURES / "lxc") == Detection(
        "unknown", "unknown", "cannot tell: detection failed (ValueError)"
    )


def test_the_agents_setting_wins_over_detection() -> None:
    assert dronetype.resolve("auto", FIXTURES / "lxc") == detect(FIXTURES / "lxc")
    said = dronetype.resolve("bare-metal", FIXTURES / "lxc")
    assert (said.drone_type, said.reason) == ("bare-metal", "set in the agent's configuration (drone_type)")


# -- real processes: what the controller learns, and who wins ----------------------------


def put_type(controller: Controller, name: str, drone_type: str) -> None:
    status, body = controller.admin(
        "PUT", f"/admin/api/drones/{name}", json.dumps({"type": drone_type}).encode()
    )
    assert status == 200, body


def test_the_controller_learns_the_detected_type_and_the_admins_setting_wins(
    controller: Controller, agents: Callable[..., Agent]
) -> None:
    auto = agents("drone-auto", drone_type=None)
    agents("drone-said", drone_type="lxc")
    here = detect()
    for name in ("drone-auto", "drone-said"):
        wait_for(functools.partial(controller.online, name), what=f"{name} online")

    node = controller.node("drone-auto")
    assert node is not None
    assert (node["drone_type"], node["drone_type_reason"]) == (here.drone_type, here.reason)
    assert f"drone type {here.drone_type}: {here.reason}" in auto.log()
    said = controller.node("drone-said")
    assert said is not None
    assert (said["drone_type"], said["drone_type_reason"]) == (
        "lxc",
        "set in the agent's configuration (drone_type)",
    )

    # The admin says the lxc drone is bare metal: the healer will not reboot it.
    put_type(controller, "drone-said", "bare-metal")
    status, health = controller.admin("GET", "/admin/api/drones/drone-said/health")
    assert status == 200 and health["type"] == "bare-metal"
    status, body = controller.admin("POST", "/admin/api/drones/drone-said/reboot")
    assert status == 409 and "is a bare-metal drone" in body["error"]["message"]
    assert controller.known_node("drone-said")["drone_type"] == "lxc"

    # And the other way: whatever was detected, an admin's lxc makes the
    # reboot step apply (refused here only for want of a host to run it on).
    put_type(controller, "drone-auto", "lxc")
    status, health = controller.admin("GET", "/admin/api/drones/drone-auto/health")
    assert status == 200 and health["type"] == "lxc"
    status, body = controller.admin("POST", "/admin/api/drones/drone-auto/reboot")
    assert status == 409 and "has no hypervisor host or reboot command" in body["error"]["message"]
