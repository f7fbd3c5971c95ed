"""The documentation's code samples come from tested files, and the README stays a short PyPI page.

Pages include samples by section name (``--8<-- "example_dags/x.py:name"`` in a fenced
block); ``docs/hooks.py`` holds the rule that finds a section, and these tests use the same
rule. The README cannot include anything (it is also the PyPI page), so its one sample is
checked against the section it copies.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from types import ModuleType

import pytest

# The repository's own tooling, the same on every Airflow version: run on the source tree only.
pytestmark = pytest.mark.repo

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
DOCS_URL = "https://github.com/nyne-ai/airflow-provider-nyne/blob/main/docs/"
#: Where a sample may come from: files that the tests run.
TESTED_SOURCES = ("example_dags/", "docs/snippets/")
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nyne_docs_hooks", DOCS / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _hooks()


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "snippets" not in p.parts)


def _python_blocks(text: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(text) if m["lang"] in ("python", "py")]


def _includes() -> list[tuple[Path, str, str]]:
    """Every (page, file, section) a page includes."""
    found = []
    for page in _pages():
        for match in hooks.INCLUDE.finditer(page.read_text()):
            found.append((page, match["path"], match["name"]))
    return found


def _marked_sections() -> set[tuple[str, str]]:
    marker = re.compile(r"^\s*# \[START (?P<name>[\w-]+)\]\s*$", re.M)
    sections = set()
    for folder in TESTED_SOURCES:
        for path in sorted((ROOT / folder).glob("*.py")):
            for match in marker.finditer(path.read_text()):
                sections.add((path.relative_to(ROOT).as_posix(), match["name"]))
    return sections


# --- the README -----------------------------------------------------------------------------


def test_readme_fits_on_a_screen_or_two() -> None:
    assert len(README.read_text().splitlines()) <= 200


def test_readme_example_is_exactly_the_quickstart_section() -> None:
    [block] = _python_blocks(README.read_text())
    assert block.rstrip("\n") == hooks.section_text("docs/snippets/quickstart_dag.py", "nyne_quickstart")


def test_readme_links_into_the_docs_are_absolute_and_exist() -> None:
    text = README.read_text()
    targets = re.findall(r"\]\(([^)]+)\)", text)
    assert targets
    for target in targets:
        assert target.startswith("https://"), f"a relative link breaks on PyPI: {target}"
    pages = [t[len(DOCS_URL) :] for t in targets if t.startswith(DOCS_URL)]
    assert "index.md" in pages
    for link in pages:
        page, _, anchor = link.partition("#")
        assert (DOCS / page).is_file(), link
        if anchor:
            # MkDocs' anchor of a heading: lower case, words joined by hyphens.
            headings = re.findall(r"^#+ (.+)$", (DOCS / page).read_text(), re.M)
            anchors = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in anchors, link


# --- the pages ------------------------------------------------------------------------------


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_every_python_block_of_a_page_is_an_include(page: Path) -> None:
    for block in _python_blocks(page.read_text()):
        lines = [line for line in block.splitlines() if line.strip()]
        assert lines, f"{page.name}: empty python block"
        for line in lines:
            assert hooks.INCLUDE.match(line), f"{page.name}: a sample typed into the page: {line!r}"


def test_every_include_names_an_existing_section_of_a_tested_file() -> None:
    includes = _includes()
    assert len(includes) >= 15
    for page, path, name in includes:
        assert path.startswith(TESTED_SOURCES), f"{page.name}: {path} is not run by the tests"
        assert hooks.section_text(path, name).strip(), f"{page.name}: {path}:{name} is empty"


def test_every_marked_section_is_shown_somewhere() -> None:
    shown = {(path, name) for _, path, name in _includes()}
    assert _marked_sections() - shown == set()


# --- the rule that finds a section ------------------------------------------------------------


def test_section_leaves_out_nested_markers_and_dedents(tmp_path: Path) -> None:
    source = tmp_path / "dag.py"
    source.write_text(
        "x = 1\n"
        "    # [START outer]\n"
        "    a = 1\n"
        "    # [START inner]\n"
        "    b = 2\n"
        "    # [END inner]\n"
        "    c = 3\n"
        "    # [END outer]\n"
    )
    assert hooks.section_lines(source, "outer") == [(3, 3), (5, 5), (7, 7)]
    assert hooks.section_text(source, "outer") == "a = 1\nb = 2\nc = 3"
    assert hooks.section_text(source, "inner") == "b = 2"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a = 1\n", id="no-markers"),
        pytest.param("# [START s]\na = 1\n", id="unclosed"),
        pytest.param("# [END s]\na = 1\n# [START s]\n", id="end-before-start"),
        pytest.param("# [START s]\na = 1\n# [END s]\n# [START s]\nb = 2\n# [END s]\n", id="twice"),
        pytest.param("# [START s]\n# [END s]\n", id="empty"),
    ],
)
def test_a_missing_or_broken_section_is_refused_naming_the_markers(tmp_path: Path, text: str) -> None:
    source = tmp_path / "dag.py"
    source.write_text(text)
    with pytest.raises(LookupError, match=r"section 's'"):
        hooks.section_lines(source, "s")


def test_an_include_becomes_the_line_ranges_pymdownx_reads() -> None:
    pytest.importorskip("mkdocs")
    page = '```python\n--8<-- "docs/snippets/quickstart_dag.py:nyne_quickstart"\n```\n'
    converted = hooks.on_page_markdown(page)
    [(first, last)] = hooks.section_lines("docs/snippets/quickstart_dag.py", "nyne_quickstart")
    assert f'--8<-- "docs/snippets/quickstart_dag.py:{first}:{last}"' in converted


def test_an_include_of_a_missing_section_fails_the_build() -> None:
    pytest.importorskip("mkdocs")
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="no_such_section"):
        hooks.on_page_markdown('--8<-- "docs/snippets/quickstart_dag.py:no_such_section"\n')


# --- the other hooks ------------------------------------------------------------------------------


def _warning(message: str) -> logging.LogRecord:
    return logging.LogRecord("mkdocs.plugins.griffe", logging.WARNING, __file__, 0, message, None, None)


def _docstring_line(path: str, definition: str) -> int:
    lines = (ROOT / path).read_text().splitlines()
    start = next(i for i, line in enumerate(lines, 1) if line.startswith(definition))
    return next(i for i in range(start, len(lines) + 1) if lines[i - 1].strip().startswith('"""'))


