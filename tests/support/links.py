"""Moved to tests/fakes/links.py (fakes live in tests/fakes/, typed against
the real interface); this name stays for the modules that import it from here."""

from fakes.links import FakeLink, connect

__all__ = ["FakeLink", "connect"]
