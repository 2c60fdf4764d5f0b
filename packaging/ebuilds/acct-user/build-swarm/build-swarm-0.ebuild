# Copyright 2026 Build Swarm authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit acct-user

DESCRIPTION="User for the Build Swarm controller"
# -1: the next free system id; this overlay has no id range of its own in
# Gentoo's uid-gid.txt.
ACCT_USER_ID=-1
# The controller's data dir. Its ~/.ssh holds the known_hosts and key of the
# out-of-band (healing) SSH, which runs the system ssh as this user.
ACCT_USER_HOME=/var/lib/build-swarm
ACCT_USER_HOME_PERMS=0750
ACCT_USER_GROUPS=( build-swarm )

acct-user_add_deps