def test_kwargs_parameters_warning_is_dropped_only_for_definitions_taking_kwargs() -> None:
    drop = hooks._ParametersThroughKwargs()
    sensor = "airflow_provider_nyne/sensors/interactions.py"
    line = _docstring_line(sensor, "class NyneInteractionsSensor")
    assert not drop.filter(_warning(f"griffe: {sensor}:{line}: No matching parameter for 'mode'"))
    # RetryPolicy is a dataclass: no **kwargs, so a documented parameter it lacks is a real error.
    retry = "airflow_provider_nyne/client/retry.py"
    line = _docstring_line(retry, "class RetryPolicy")
    assert drop.filter(_warning(f"griffe: {retry}:{line}: No matching parameter for 'mode'"))
    assert drop.filter(_warning(f"griffe: {sensor}:1: Failed to get 'signature' from docstring"))


def test_sphinx_roles_become_cross_references() -> None:
    html = "uses :class:<code>~airflow_provider_nyne.client.ratelimit.RateLimits</code> and :meth:<code>aclose</code>"
    out = hooks.on_page_content(html)
    assert ":class:" not in out
    assert ":meth:" not in out
    assert (
        '<autoref identifier="airflow_provider_nyne.client.ratelimit.RateLimits" optional>'
        "<code>RateLimits</code></autoref>"
    ) in out
    assert '<autoref identifier="aclose" optional><code>aclose</code></autoref>' in out


def test_a_paragraph_introducing_a_code_block_ends_in_one_colon() -> None:
    assert (
        hooks.on_page_content("<p>A custom operator does the same::</p>")
        == "<p>A custom operator does the same:</p>"
    )
