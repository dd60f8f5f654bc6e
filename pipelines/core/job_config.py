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
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def flag(help: str, **extra: Any) -> dict[str, Any]:
    """Field metadata for a config flag: its ``--help`` text plus argparse extras (choices)."""
    return {"help": help, **extra}


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
    ``--help``, the rest (usage examples) follows the flags unchanged.
    """
    first, _, rest = doc.strip().partition("\n")
    parser = argparse.ArgumentParser(
        description=first, epilog=textwrap.dedent(rest).strip() or None,
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
    needed = " ".join(f"{a.option_strings[0]} {a.metavar}" for a in required._group_actions)
    parser.usage = f"%(prog)s {needed} [options]".replace("  ", " ")
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
    """Settings from a file whose value is not of the field's type (flags are already
    converted by argparse): ``"epochs: expected int, got str 'ten'"``."""
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
        if not fits:
            errors.append(f"{field.name}: expected {kind.__name__}, got "
                          f"{type(value).__name__} {value!r}")
    return errors


def parse_config(cls: type[T], doc: str, argv: list[str] | None = None) -> T:
    """Parse ``argv`` into an instance of ``cls`` (a dataclass), exiting with one line
    on bad flags or a bad ``--config`` file; ``doc`` is the job's docstring."""
    parser = build_parser(cls, doc)
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.pop("config", None)
    if config_file:
        try:
            from_file = load_config_file(config_file)
        except ValueError as exc:
            parser.error(str(exc))
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
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
