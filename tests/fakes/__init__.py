"""Stand-ins for what a fast test cannot or need not run for real, each
typed against the real interface it replaces and checked against it
(tests/test_clock.py for the clock; make typecheck runs mypy --strict on
this package, so a fake that no longer has its interface fails there)."""
