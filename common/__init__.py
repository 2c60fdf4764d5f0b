"""Build Swarm: distributed build orchestrator for Gentoo.

This top-level package holds what the agent and the controller share; the
two sides live in ``swarm.agent`` and ``swarm.controller``, the wire
contract in ``swarm.v1``.
"""

__version__ = "0.1.0"
