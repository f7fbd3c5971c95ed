"""MkDocs hooks for this site (mkdocs.yml ``hooks:``), and the sections rule the tests share.

Code samples are included from tested files with pymdownx.snippets, named by a section that
the file marks the way Airflow's own example DAGs do::

    # [START nyne_quickstart]
    ...
    # [END nyne_quickstart]

A page asks for ``--8<-- "example_dags/example_nyne_replies.py:nyne_fetch_replies"`` inside a
fenced code block. pymdownx.snippets only knows its own ``--8<-- [start:name]`` markers, so
before it runs, each such request is rewritten into the line ranges of that section (marker
lines of other sections nested in it left out); a section that does not exist fails the
build. :func:`section_text` is the same rule for the tests (the README's copy of a sample is
checked against it).

Docstrings here are Sphinx style, and mkdocstrings renders a role such as
``:class:`~airflow_provider_nyne.client.ratelimit.RateLimits``` as the literal text
``:class:`` followed by the code. Such roles become cross-references instead: a link when the
object is documented on this site, plain code otherwise (``~`` shows the last name only, as
in Sphinx), and a paragraph ending in ``::`` (which introduces a code block) shows one colon.

Parameters that a class or function passes on through ``**kwargs`` (an operator's
``BaseOperator``/``BaseSensorOperator`` arguments, the API clients' shared settings) are
documented in its docstring, but griffe only sees the signature and warns that they are
missing from it. Those two warnings, and only for a definition that takes ``**kwargs``, are
dropped; every other warning still fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import ast
import functools
import logging
import re
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_MARKER = re.compile(r"^\s*# \[(?P<kind>START|END) (?P<name>[A-Za-z_][\w-]*)\]\s*$")
#: A request for a marked section (the path is relative to the repository root).
INCLUDE = re.compile(
    r'^(?P<indent>[ \t]*)--8<-- "(?P<path>[^":]+\.py):(?P<name>[A-Za-z_][\w-]*)"[ \t]*$', re.M
)


def section_lines(path: str | Path, name: str) -> list[tuple[int, int]]:
    """
    The 1-based, inclusive line ranges of section ``name`` in ``path``, without marker lines.

    :param path: the file, relative to the repository root or absolute
    :param name: the section's name, as in ``# [START name]``
    :raises LookupError: when the file has no such section, or marks it twice or unclosed
    """
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines, 1) if _is_marker(line, "START", name)]
    ends = [i for i, line in enumerate(lines, 1) if _is_marker(line, "END", name)]
    if len(starts) != 1 or len(ends) != 1 or ends[0] <= starts[0]:
        raise LookupError(
            f"{path}: section {name!r} must be marked once, '# [START {name}]' before '# [END {name}]' "
            f"(found {len(starts)} START and {len(ends)} END)"
        )
    ranges: list[tuple[int, int]] = []
    first = None
    for number in range(starts[0] + 1, ends[0]):
        if _MARKER.match(lines[number - 1]):
            if first is not None:
                ranges.append((first, number - 1))
            first = None
        elif first is None:
            first = number
    if first is not None:
        ranges.append((first, ends[0] - 1))
    if not ranges:
        raise LookupError(f"{path}: section {name!r} is empty")
    return ranges


def section_text(path: str | Path, name: str) -> str:
    """What a page shows for section ``name`` of ``path``: its lines, dedented as pymdownx.snippets does."""
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    picked = [line for first, last in section_lines(path, name) for line in lines[first - 1 : last]]
    return textwrap.dedent("\n".join(picked))


def _is_marker(line: str, kind: str, name: str) -> bool:
    match = _MARKER.match(line)
    return match is not None and match["kind"] == kind and match["name"] == name


_KWARGS_WARNING = re.compile(
    r"^griffe: (?P<path>[^:]+\.py):(?P<line>\d+): "
    r"(?:Parameter '\w+' does not appear in the function signature|No matching parameter for '\w+')$"
)


@functools.cache
def _definitions_taking_kwargs(path: str) -> frozenset[int]:
    """Docstring lines of the classes and functions in ``path`` that accept ``**kwargs``."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            init = next(
                (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
                None,
            )
            takes_kwargs = init is not None and init.args.kwarg is not None
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            takes_kwargs = node.args.kwarg is not None
        else:
            continue
        docstring = node.body[0] if node.body else None
        if takes_kwargs and isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant):
            lines.add(docstring.lineno)
    return frozenset(lines)


_ROLE = re.compile(
    r":(?:class|meth|func|mod|data|attr|exc|obj):<code>(?P<tilde>~?)(?P<target>[\w.]+)(?P<call>\(\))?</code>"
)


def _role_to_autoref(match: re.Match[str]) -> str:
    target = match["target"]
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
    # ``optional``: a target not documented here renders as plain code, not as a broken link.
    return f'<autoref identifier="{target}" optional><code>{shown}{match["call"] or ""}</code></autoref>'


class _ParametersThroughKwargs(logging.Filter):
    """Drop griffe's "not in the signature" warnings for definitions that take ``**kwargs``."""

    def filter(self, record: logging.LogRecord) -> bool:
        match = _KWARGS_WARNING.match(record.getMessage())
        if match is None:
            return True
        try:
            accepted = _definitions_taking_kwargs(match["path"])
        except (OSError, SyntaxError):
            return True
        return int(match["line"]) not in accepted


def on_startup(**kwargs: Any) -> None:
    """Install the filter on the logger that griffe's messages go through under MkDocs."""
    logger = logging.getLogger("mkdocs.plugins.griffe")
    if not any(isinstance(f, _ParametersThroughKwargs) for f in logger.filters):
        logger.addFilter(_ParametersThroughKwargs())


def on_page_content(html: str, **kwargs: Any) -> str:
    """Turn the Sphinx roles left in rendered docstrings into cross-references; ``text::`` reads ``text:``."""
    # In reStructuredText a paragraph ending in "::" introduces a code block and shows one colon.
    return _ROLE.sub(_role_to_autoref, html).replace("::</p>", ":</p>")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Turn each request for a marked section into the line ranges pymdownx.snippets reads."""
    from mkdocs.exceptions import PluginError

    def to_ranges(match: re.Match[str]) -> str:
        try:
            ranges = section_lines(match["path"], match["name"])
        except (OSError, LookupError) as err:
            raise PluginError(f"code sample {match['path']}:{match['name']}: {err}") from err
        spec = ",".join(f"{first}:{last}" for first, last in ranges)
        return f'{match["indent"]}--8<-- "{match["path"]}:{spec}"'

    return INCLUDE.sub(to_ranges, markdown)
