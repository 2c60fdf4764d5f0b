"""The web tier parses, calls one core function and renders a view: it
never reaches the store (the database runner or the store itself), and
every reply is a view, not a dict built by hand (issue 15)."""

from __future__ import annotations

import ast
from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "controller" / "web"
# Records are frozen data the core hands over; the store's interface and runner are not.
ALLOWED_STORE_MODULES = frozenset({"swarm.controller.store.records"})
FORBIDDEN_ATTRIBUTES = frozenset({"runner", "store"})


def _sources() -> list[tuple[str, ast.Module]]:
    files = sorted(WEB.rglob("*.py"))
    assert len(files) > 10, files
    return [(str(path.relative_to(WEB)), ast.parse(path.read_text(), str(path))) for path in files]


def test_web_tier_imports_nothing_of_the_store_but_its_records() -> None:
    found = []
    for name, tree in _sources():
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            for module in modules:
                inside = module == "swarm.controller.store" or module.startswith("swarm.controller.store.")
                if inside and not any(module.startswith(ok) for ok in ALLOWED_STORE_MODULES):
                    found.append(f"{name}:{node.lineno} imports {module}")
    assert not found, found


def test_web_tier_never_touches_the_runner_or_the_store() -> None:
    found = [
        f"{name}:{node.lineno} .{node.attr}"
        for name, tree in _sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES
    ]
    assert not found, found


# What hands a reply or a websocket message to a client: json_response,
# a stream's send, a terminal's send_control.
REPLY_CALLS = frozenset({"json_response", "send", "send_control"})


def test_no_reply_is_a_dict_built_by_hand() -> None:
    """Replies and websocket messages are views: a dict literal or dict(...) handed to
    one of REPLY_CALLS is a reply outside the views."""
    found = []
    for name, tree in _sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if called not in REPLY_CALLS:
                continue
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Dict | ast.DictComp) or (
                isinstance(first, ast.Call) and getattr(first.func, "id", None) == "dict"
            ):
                found.append(f"{name}:{node.lineno}")
    assert not found, found
