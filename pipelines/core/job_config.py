"""Fill a job's config dataclass from CLI flags and an optional YAML/JSON file.

Every job keeps its settings in one dataclass whose fields carry their help text
in ``metadata["help"]``; this module turns that dataclass into an ``argparse``
parser so that ``--help`` documents every flag and the flags can never drift
from the config. Precedence: dataclass default < ``--config`` file < CLI flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def flag(help: str, **extra: Any) -> dict[str, Any]:
    """Field metadata for a config flag: its ``--help`` text plus extras: argparse's
    ``choices`` and ``metavar``, ``one_of`` (see ``build_parser``) and ``aliases``, the
    flag's old names, still accepted with one deprecation line: ``"--output"`` takes
    the flag's value, ``"--use-gpu=cuda"`` is a switch that sets the value given."""
    return {"help": help, **extra}


def _setting(flag_name: str) -> str:
    return flag_name.lstrip("-").replace("-", "_")


def _given(argv: list[str]) -> list[str]:
    """The setting names of the long flags on a command line (``--num-workers=2`` ->
    ``num_workers``)."""
    return [_setting(a.split("=", 1)[0]) for a in argv if a.startswith("--")]


def aliases(cls: type) -> dict[str, tuple[str, str | None]]:
    """Each old setting name of ``cls``'s fields (``output``) -> the field's name, and the
    value an old switch sets (None for an old name that takes a value)."""
    found = {}
    for field in dataclasses.fields(cls):
        for old in field.metadata.get("aliases", ()):
            name, _, value = old.partition("=")
            found[_setting(name)] = (field.name, value or None)
    return found


def _renamed(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """A config file's settings with old names replaced by the new (a switch's
    ``true`` by the value it sets; ``false`` by nothing)."""
    old = aliases(cls)
    renamed = {}
    for key, value in values.items():
        if key not in old:
            renamed[key] = value
        elif old[key][1] is None:
            renamed[old[key][0]] = value
        elif not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        elif value:
            renamed[old[key][0]] = old[key][1]
    return renamed


def given_twice(cls: type, argv: list[str], file_keys: list[str]) -> list[str]:
    """The settings given under two names (an old and the new, or two old ones) on the
    command line, or in the config file: which one wins would be an accident."""
    old = aliases(cls)
    twice = []
    for names in (_given(argv), file_keys):
        fields: dict[str, set[str]] = {}
        for name in names:
            fields.setdefault(old.get(name, (name, None))[0], set()).add(name)
        twice += [f"{_flag(f)} ({' and '.join(sorted(map(_flag, n)))})"
                  for f, n in fields.items() if len(n) > 1]
    return twice


def deprecation_notes(cls: type, argv: list[str], file_keys: list[str], prog: str) -> list[str]:
    """One line per old flag name used on the command line or as a config file key."""
    old = aliases(cls)
    used = set(_given(argv))
    used |= {k for k in file_keys if k in old}
    notes = []
    for name in sorted(used & set(old)):
        field_name, value = old[name]
        new = _flag(field_name) + (f" {value}" if value else "")
        notes.append(f"{prog}: note: {_flag(name)} is deprecated; use {new}")
    return notes


def plain(text: str) -> str:
    """Docstring prose as a terminal shows it: reStructuredText roles and literals
    (``:class:`VideoSearch` ``, double backticks) reduced to their text."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def _base_type(annotation: Any) -> type:
    """The scalar type behind ``X | None`` / ``Optional[X]``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config field type {annotation!r}")
        return args[0]
    return annotation


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(cls: type, doc: str) -> argparse.ArgumentParser:
    """An ``argparse`` parser with one flag per field of the dataclass ``cls``.

    ``doc`` is the job script's docstring: its first line describes the job in
    ``--help``, the rest (usage examples) follows the flags as written, its markup
    removed (``plain``). Fields whose metadata share a ``one_of`` name are
    alternatives, exactly one of which is required: the usage line shows them as
    ``(--a A | --b B)``; the config's own checks enforce it.
    """
    first, _, rest = doc.strip().partition("\n")
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # --out must not reach --output-like names, old or new
        description=plain(first), epilog=plain(textwrap.dedent(rest).strip("\n").rstrip()) or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    required = parser.add_argument_group(
        "required", "on the command line or in the --config file")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON file of settings (keys are the flag names with '_' or '-'); "
        "flags given on the command line override it",
    )
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = _base_type(hints[field.name])
        default = None if field.default is dataclasses.MISSING else field.default
        kwargs: dict[str, Any] = {
            "help": field.metadata.get("help", ""),
            "dest": field.name,
            # An absent flag leaves no key, so it never overrides a value from --config.
            "default": argparse.SUPPRESS,
        }
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if "choices" not in field.metadata:  # argparse shows the choices instead
                kwargs["metavar"] = field.metadata.get("metavar", field.name.upper())
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        group = parser
        if _is_required(field):
            group = required  # listed apart, so nobody takes them for optional
        elif default is not None:
            kwargs["help"] += f" (default: {default})"
        group.add_argument(_flag(field.name), **kwargs)
        for old in field.metadata.get("aliases", ()):  # accepted, not listed in --help
            name, _, value = old.partition("=")
            hidden = ({"action": "store_const", "const": value} if value  # an old switch
                      else {k: v for k, v in kwargs.items() if k != "help"})
            parser.add_argument(name, **{**hidden, "dest": field.name,
                                         "default": argparse.SUPPRESS,
                                         "help": argparse.SUPPRESS})
    needed = [f"{a.option_strings[0]} {a.metavar}" for a in required._group_actions]
    alternatives: dict[str, list[str]] = {}
    for field in dataclasses.fields(cls):
        if "one_of" in field.metadata:
            alternatives.setdefault(field.metadata["one_of"], []).append(
                f"{_flag(field.name)} {field.metadata.get('metavar', field.name.upper())}")
    needed += [f"({' | '.join(names)})" for names in alternatives.values()]
    parser.usage = f"%(prog)s {' '.join(needed)} [options]".replace("  ", " ")
    return parser


