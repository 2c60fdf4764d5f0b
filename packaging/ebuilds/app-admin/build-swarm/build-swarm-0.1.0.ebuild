# Copyright 2026 Build Swarm authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DISTUTILS_USE_PEP517=setuptools
PYTHON_COMPAT=( python3_{11..13} )

inherit distutils-r1

DESCRIPTION="Distributed build orchestrator for Gentoo: controller, drone agent, admin CLI"
HOMEPAGE="https://example.invalid/build-swarm"
# The release tarball (`make dist`) carries console/vendor/ (xterm.js and
# its fit addon, copied from npm by `make console` when the release is cut):
# an ebuild cannot fetch from npm, and the console loads nothing from a CDN.
SRC_URI="https://example.invalid/build-swarm/${P}.tar.gz"

LICENSE="GPL-2"
SLOT="0"
KEYWORDS="~amd64 ~arm64"
# client: a machine that only follows releases (swarm-upgrade), neither
# drone nor controller.
IUSE="+agent +cli client controller postgres"
REQUIRED_USE="|| ( agent client controller ) postgres? ( controller )"
# The project's suite needs a real sshd, PostgreSQL and Chromium.
RESTRICT="test"

# pyproject.toml's groups, kept in step by tests/test_overlay.py: the base
# set is all a drone needs; the controller adds its web tier and storage,
# and drives Portage's Python API to resolve dependency graphs; the agent
# only runs emerge. Every install has swarm-upgrade, which has Portage's
# Python API verify the gpkgs it fetched before any is merged and GnuPG
# check a release's manifest; the controller signs releases with GnuPG,
# reaches drones and binhost mirrors with OpenSSH and pushes releases to
# the mirrors with rsync. An agent installs the agent payloads it is sent
# (a wheel of this project, or its release tarball, an sdist) into a venv of
# its own with pip, without the network: an sdist is built there by
# setuptools, the one installed here (no isolated build environment).
RDEPEND="
	app-crypt/gnupg
	sys-apps/portage[${PYTHON_USEDEP}]
	>=dev-python/cryptography-42[${PYTHON_USEDEP}]
	>=dev-python/grpcio-1.85.1[${PYTHON_USEDEP}]
	>=dev-python/protobuf-7.35.1[${PYTHON_USEDEP}]
	<dev-python/protobuf-8[${PYTHON_USEDEP}]
	>=dev-python/psutil-5.9[${PYTHON_USEDEP}]
	agent? (
		dev-python/pip[${PYTHON_USEDEP}]
		>=dev-python/setuptools-77[${PYTHON_USEDEP}]
	)
	cli? ( >=dev-python/aiohttp-3.9[${PYTHON_USEDEP}] )
	controller? (
		acct-group/build-swarm
		acct-user/build-swarm
		net-misc/rsync
		virtual/openssh
		>=dev-python/aiohttp-3.14[${PYTHON_USEDEP}]
		<dev-python/aiohttp-3.15
		>=dev-python/peewee-4.0[${PYTHON_USEDEP}]
		>=dev-python/prometheus-client-0.26[${PYTHON_USEDEP}]
		<dev-python/prometheus-client-0.27
		>=dev-python/uvloop-0.21[${PYTHON_USEDEP}]
		postgres? ( >=dev-python/psycopg-2.9:2[${PYTHON_USEDEP}] )
	)
"

python_install_all() {
	distutils-r1_python_install_all

	if use agent; then
		newinitd "${FILESDIR}"/swarm-agent.initd swarm-agent
		newconfd "${FILESDIR}"/swarm-agent.confd swarm-agent
		# Every key commented out: the built-in defaults apply until the
		# admin edits it. Under /etc, so Portage protects the edits.
		insinto /etc/build-swarm
		doins "${FILESDIR}"/agent.toml
		# The drone's key and certificates.
		keepdir /var/lib/build-swarm/agent
		fperms 0700 /var/lib/build-swarm/agent
	fi
	if use controller; then
		newinitd "${FILESDIR}"/swarm-controller.initd swarm-controller
		newconfd "${FILESDIR}"/swarm-controller.confd swarm-controller
		keepdir /var/lib/build-swarm
		fowners build-swarm:build-swarm /var/lib/build-swarm
		fperms 0750 /var/lib/build-swarm
	fi
}

pkg_postinst() {
	if use controller; then
		elog "The controller: rc-update add swarm-controller default && rc-service swarm-controller start"
		elog "It runs as build-swarm with its data in ${EROOT}/var/lib/build-swarm (conf.d: swarm-controller;"
		elog "options: swarm-controller --help, or /etc/build-swarm/controller.toml)."
		elog "Its first start writes the admin key to ${EROOT}/var/lib/build-swarm/admin.key (mode 0600)."
		elog "Ports: 8094 gRPC for agents (mutual TLS), 8095 enrollment (TLS), 8100 public HTTP,"
		elog "8093 admin HTTP on 127.0.0.1 only. Open 8094, 8095 and 8100 to the drones."
		elog "A join token for each drone (it prints the drone's enroll command):"
		elog "  swarm-cli --key-file /var/lib/build-swarm/admin.key token create --ttl 1h --name DRONE"
	fi
	if use client; then
		elog "This machine follows the swarm's releases with swarm-upgrade:"
		elog "  swarm-upgrade trust http://CONTROLLER:8100 --network NAME   (once: the release key)"
		elog "  swarm-upgrade status; swarm-upgrade apply"
	fi
	if use agent && [[ ! -e ${EROOT}/var/lib/build-swarm/agent/drone.crt ]]; then
		elog "This drone is not enrolled yet; the swarm-agent service refuses to start until it is:"
		elog "  1. set controller = \"HOST:8094\" in /etc/build-swarm/agent.toml (and name; drone_type is detected);"
		elog "  2. swarm-agent enroll --token TOKEN --ca-pin sha256:...  (from swarm-cli token create);"
		elog "  3. rc-update add swarm-agent default && rc-service swarm-agent start"
	fi
}
