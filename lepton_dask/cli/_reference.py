"""Reference sections of the docs, generated from the code so they cannot go stale.

Three sections are generated, each between two markers in a page of ``docs/``:

* ``config`` (``docs/configuration.md``): every key of ``lepton.yaml`` and
  ``lepton-schema.yaml``, its type, default and description (the schema's
  ``description``, else the comment above the key in ``lepton.yaml``);
* ``metrics`` (``docs/cost.md``): every ``lepton_*`` metric the cost monitor
  and the block cache export, its type, labels and help text;
* ``cli`` (``docs/cli.md``): every ``lepton-dask`` command and option, its
  default and help text, read from the argument parser.

Regenerate them after changing any of these, from the repository root::

    python -m lepton_dask.cli._reference           # rewrite the sections
    python -m lepton_dask.cli._reference --check   # exit 1 when one is stale

``tests/test_docs.py`` fails when a committed section differs from what this
module generates.

>>> "`lepton.store.uri`" in config_reference()
True
>>> "`lepton_spend_usd_total`" in metrics_reference()
True
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

REGENERATE = "python -m lepton_dask.cli._reference"

#: section name -> (page under the docs directory, generator)
SECTIONS: dict[str, tuple[str, Callable[[], str]]] = {}


def _section(name: str, page: str):
    def register(fn: Callable[[], str]) -> Callable[[], str]:
        SECTIONS[name] = (page, fn)
        return fn

    return register


def begin_marker(name: str) -> str:
    return f"<!-- generated: {name} ({REGENERATE}); do not edit by hand -->"


def end_marker(name: str) -> str:
    return f"<!-- end generated: {name} -->"


def _cell(text: str) -> str:
    """``text`` as one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


# -- configuration ---------------------------------------------------------------------
def _yaml_comments(text: str) -> dict[str, str]:
    """The comment block just above each key of a YAML mapping, by dotted path.

    >>> _yaml_comments("a:\\n  # the b\\n  b: 1\\n")
    {'a.b': 'the b'}
    """
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_-]+):(\s|$)", line)
        if not m:
            pending = []
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if pending:
            out[".".join(k for _, k in stack)] = " ".join(pending)
        pending = []
    return out


def _type(schema: dict[str, Any]) -> str:
    """A short human reading of a JSON-schema node: type, choices, bounds."""
    if "oneOf" in schema or "anyOf" in schema:
        return " or ".join(_type(s) for s in schema.get("oneOf") or schema["anyOf"])
    types = schema.get("type", "any")
    types = [types] if isinstance(types, str) else list(types)
    if "enum" in schema:
        choices = ", ".join(
            f"`{v}`" for v in schema["enum"] if v is not None and "null" not in types
        ) or ", ".join(f"`{v}`" for v in schema["enum"] if v is not None)
        text = f"one of {choices}"
        return text + (" or null" if "null" in types else "")
    text = " or ".join(t for t in types)
    bounds = [
        f"{op} {schema[key]}"
        for key, op in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if key in schema
    ]
    if schema.get("minLength"):
        bounds.append("not empty")
    if types == ["array"] and isinstance(schema.get("items"), dict):
        text = f"list of {_type(schema['items'])}"
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _default(value: Any) -> str:
    if value is _MISSING:
        return ""
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


_MISSING = object()