def _is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML or JSON settings file into a dict keyed by field name.

    Raises ValueError, naming the file, when it cannot be read or parsed.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ValueError(f"config file {path}: {reason}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping of settings, got {type(data)}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _type_errors(cls: type, values: dict[str, Any]) -> list[str]:
    """Settings from a file whose value is not of the field's type or not one of its
    choices (flags are already checked by argparse): ``"epochs: expected int, got str
    'ten'"``."""
    hints = typing.get_type_hints(cls)
    errors = []
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value, kind = values[field.name], _base_type(hints[field.name])
        optional = typing.get_origin(hints[field.name]) in (typing.Union, types.UnionType)
        if value is None and optional:
            continue
        fits = (isinstance(value, kind) and not (kind is int and isinstance(value, bool))
                or kind is float and isinstance(value, int) and not isinstance(value, bool))
        choices = field.metadata.get("choices")
        if not fits:
            errors.append(f"{field.name}: expected {kind.__name__}, got "
                          f"{type(value).__name__} {value!r}")
        elif choices and value not in choices:
            errors.append(f"{field.name}: {value!r} is not one of {', '.join(choices)}")
    return errors


def parse_config(cls: type[T], doc: str, argv: list[str] | None = None) -> T:
    """Parse ``argv`` into an instance of ``cls`` (a dataclass), exiting with one line
    on bad flags or a bad ``--config`` file; ``doc`` is the job's docstring."""
    parser = build_parser(cls, doc)
    argv = sys.argv[1:] if argv is None else argv
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.pop("config", None)
    file_keys: list[str] = []  # as written, old names included
    if config_file:
        try:
            from_file = load_config_file(config_file)
        except ValueError as exc:
            parser.error(str(exc))
        file_keys = list(from_file)
        try:
            from_file = _renamed(cls, from_file)
        except ValueError as exc:
            parser.error(f"config file {config_file}: {exc}")
        known = {f.name for f in dataclasses.fields(cls)}
        wrong = _type_errors(cls, {k: v for k, v in from_file.items() if k in known})
        if wrong:
            parser.error(f"config file {config_file}: {'; '.join(wrong)}")
        values.update(from_file)
    values.update(args)
    fields = dataclasses.fields(cls)
    unknown = sorted(set(values) - {f.name for f in fields})
    if unknown:
        parser.error(f"unknown setting(s) in {config_file}: {', '.join(unknown)}")
    required = [_flag(f.name) for f in fields if _is_required(f) and f.name not in values]
    if required:
        parser.error(f"the following arguments are required: {', '.join(required)}")
    twice = given_twice(cls, argv, file_keys)
    if twice:
        parser.error(f"given under two names: {'; '.join(twice)}")
    for note in deprecation_notes(cls, argv, file_keys, parser.prog):
        print(note, file=sys.stderr)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
