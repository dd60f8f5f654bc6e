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


def build_parser(cls: type, description: str) -> argparse.ArgumentParser:
    """An ``argparse`` parser with one flag per field of the dataclass ``cls``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
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
            kwargs["metavar"] = field.metadata.get("metavar", field.name.upper())
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            kwargs["help"] += " (required)"
        elif default is not None:
            kwargs["help"] += f" (default: {default})"
        parser.add_argument(_flag(field.name), **kwargs)
    return parser


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML or JSON settings file into a dict keyed by field name."""
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping of settings, got {type(data)}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def parse_config(cls: type[T], description: str, argv: list[str] | None = None) -> T:
    """Parse ``argv`` into an instance of ``cls`` (a dataclass), exiting on bad flags."""
    parser = build_parser(cls, description)
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.pop("config", None)
    if config_file:
        values.update(load_config_file(config_file))
    values.update(args)
    fields = dataclasses.fields(cls)
    unknown = sorted(set(values) - {f.name for f in fields})
    if unknown:
        parser.error(f"unknown setting(s) in {config_file}: {', '.join(unknown)}")
    required = [
        _flag(f.name)
        for f in fields
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in values
    ]
    if required:
        parser.error(f"the following arguments are required: {', '.join(required)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
