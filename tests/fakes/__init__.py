"""Stand-ins for what a fast test cannot or need not run for real, each
typed against the real interface it replaces and checked against it
(tests/test_clock.py for the clock)."""
