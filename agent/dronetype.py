"""What this drone is: an LXC container, another container, a QEMU/KVM or
other virtual machine, or bare metal, told from what the kernel and the
firmware show, the way ``systemd-detect-virt`` and OpenRC's ``rc_sys`` do.

The answer has two parts: the *kind* that was found (``lxc``, ``docker``,
``podman``, ``systemd-nspawn``, ``kvm``, ``vmware``, ...) and the *drone
type* that goes to the controller, which is what the healer acts on: it
reboots ``lxc`` and ``qemu`` drones through their host and never the
others. So only an LXC container is ``lxc`` and only a QEMU/KVM guest is
``qemu``; any other container or hypervisor is ``unknown`` (the reason
says what it is, and the admin may set the type), and a verdict that
would let the healer act is never drawn from a guess:

- a container is looked for first, since inside one the DMI tables and
  the CPU flags are the host's: a Docker container on a QEMU VM is a
  Docker container, not a VM that may be rebooted;
- a VM or bare metal is only claimed when pid 1's environment could be
  read and names no container (the one hint every LXC, podman and nspawn
  container gives), and bare metal only when the DMI tables and the x86
  CPU flags both say so.

Every path is read under ``root`` so tests feed fixture trees. Nothing
here raises: an unreadable file is a missing hint, and detection as a
whole falls back to ``unknown`` with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

AUTO = "auto"
LXC = "lxc"
QEMU = "qemu"
BARE_METAL = "bare-metal"
UNKNOWN = "unknown"
TYPES = (LXC, QEMU, BARE_METAL, UNKNOWN)
# mountinfo of a busy host runs to a few hundred KiB; the hints are near the top.
READ_LIMIT = 512 * 1024
DMI_FIELDS = ("sys_vendor", "product_name", "board_vendor", "bios_vendor")
# DMI strings that name a hypervisor (systemd's table): a field that starts
# with the first names the kind. Only qemu and kvm become drone type qemu.
DMI_HYPERVISORS = (
    ("KVM", "kvm"),
    ("QEMU", "qemu"),
    ("OpenStack", "kvm"),
    ("KubeVirt", "kvm"),
    ("Amazon EC2", "amazon"),
    ("Google Compute Engine", "google"),
    ("VMware", "vmware"),
    ("VMW", "vmware"),
    ("innotek GmbH", "oracle"),
    ("VirtualBox", "oracle"),
    ("Xen", "xen"),
    ("Bochs", "bochs"),
    ("Parallels", "parallels"),
    ("BHYVE", "bhyve"),
    ("Hyper-V", "microsoft"),
    ("Apple Virtualization", "apple"),
)
QEMU_KINDS = frozenset({"qemu", "kvm"})


@dataclass(frozen=True, slots=True)
class Detection:
    drone_type: str  # lxc, qemu, bare-metal or unknown: what the agent reports
    kind: str  # what was found: lxc, docker, kvm, vmware, bare-metal, ...
    reason: str  # the evidence, one short line for the log and the console


def _read(path: Path) -> tuple[str | None, str]:
    """The file's text, or None and why not."""
    try:
        with path.open("rb") as f:
            return f.read(READ_LIMIT).decode("utf-8", "replace"), ""
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, exc.strerror or type(exc).__name__


def _clean(text: str, limit: int = 40) -> str:
    """A value from a file, safe to put in a log line."""
    text = "".join(c if c.isprintable() else "?" for c in text.strip())
    return text if len(text) <= limit else text[:limit] + "..."


def _container_type(kind: str) -> str:
    # libvirt's LXC driver is not rebooted the way LXC and Proxmox containers are.
    return LXC if kind == LXC else UNKNOWN


