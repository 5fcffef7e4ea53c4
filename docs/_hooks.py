"""mkdocs hooks (``mkdocs.yml``: ``hooks``): the checks that make ``make docs`` strict.

- Before anything renders, every documented object must have a docstring and every public
  module must be rendered (``::: module``) on a page under ``docs/api/``
  (:mod:`_apiref` says what is public and documented where).
- After the build, every documented object, method and property must have its anchor in the
  built pages (so a ``members:`` option cannot hide one silently).
- The home page is the repository's README.md (links to ``docs/...`` rewritten), pages link
  to it as ``../README.md`` (which works on GitHub too), and ``<!-- api-index: PACKAGE -->``
  in a page becomes a table of ``PACKAGE.__all__`` linked to where each name is documented.

Broken cross-references, links and anchors are mkdocs' and autorefs' warnings, which
``mkdocs build --strict`` turns into errors.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import griffe
from mkdocs.exceptions import PluginError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _apiref  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_state: dict[str, object] = {}


def _api() -> tuple[list, dict[str, str]]:
    if "modules" not in _state:
        modules = _apiref.load(griffe.GriffeLoader(search_paths=[str(ROOT)]))
        _state["modules"] = modules
        _state["home"] = _apiref.documented_paths(modules)
    return _state["modules"], _state["home"]  # type: ignore[return-value]


def on_pre_build(config) -> None:
    _state.clear()
    _state["anchors"] = set()
    modules, home = _api()
    problems = [f"no docstring: {m}" for m in _apiref.missing_docstrings(modules, home)]
    on_pages = set()
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        on_pages.update(re.findall(r"^::: *([\w.]+)", page.read_text(), flags=re.M))
    problems += [
        f"public module {m.path} is on no page of docs/api/ (add '::: {m.path}')"
        for m in modules
        if m.path not in on_pages
    ]
    if problems:
        raise PluginError("API reference:\n  " + "\n  ".join(problems))


def _index_table(package: str) -> str:
    modules, home = _api()
    pkg = next(m for m in modules if m.path == package)
    rows = ["| name | kind | summary |", "| --- | --- | --- |"]
    for name in pkg.exports or []:
        member = pkg.members[str(name)]
        target = _apiref._final(member)
        if target is None:
            raise PluginError(f"{package}.{name} cannot be resolved")
        summary = (target.docstring.value.split("\n\n")[0] if target.docstring else "").strip()
        summary = _apiref.escape_pipes(_apiref.to_markdown(" ".join(summary.split()), target, home))
        path = home.get(target.path, target.path)
        rows.append(f"| [`{name}`][{path}] | {target.kind.value} | {summary} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "index.md":
        markdown = (ROOT / "README.md").read_text()
        markdown = re.sub(r"\]\(docs/", "](", markdown)
        # The title's own anchor, so that "graphattn" names the package for autorefs.
        markdown = re.sub(r"\A# (.*)", r"# \1 { #home }", markdown)
    depth = page.file.src_uri.count("/")
    markdown = markdown.replace("](../README.md", "](" + "../" * depth + "index.md")
    return re.sub(r"<!-- api-index: ([\w.]+) -->", lambda m: _index_table(m.group(1)), markdown)


def on_post_page(output: str, page, config) -> str:
    _state["anchors"].update(re.findall(r'id="([\w.]+)"', output))  # type: ignore[union-attr]
    return output


def on_post_build(config) -> None:
    modules, home = _api()
    anchors = _state["anchors"]
    absent = [p for p in _apiref.rendered_paths(modules, home) if p not in anchors]
    if absent:
        raise PluginError("not rendered in the API reference:\n  " + "\n  ".join(absent))
