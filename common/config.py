"""Layered configuration shared by every swarm process.

A process has one frozen dataclass of options. Values come, later ones
winning, from the dataclass defaults, a TOML file, the environment
(``PREFIX_OPTION``) and the command line (``--option``). Every field
carries help text in its metadata, so ``--help`` documents every option
and the TOML keys are the field names.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration value is missing, unknown or malformed."""


def option(default: Any, help: str, *, metavar: str | None = None) -> Any:
    """A config field with its help text (shown by --help)."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar})


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # Once per class: evaluating every annotation again for each field made
    # building the controller's parser (some 90 options) cost 50 ms at each start.
    return typing.get_type_hints(cls)


def _field_type(cls: type, field: dataclasses.Field[Any]) -> type:
    tp = _type_hints(cls)[field.name]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return typing.cast(type, args[0])
    return typing.cast(type, tp)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per config field; unset flags stay out of the namespace."""
    for field in dataclasses.fields(cls):
        tp = _field_type(cls, field)
        help_text = field.metadata.get("help", "")
        default = field.default
        # An empty Path stands for "worked out at start", which the help says itself.
        unset = default is None or default == "" or (isinstance(default, PurePath) and str(default) == ".")
        shown = "" if unset else f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text + shown}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = field.metadata.get("metavar") or field.name.upper()
        parser.add_argument(_flag(field.name), **kwargs)


def _convert(cls: type, field: dataclasses.Field[Any], value: Any, source: str) -> Any:
    tp = _field_type(cls, field)
    where = f"{field.name} (from {source})"
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is Path:
            return Path(str(value)).expanduser()
        if tp is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
    except ValueError:
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    raise ConfigError(f"{where}: unsupported option type {tp!r}")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def resolve(
    cls: type[T],
    ns: argparse.Namespace,
    *,
    env_prefix: str,
    default_path: Path | None,
    explicit_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Build the config object: defaults < TOML < environment < flags."""
    env = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))}
    values: dict[str, Any] = {}

    path = explicit_path
    if path is None and env.get(f"{env_prefix}CONFIG"):
        path = Path(env[f"{env_prefix}CONFIG"])
    if path is None and default_path is not None and default_path.exists():
        path = default_path
    if path is not None:
        for key, raw in read_toml(path).items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"config file {path}: unknown option {key!r}")
            values[name] = _convert(cls, fields[name], raw, str(path))

    for name, field in fields.items():
        raw_env = env.get(env_prefix + name.upper())
        if raw_env is not None:
            values[name] = _convert(cls, field, raw_env, env_prefix + name.upper())

    for name, field in fields.items():
        if hasattr(ns, name):
            values[name] = _convert(cls, field, getattr(ns, name), _flag(name))

    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