def _container(root: Path, environ: str | None) -> Detection | None:
    """A container, from the hints container managers leave (strongest first)."""

    def found(kind: str, evidence: str) -> Detection:
        kind = _clean(kind, 24)
        return Detection(_container_type(kind), kind, f"{kind} container: {evidence}")

    if environ is not None:
        for entry in environ.split("\0"):
            if entry.startswith("container=") and entry != "container=":
                return found(entry.partition("=")[2], f"{_clean(entry)} in /proc/1/environ")
    for name in ("run/systemd/container", "run/host/container-manager"):
        text, _ = _read(root / name)
        if text and text.strip():
            return found(text.strip(), f"/{name} says {_clean(text)}")
    if (root / ".dockerenv").exists():
        return found("docker", "/.dockerenv exists")
    if (root / "run/.containerenv").exists():
        return found("podman", "/run/.containerenv exists")
    if (root / "dev/.lxc-boot-id").exists():
        return found(LXC, "/dev/.lxc-boot-id exists")
    cgroup, _ = _read(root / "proc/1/cgroup")
    for line in (cgroup or "").splitlines():
        path = line.split(":", 2)[-1]
        for needle, kind in (
            ("/lxc/", LXC),
            ("/lxc.payload", LXC),
            ("/docker", "docker"),
            ("libpod", "podman"),
            ("kubepods", "kubernetes"),
        ):
            if needle in path:
                return found(kind, f"pid 1's cgroup is {_clean(path)}")
    mountinfo, _ = _read(root / "proc/self/mountinfo")
    for line in (mountinfo or "").splitlines():
        fields = line.split()
        if len(fields) < 5 or " - " not in line:
            continue
        mountpoint = fields[4]
        fstype, _, source_and_options = line.split(" - ", 1)[1].partition(" ")
        if fstype == "fuse.lxcfs" and mountpoint.startswith(("/proc/", "/sys/")):
            return found(LXC, f"lxcfs is mounted on {_clean(mountpoint)}")
        # Only the root and the files an engine binds in: a host that runs
        # containers has their overlays mounted under /var/lib too.
        if mountpoint not in ("/", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"):
            continue
        for needle, kind in (("/var/lib/docker/", "docker"), ("/containers/storage/", "podman")):
            if needle in fields[3] or needle in source_and_options:
                return found(kind, f"{_clean(mountpoint)} is mounted from {needle}")
    return None


def _dmi(root: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in DMI_FIELDS:
        text, _ = _read(root / "sys/class/dmi/id" / name)
        if text and text.strip():
            values[name] = text.strip()
    return values


def _hypervisor(dmi: dict[str, str]) -> tuple[str, str] | None:
    """The hypervisor the DMI tables name, and which field says so."""
    if dmi.get("sys_vendor", "").startswith("Microsoft Corporation") and dmi.get(
        "product_name", ""
    ).startswith("Virtual Machine"):
        return "microsoft", f"DMI product_name {_clean(dmi['product_name'])!r} by Microsoft"
    for name in DMI_FIELDS:
        for prefix, kind in DMI_HYPERVISORS:
            if dmi.get(name, "").startswith(prefix):
                return kind, f"DMI {name} {_clean(dmi[name])!r}"
    return None


def _cpu_flags(root: Path) -> set[str] | None:
    """The x86 CPU flags, or None where /proc/cpuinfo has none (unreadable, or not x86)."""
    text, _ = _read(root / "proc/cpuinfo")
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return None


def _machine(root: Path, environ_error: str) -> Detection:
    dmi = _dmi(root)
    flags = _cpu_flags(root)
    named = _hypervisor(dmi)
    cannot_rule_out = (
        f"/proc/1/environ is unreadable ({environ_error}), so a container cannot be ruled out"
        if environ_error
        else ""
    )
    if named is not None:
        kind, evidence = named
        if cannot_rule_out:
            return Detection(UNKNOWN, UNKNOWN, f"cannot tell: {evidence}, but {cannot_rule_out}")
        return Detection(QEMU if kind in QEMU_KINDS else UNKNOWN, kind, f"{kind} virtual machine: {evidence}")
    xen, _ = _read(root / "sys/hypervisor/type")
    if xen and xen.strip():
        what = f"/sys/hypervisor/type says {_clean(xen)}"
        if cannot_rule_out:
            return Detection(UNKNOWN, UNKNOWN, f"cannot tell: {what}, but {cannot_rule_out}")
        return Detection(UNKNOWN, _clean(xen, 24), f"{_clean(xen, 24)} virtual machine: {what}")
    if flags is not None and "hypervisor" in flags:
        what = "the CPU has the hypervisor flag"
        if cannot_rule_out:
            return Detection(UNKNOWN, UNKNOWN, f"cannot tell: {what}, but {cannot_rule_out}")
        return Detection(UNKNOWN, "vm", f"virtual machine of an unknown hypervisor: {what}, DMI names none")
    if cannot_rule_out:
        return Detection(UNKNOWN, UNKNOWN, f"cannot tell: {cannot_rule_out}")
    if not dmi:
        return Detection(
            UNKNOWN, UNKNOWN, "cannot tell: no container hints, but no DMI tables to rule out a VM"
        )
    if flags is None:
        return Detection(
            UNKNOWN,
            UNKNOWN,
            "cannot tell: no container hints, but no CPU flags in /proc/cpuinfo to rule out a VM",
        )
    machine = " ".join(_clean(dmi[k], 30) for k in ("sys_vendor", "product_name") if k in dmi)
    return Detection(
        BARE_METAL, BARE_METAL, f"bare metal: DMI {machine!r}, no hypervisor CPU flag, no container hints"
    )


def detect(root: Path = Path("/")) -> Detection:
    """What the machine under ``root`` is; never raises."""
    try:
        environ, environ_error = _read(root / "proc/1/environ")
        return _container(root, environ) or _machine(root, environ_error)
    except Exception as exc:  # a hint is not worth an agent that does not start
        log.warning("drone type detection failed", exc_info=True)
        return Detection(UNKNOWN, UNKNOWN, f"cannot tell: detection failed ({type(exc).__name__})")


def resolve(setting: str, root: Path = Path("/")) -> Detection:
    """The drone type from the agent's ``drone_type`` option: detected for
    ``auto``, else as configured (the admin knows better than any hint)."""
    if setting == AUTO:
        return detect(root)
    return Detection(setting, setting, "set in the agent's configuration (drone_type)")
