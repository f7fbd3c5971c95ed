"""The documentation site builds with every warning an error, and shows each included sample whole.

``make docs`` builds the same site; here it is built into a temporary folder so that what a
reader sees can be checked: each section a page includes appears in that page, exactly as in
the file it comes from, and no include is left unexpanded.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.docs.test_docs import ROOT, _includes, hooks

# The repository's own tooling, the same on every Airflow version: run on the source tree only.
pytestmark = pytest.mark.repo

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")


def _build(*args: str) -> subprocess.CompletedProcess[str]:
    # Not --quiet: it hides warnings from the count that --strict fails on.
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", *args],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _build("--site-dir", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return out


def test_a_broken_link_or_anchor_fails_the_build(tmp_path: Path) -> None:
    """The site's own settings (inherited from mkdocs.yml) turn a broken link or anchor into a failure."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[a page](missing.md) and [an anchor](other.md#nowhere)\n")
    (docs / "other.md").write_text("# Other\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        f"INHERIT: {ROOT / 'mkdocs.yml'}\n"
        f"docs_dir: {docs}\n"
        "nav: [index.md, other.md]\n"
        "hooks: []\n"
        "plugins: [search]\n"
    )
    result = _build("--config-file", str(config), "--site-dir", str(tmp_path / "site"))
    assert result.returncode != 0
    assert "'missing.md'" in result.stderr
    assert "'#nowhere'" in result.stderr


def _text(page: Path) -> str:
    """A built page as a reader sees it: tags removed, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def _built(site: Path, page: Path) -> Path:
    relative = page.relative_to(ROOT / "docs").with_suffix("")
    return site / (
        "index.html" if relative.name == "index" and relative.parent == Path() else relative / "index.html"
    )


def test_site_shows_every_included_section_whole(site: Path) -> None:
    for page, path, name in _includes():
        shown = _text(_built(site, page))
        assert hooks.section_text(path, name) in shown, f"{page.name} does not show {path}:{name}"


def test_no_include_is_left_unexpanded(site: Path) -> None:
    for built in site.rglob("*.html"):
        assert "--8<--" not in built.read_text(), built


def test_reference_pages_document_the_public_classes(site: Path) -> None:
    reference = {p.parent.name: _text(p) for p in (site / "reference").glob("*/index.html")}
    for page, name in [
        ("hooks", "NyneHook"),
        ("operators", "NyneSubmitInteractionsOperator"),
        ("sensors", "NyneInteractionsSensor"),
        ("triggers", "NyneCallbackTrigger"),
        ("transfers", "NyneCallbackResultToObjectStorageOperator"),
        ("client", "RequestBudget"),
        ("callbacks", "request_id_from_asset_events"),
        ("simulator", "NyneSimulator"),
    ]:
        assert name in reference[page], f"reference/{page} lacks {name}"
    assert ":class:" not in reference["client"]