def _config_rows(
    defaults: Any, schema: dict[str, Any], comments: dict[str, str], path: str
) -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, description) of ``path`` and every key below it."""
    props = schema.get("properties", {})
    names = list(defaults) if isinstance(defaults, dict) else []
    names += [n for n in props if n not in names]
    for name in names:
        key = f"{path}.{name}"
        sub = props.get(name, {})
        value = defaults.get(name, _MISSING) if isinstance(defaults, dict) else _MISSING
        description = sub.get("description") or comments.get(key, "")
        if sub.get("type") == "object" or (
            isinstance(value, dict) and "properties" in sub
        ):
            if description:
                yield key, "mapping", "", description
            yield from _config_rows(value, sub, comments, key)
            continue
        if props and name not in props:
            description = (description + " (not in the schema)").strip()
        yield key, _type(sub) if sub else "", _default(value), description
        items = sub.get("items")
        if isinstance(items, dict) and items.get("type") == "object":
            for item, item_schema in items.get("properties", {}).items():
                req = " (required)" if item in items.get("required", ()) else ""
                yield (
                    f"{key}[].{item}",
                    _type(item_schema) + req,
                    "",
                    item_schema.get("description", ""),
                )


@_section("config", "configuration.md")
def config_reference() -> str:
    """Markdown table of every configuration key (``lepton.yaml`` + schema)."""
    package = resources.files("lepton_dask")
    text = (package / "lepton.yaml").read_text()
    defaults = yaml.safe_load(text)["lepton"]
    schema = yaml.safe_load((package / "lepton-schema.yaml").read_text())
    schema = schema["properties"]["lepton"]
    comments = _yaml_comments(text)
    lines = [
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    for key, kind, default, description in _config_rows(
        defaults, schema, comments, "lepton"
    ):
        lines.append(f"| `{key}` | {_cell(kind)} | {default} | {_cell(description)} |")
    return "\n".join(lines)


# -- metrics ---------------------------------------------------------------------------
def _exported_families() -> Iterator[tuple[Any, str]]:
    """Every metric family the cost monitor and the block cache export, with
    the component that serves it, from a snapshot that reaches every branch
    (budgets set, a predictive scaler deciding)."""
    from lepton_dask.cost import metrics
    from lepton_dask.cost.monitor import CostMonitor
    from lepton_dask.store.placement import CacheCollector

    snapshot = CostMonitor(ledger=False).snapshot()
    snapshot.update(budget_usd=1.0, budget_usd_per_hour=1.0, scaler_decisions=1)
    snapshot["scaler"] = {
        "targets": {},
        "time_left_s": 1.0,
        "infeasible": False,
        "forecast_hits": 0,
        "forecast_misses": 0,
    }
    for family in metrics.families(snapshot):
        yield family, "scheduler"
    for family in CacheCollector().collect():
        yield family, "scheduler and workers"


@_section("metrics", "cost.md")
def metrics_reference() -> str:
    """Markdown table of every ``lepton_*`` metric: type, labels, help."""
    lines = [
        "| metric | type | labels | served by | help |",
        "|---|---|---|---|---|",
    ]
    for family, where in _exported_families():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = ", ".join(getattr(family, "_labelnames", ()))
        lines.append(
            f"| `{name}` | {family.type} | {labels} | {where} |"
            f" {_cell(family.documentation)} |"
        )
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------
def _commands(
    parser: argparse.ArgumentParser, prefix: str
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(command line, help, parser) of every command below ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                line = f"{prefix} {name}"
                yield line, helps.get(name, ""), sub
                yield from _commands(sub, line)


def _option_rows(
    parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()
) -> Iterator[str]:
    """One table row per argument of ``parser``, but those in ``skip``."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if skip.intersection(action.option_strings):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += f" {action.metavar or action.dest.upper()}"
        else:
            name = action.metavar or action.dest
            if action.choices:
                name = "|".join(map(str, action.choices))
        default = action.default
        shown = (
            ""
            if default in (None, False, argparse.SUPPRESS) or action.nargs == 0
            else f"`{default}`"
        )
        help_text = (action.help or "").replace("%(default)s", str(default))
        yield f"| `{_cell(name)}` | {_cell(shown)} | {_cell(help_text)} |"


@_section("cli", "cli.md")
def cli_reference() -> str:
    """Markdown: every ``lepton-dask`` command with its options."""
    from lepton_dask.cli import build_parser

    parser = build_parser()
    glob = frozenset(
        o
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction)
        for o in a.option_strings
    )
    out = ["Global options (`lepton-dask [OPTIONS] COMMAND`):", ""]
    out += ["| option | default | help |", "|---|---|---|", *_option_rows(parser)]
    for line, help_text, sub in _commands(parser, "lepton-dask"):
        rows = list(_option_rows(sub, glob))
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
            if not rows:
                continue  # a group of commands: its commands follow
        out += ["", f"#### `{line}`", ""]
        if help_text:
            out += [_cell(help_text)[0].upper() + _cell(help_text)[1:] + ".", ""]
        if rows:
            out += ["| option | default | help |", "|---|---|---|", *rows]
        else:
            out += ["No options."]
    return "\n".join(out)


# -- pages -----------------------------------------------------------------------------
def render(text: str, name: str, body: str) -> str:
    """``text`` with the generated section ``name`` replaced by ``body``.

    >>> page = f"a\\n{begin_marker('x')}\\nold\\n{end_marker('x')}\\nb"
    >>> render(page, "x", "new").splitlines()[2]
    'new'
    """
    begin, end = begin_marker(name), end_marker(name)
    start = text.find(begin)
    stop = text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"no generated section {name!r}: add {begin!r} and {end!r}")
    return text[: start + len(begin)] + "\n" + body + "\n" + text[stop:]


def stale(docs: Path) -> list[str]:
    """The sections of the pages under ``docs`` that differ from the code."""
    out = []
    for name, (page, generate) in SECTIONS.items():
        text = (docs / page).read_text()
        if render(text, name, generate()) != text:
            out.append(f"{page} ({name})")
    return out


def write(docs: Path) -> list[str]:
    """Rewrite every generated section under ``docs``; return the pages changed."""
    changed = []
    for name, (page, generate) in SECTIONS.items():
        path = docs / page
        text = path.read_text()
        new = render(text, name, generate())
        if new != text:
            path.write_text(new)
            changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=REGENERATE, description="Regenerate the reference sections of docs/."
    )
    parser.add_argument("--docs", default="docs", help="the docs directory")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a section is stale"
    )
    args = parser.parse_args(argv)
    docs = Path(args.docs)
    if args.check:
        old = stale(docs)
        for page in old:
            print(f"stale: {docs / page}; regenerate with `{REGENERATE}`")
        return 1 if old else 0
    for page in write(docs):
        print(f"wrote {docs / page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
