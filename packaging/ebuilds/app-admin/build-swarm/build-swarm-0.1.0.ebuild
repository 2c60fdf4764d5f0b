# Copyright 2026 Build Swarm authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DISTUTILS_USE_PEP517=setuptools
PYTHON_COMPAT=( python3_{11..13} )

inherit distutils-r1

DESCRIPTION="Distributed build orchestrator for Gentoo: controller, drone agent, admin CLI"
HOMEPAGE="https://example.invalid/build-swarm"
# The release tarball carries console/vendor/ (xterm.js and its fit addon,
# copied from npm by `make console` when the release is cut): an ebuild
# cannot fetch from npm, and the console loads nothing from a CDN.
SRC_URI="https://example.invalid/build-swarm/${P}.tar.gz"

LICENSE="GPL-2"
SLOT="0"
KEYWORDS="~amd64 ~arm64"
IUSE="+agent +cli controller postgres"
REQUIRED_USE="|| ( agent controller ) postgres? ( controller )"

# The agent needs only the base set; the controller adds the web tier and
# storage. Portage itself is the system's.
RDEPEND="
	dev-python/grpcio[${PYTHON_USEDEP}]
	dev-python/protobuf[${PYTHON_USEDEP}]
	dev-python/psutil[${PYTHON_USEDEP}]
	dev-python/cryptography[${PYTHON_USEDEP}]
	agent? ( sys-apps/portage )
	cli? ( dev-python/aiohttp[${PYTHON_USEDEP}] )
	controller? (
		acct-user/build-swarm
		dev-python/aiohttp[${PYTHON_USEDEP}]
		dev-python/peewee[${PYTHON_USEDEP}]
		sys-apps/portage
		postgres? ( dev-python/psycopg:2[${PYTHON_USEDEP}] )
	)
"

python_install_all() {
	distutils-r1_python_install_all
	if use agent; then
		newinitd "${FILESDIR}"/swarm-agent.initd swarm-agent
		newconfd "${FILESDIR}"/swarm-agent.confd swarm-agent
		keepdir /var/lib/build-swarm/agent
	fi
	if use controller; then
		newinitd "${FILESDIR}"/swarm-controller.initd swarm-controller
		newconfd "${FILESDIR}"/swarm-controller.confd swarm-controller
		keepdir /var/lib/build-swarm
		fowners build-swarm:build-swarm /var/lib/build-swarm
		fperms 0750 /var/lib/build-swarm
	fi
	insinto /etc/build-swarm
	newins "${FILESDIR}"/agent.toml.example agent.toml.example
}

pkg_postinst() {
	if use agent && [[ ! -e ${EROOT}/var/lib/build-swarm/agent/drone.crt ]]; then
		elog "Enroll this drone once before starting the agent:"
		elog "  swarm-agent enroll --controller HOST:8094 --token TOKEN --ca-pin sha256:..."
		elog "(swarm-cli token create prints the exact command.) Then:"
		elog "  rc-update add swarm-agent default && rc-service swarm-agent start"
	fi
}
