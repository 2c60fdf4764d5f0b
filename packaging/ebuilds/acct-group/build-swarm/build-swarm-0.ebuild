# Copyright 2026 Build Swarm authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit acct-group

# -1: the next free system id; this overlay has no id range of its own in
# Gentoo's uid-gid.txt.
ACCT_GROUP_ID=-1
