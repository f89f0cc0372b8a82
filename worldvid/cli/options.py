"""Command-line options described from the library's config dataclasses and function signatures.

A default is typed once, in the dataclass (or the function's signature), and shown in ``--help``; the help
text is the field's docstring. ``FLAG_NAMES`` gives a field a flag name where its own name would mean
different things in different commands (``steps``: training steps, not denoising or episode steps).
This module only describes options (``Option``); ``worldvid.cli.parsers`` declares them.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import os
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

FLAG_NAMES: dict[str, str] = {
    "env_id": "env",
    "steps": "train-steps",
    "num_steps": "denoise-steps",
    "max_steps": "max-episode-steps",
    "plan_max_steps": "max-episode-steps",
    "block_channels": "channels",
    "stop_on_success": "early-stop",
    "num_episodes": "episodes",
    "max_concurrent": "concurrent",
    "controllability_seeds": "control-seeds",
}
"""Field or parameter name -> flag name (without dashes), wherever the plain name would be ambiguous. Every
other name becomes its own flag with dashes for underscores. A flag name means one thing in every command."""


class Option(NamedTuple):
    """One command-line option: its flag and the keyword arguments of ``ArgumentParser.add_argument``."""

    flag: str
    kwargs: dict[str, Any]


def flag(name: str) -> str:
    """The option string of a field or parameter, e.g. 'steps' -> '--train-steps'."""
    return "--" + FLAG_NAMES.get(name, name.replace("_", "-"))


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring (the string literal after its annotated assignment), first paragraph."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[node.target.id] = " ".join(following.value.value.split("\n\n")[0].split())
    return docs


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` -> X; ``str | os.PathLike`` or ``str | Path`` -> str (a path is given as a string)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a not in (type(None), os.PathLike, Path)]
        if len(args) == 1:
            return args[0]
    return annotation


def _kind(annotation: Any) -> tuple[str, type | None]:
    """('scalar', type) | ('list', item type) | ('bool', None) | ('other', None) for an annotation."""
    annotation = _unwrap_optional(annotation)
    if annotation is bool:
        return "bool", None
    if annotation in (int, float, str):
        return "scalar", annotation
    if typing.get_origin(annotation) in (tuple, list):
        items = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(set(items)) == 1 and items[0] in (int, float, str):
            return "list", items[0]
    return "other", None


def _option(name: str, annotation: Any, default: Any, doc: str, required: bool,
            choices: Iterable[Any] | None) -> Option:
    kind, item = _kind(annotation)
    if kind == "other":
        raise TypeError(f"no command-line form for {name}: {annotation!r}")
    doc = doc or name.replace("_", " ")
    shown = "" if required or "default" in doc.lower() else f" (default: {show(default)})"
    kwargs: dict[str, Any] = {"dest": name, "help": (doc + shown).replace("%", "%%")}  # argparse %-formats help
    if kind == "bool":
        return Option(flag(name), {**kwargs, "action": argparse.BooleanOptionalAction, "default": default})
    kwargs.update(type=item, required=required)
    if not required:
        kwargs["default"] = default
    if choices is not None:
        kwargs["choices"] = list(choices)
    else:
        kwargs["metavar"] = FLAG_NAMES.get(name, name).upper().replace("-", "_")
    if kind == "list":
        kwargs["nargs"] = "+"
    return Option(flag(name), kwargs)


def show(value: Any) -> str:
    """An option's value as typed on a command line: a list or tuple as space-separated items."""
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def config_options(cls: type, *, skip: Iterable[str] = (), choices: Mapping[str, Iterable[Any]] | None = None,
                   defaults: Mapping[str, Any] | None = None) -> list[Option]:
    """One option per field of dataclass ``cls`` (but ``skip`` and nested configs), dest = the field's name.

    Fields without a default are required options. ``defaults`` overrides a field's default for this command
    (e.g. a value a command must set); ``choices`` restricts values.
    """
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        if f.name in skip or _kind(hints[f.name])[0] == "other":
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if defaults and f.name in defaults:
            default, has_default = defaults[f.name], True
        options.append(_option(f.name, hints[f.name], default, docs.get(f.name, ""), not has_default,
                               (choices or {}).get(f.name)))
    return options


def function_options(fn: Callable[..., Any], helps: Mapping[str, str], *,
                     choices: Mapping[str, Iterable[Any]] | None = None) -> list[Option]:
    """One option per parameter of ``fn`` named in ``helps`` (in that order, dest = the parameter's name),
    defaults read from its signature; parameters without a default are required."""
    signature, hints = inspect.signature(fn), typing.get_type_hints(fn)
    options = []
    for name, doc in helps.items():
        param = signature.parameters[name]
        has_default = param.default is not inspect.Parameter.empty
        options.append(_option(name, hints[name], param.default if has_default else None, doc, not has_default,
                               (choices or {}).get(name)))
    return options


CONFIG_FILE = Option("--config", {"metavar": "FILE", "help": "JSON file of option values by field name (the "
                                  "command line wins over it), e.g. a saved train_config.json's 'train' object"})
"""``--config FILE``: a JSON object of option values used as a command's defaults."""


def config_file_of(argv: list[str]) -> str | None:
    """The FILE of ``--config FILE`` / ``--config=FILE`` in ``argv``, or None."""
    for i, arg in enumerate(argv):
        if arg == CONFIG_FILE.flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(CONFIG_FILE.flag + "="):
            return arg.split("=", 1)[1]
    return None


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Read ``--config FILE`` from ``argv`` (if given) into ``parser``'s defaults; ValueError for a bad file."""
    given_path = config_file_of(argv)
    if not given_path:
        return
    path = Path(given_path)
    try:
        given = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read --config {path}: {err}") from err
    if not isinstance(given, dict):
        raise ValueError(f"--config {path} must hold a JSON object of option values")
    known_dests = {action.dest for action in parser._actions}
    unknown = sorted(set(given) - known_dests)
    if unknown:
        raise ValueError(f"--config {path}: unknown options {unknown} for this command")
    parser.set_defaults(**given)
