"""Declarative stage configuration: dataclasses whose fields carry ``help``.

Every stage describes its settings once, as a dataclass built with
:func:`option` (the Tevatron way); this module derives everything else from it:

* the command line: one ``--flag-name`` per field (help, type, choices and the
  default shown), plus ``--config FILE`` (JSON, or YAML when PyYAML is
  installed) and repeatable ``--set key=value``;
* precedence: field default < ``--config`` file < ``--set`` < explicit flags;
* validation: unknown keys and values of the wrong type are refused with the
  source and the key (:class:`ConfigError`, a bad-input error), then the
  dataclass's own ``validate()`` runs when it has one;
* the defaults as a plain dict (:func:`defaults`), which the DAGs use for
  their Params, so no default is written twice.

Standard library only: DAG files import it at parse time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_HELP, _CHOICES, _COMMAS = "help", "choices", "split_commas"


class ConfigError(ValueError):
    """A configuration value or file is wrong; the message names the source and the key."""


def option(default: Any = dataclasses.MISSING, *, help: str, choices: typing.Sequence | None = None,
           default_factory: Callable[[], Any] | Any = dataclasses.MISSING, split_commas: bool = True) -> Any:
    """A dataclass field with its command-line help (and optional choices).

    List settings accept ``--ks 10 50``, ``--ks 10 --ks 50`` and, unless
    ``split_commas=False`` (values that contain commas themselves, such as
    ``spark.jars=a.jar,b.jar``), ``--ks 10,50`` / ``--set ks=10,50``."""
    metadata = {_HELP: help, _CHOICES: tuple(choices) if choices else None, _COMMAS: split_commas}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default of a config dataclass (required fields are left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def help_of(cls: type, name: str) -> str:
    return _field(cls, name).metadata.get(_HELP, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as JSON-ready values (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


# --------------------------------------------------------------------------- parsing


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field; flags default to "not given" so precedence can be applied."""
    hints = typing.get_type_hints(cls)
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="JSON (or YAML) file of settings; flags and --set win over it")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="set_",
                        help="override one setting (repeatable); the value is parsed as JSON when it parses")
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind, _ = _kind(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        shown = "required" if _required(f) else f"default: {_show(defaults(cls).get(f.name))}"
        help_text = f"{f.metadata.get(_HELP, '')} ({shown})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if f.metadata.get(_CHOICES):
            kwargs["choices"] = f.metadata[_CHOICES]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif kind is list:
            # repeated flags add up: --conf a=1 --conf b=2
            parser.add_argument(flag, nargs="*", action="extend", metavar=f.name.upper(), **kwargs)
        else:
            if not kwargs.get("choices"):
                kwargs["metavar"] = f.name.upper()
            parser.add_argument(flag, type=_scalar_parser(hints[f.name], f.name), **kwargs)


def from_namespace(cls: type[T], ns: argparse.Namespace) -> T:
    """Merge defaults, the --config file, --set and the given flags; build and validate."""
    data: dict[str, Any] = {}
    if getattr(ns, "config", None):
        data.update(read_file(ns.config))
    for item in getattr(ns, "set_", None) or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        data[key.strip().replace("-", "_")] = parse_value(raw)
    names = {f.name for f in dataclasses.fields(cls)}
    data.update({k: v for k, v in vars(ns).items() if k in names})
    return build(cls, data, source=getattr(ns, "config", None) or "command line")


def build(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """A validated config from a mapping: unknown keys and wrong types are refused."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {unknown}; known: {sorted(fields)}")
    missing = sorted(n for n, f in fields.items() if _required(f) and n not in data)
    if missing:
        raise ConfigError(f"{source}: required setting(s) missing: {missing}")
    values = {}
    for name, value in data.items():
        if fields[name].metadata.get(_COMMAS, True) and _kind(hints[name])[0] is list:
            value = _split_commas(value)
        values[name] = coerce(value, hints[name], f"{source}: {name}")
        allowed = fields[name].metadata.get(_CHOICES)
        if allowed and values[name] not in allowed:
            raise ConfigError(f"{source}: {name}={values[name]!r} is not one of {list(allowed)}")
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    return cfg


def parse(cls: type[T], argv: list[str] | None = None, prog: str | None = None,
          description: str | None = None) -> T:
    """Parse a command line for one config dataclass (``--help`` is generated from it)."""
    parser = argparse.ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").strip())
    add_arguments(parser, cls)
    return from_namespace(cls, parser.parse_args(argv))


def read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ConfigError(f"{path}: YAML config needs PyYAML (pip install pyyaml), or use JSON") from exc
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds one object of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def parse_value(raw: str) -> Any:
    """JSON when it parses (numbers, true/false/null, lists), else the plain string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


# --------------------------------------------------------------------------- types


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (str, int, float, bool, Path, Optional / unions, list[...])."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        if value is None and type(None) in members:
            return None
        exact = [m for m in members if m is not type(None) and _is_instance(value, m)]
        for member in exact + [m for m in members if m is not type(None) and m not in exact]:
            try:
                return coerce(value, member, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not {_type_name(tp)}")
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        inner = (typing.get_args(tp) or (Any,))[0]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {value!r} is not a list")
        items = [coerce(v, inner, where) for v in value]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: {value!r} is not true or false")
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and _is_int(value))):
            raise ConfigError(f"{where}: {value!r} is not an integer")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {value!r} is not a number") from None
        if not math.isfinite(number):   # a NaN threshold makes every comparison false
            raise ConfigError(f"{where}: {value!r} is not a finite number")
        return number
    if tp is str:
        if isinstance(value, (dict, list, bool)) or value is None:
            raise ConfigError(f"{where}: {value!r} is not a string")
        return str(value)
    if tp is Path:
        if not isinstance(value, (str, Path)) or value == "":
            raise ConfigError(f"{where}: {value!r} is not a path")
        return Path(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {value!r} is not an object")
        return value
    raise ConfigError(f"{where}: unsupported setting type {_type_name(tp)}")


def _split_commas(value: Any) -> Any:
    """'10,50' and ['10,50', '100'] -> ['10', '50', '100'] (other values unchanged)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        return [part for v in value for part in (v.split(",") if isinstance(v, str) else [v]) if part != ""]
    return value


def _is_instance(value: Any, tp: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    try:
        return isinstance(value, typing.get_origin(tp) or tp)
    except TypeError:
        return False


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def _kind(tp: Any) -> tuple[Any, Any]:
    """(bool | list | None, list item type) for choosing the argparse action."""
    if tp is bool:
        return bool, None
    origin = typing.get_origin(tp)
    if origin in (list, tuple) or tp in (list, tuple):
        return list, (typing.get_args(tp) or (str,))[0]
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        if len(members) == 1:
            return _kind(members[0])
    return None, None


def _scalar_parser(tp: Any, name: str) -> Callable[[str], Any]:
    def parse_one(text: str) -> Any:
        try:
            if tp is str or tp is Path:
                return coerce(text, tp, name)
            return coerce(parse_value(text) if text.lower() not in ("none", "null") else None, tp, name)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse_one.__name__ = _type_name(tp)
    return parse_one


def _field(cls: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (bool, type(None), list, tuple)) else str(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
