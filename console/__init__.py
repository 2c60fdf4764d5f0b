"""The web console's files (``swarm.console``): pages, modules, styles, and
the npm libraries that ``make console`` copies into vendor/. Not Python
code: the controller's admin tier serves this folder (web/console.py)."""

from pathlib import Path

DIR = Path(__file__).resolve().parent
