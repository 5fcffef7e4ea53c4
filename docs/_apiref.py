"""What the API reference documents and how docstrings become its Markdown.

Shared by the mkdocs hooks (``docs/_hooks.py``: the strict checks, the generated index) and
mkdocstrings, which loads :class:`SphinxToMarkdown` as a griffe extension (``mkdocs.yml``).

- The public API is every public module of :data:`PACKAGES` (no ``_`` in its path) and the
  names in each one's ``__all__``.
- Each public object is documented once: in the module that defines it, or, when that module
  is private (``graphattn.backends._base``), in the public module nearest to it that
  re-exports it (``graphattn.backends``). Re-exports elsewhere (``graphattn.Graph``) are
  hidden from the page of the re-exporting module and listed in the generated index.
- Every documented object needs a docstring: modules, classes, functions, module-level
  attributes in ``__all__``, and the public methods and properties a class defines, except
  ``extra_repr`` (``nn.Module``'s repr hook) and overrides of a documented base-class method.
- Docstrings keep the Sphinx roles (``:class:`Graph```) and reST simple tables that
  ``help()`` shows; :class:`SphinxToMarkdown` turns them into mkdocstrings cross-references
  and Markdown tables, so a role naming a documented object becomes a checked link.
"""

from __future__ import annotations

import builtins
import importlib.util
import logging
import re
from collections.abc import Iterator

import griffe

PACKAGES = ("graphattn", "modalities")
EXEMPT_METHODS = frozenset({"extra_repr"})  # nn.Module's repr hook, shown by repr()


# ----------------------------------------------------------------------------- the API
def _is_private_path(path: str) -> bool:
    return any(part.startswith("_") for part in path.split("."))


def public_modules(pkg: griffe.Module) -> list[griffe.Module]:
    """``pkg`` and its public submodules, recursively, parents first."""
    found = [pkg]
    for member in pkg.members.values():
        if member.is_alias or not member.is_module:
            continue
        if _is_private_path(member.path):
            continue
        found.extend(public_modules(member))
    return found


def _final(obj: griffe.Object | griffe.Alias) -> griffe.Object | None:
    """The object an alias points to, or ``None`` when it lies outside the loaded packages."""
    if not obj.is_alias:
        return obj
    try:
        return obj.final_target
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _exports(mod: griffe.Module) -> Iterator[tuple[str, griffe.Object | griffe.Alias]]:
    for name, member in mod.members.items():
        if not member.is_public:
            continue
        target = _final(member)
        if target is not None and not target.is_module:
            yield name, member


def documented_paths(modules: list[griffe.Module]) -> dict[str, str]:
    """Canonical path of each public module-level object -> the path it is documented at.

    Modules map to themselves. An object defined in a public module is documented there; one
    defined in a private module, in the re-exporting public module sharing the longest
    prefix with it (then the shallowest)."""
    public = {m.path for m in modules}
    home: dict[str, str] = {m.path: m.path for m in modules}
    candidates: dict[str, list[str]] = {}
    for mod in modules:
        for name, member in _exports(mod):
            target = _final(member)
            if target is None or not target.path.startswith(PACKAGES):
                continue
            if target.module.path in public:
                home[target.path] = target.path
            else:
                candidates.setdefault(target.path, []).append(f"{mod.path}.{name}")

    def closeness(canonical: str, documented: str) -> tuple[int, int]:
        a, b = canonical.split("."), documented.split(".")
        pairs = zip(a, b, strict=False)
        common = next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))
        return (-common, len(b))

    for canonical, paths in candidates.items():
        if canonical not in home:
            home[canonical] = min(paths, key=lambda p: closeness(canonical, p))
    return home


def hide_reexports(modules: list[griffe.Module], home: dict[str, str]) -> None:
    """Mark re-exports documented elsewhere as not public, so mkdocstrings' ``public``
    filter renders each object on one page only."""
    for mod in modules:
        for name, member in list(_exports(mod)):
            if not member.is_alias:
                continue
            target = _final(member)
            if target is None or home.get(target.path) != f"{mod.path}.{name}":
                member.public = False


def _base_method_documented(cls: griffe.Class, name: str) -> bool:
    try:
        bases = cls.mro()
    except (ValueError, griffe.AliasResolutionError):
        return False
    for base in bases:
        member = base.members.get(name)
        if member is not None and not member.is_alias and member.docstring:
            return True
    return False


def _class_members(cls: griffe.Class) -> Iterator[griffe.Object]:
    for name, member in cls.members.items():
        if member.is_alias or name.startswith("_") or member.is_attribute:
            continue
        yield member


def missing_docstrings(modules: list[griffe.Module], home: dict[str, str]) -> list[str]:
    """``kind path`` of every documented object without a docstring."""
    missing: list[str] = []

    def check_class(cls: griffe.Class) -> None:
        for member in _class_members(cls):
            if member.docstring:
                if member.is_class:
                    check_class(member)
                continue
            if member.name in EXEMPT_METHODS or _base_method_documented(cls, member.name):
                continue
            missing.append(f"{member.kind.value} {member.path}")

    seen: set[str] = set()
    for mod in modules:
        if not mod.docstring:
            missing.append(f"module {mod.path}")
        for _, member in _exports(mod):
            target = _final(member)
            if target is None or target.path in seen or target.path not in home:
                continue
            seen.add(target.path)
            if not target.docstring:
                missing.append(f"{target.kind.value} {home[target.path]}")
            if target.is_class:
                check_class(target)
    return missing


def load(loader: griffe.GriffeLoader) -> list[griffe.Module]:
    """Load :data:`PACKAGES` (statically, unless ``loader`` holds them already), give their
    attributes their ``#:`` comments as docstrings, and return their public modules."""
    modules: list[griffe.Module] = []
    for name in PACKAGES:
        pkg = loader.modules_collection.members.get(name) or loader.load(name)
        comment_docstrings(pkg)
        modules.extend(public_modules(pkg))
    return modules


def rendered_paths(modules: list[griffe.Module], home: dict[str, str]) -> list[str]:
    """The paths that must have an anchor in the built pages: every documented module and
    module-level object, and the public methods and properties of documented classes."""
    paths = sorted(set(home.values()))
    for canonical, documented in home.items():
        obj = _lookup(modules[0].modules_collection, canonical)
        if obj is not None and obj.is_class:
            for member in _class_members(obj):
                if member.docstring:
                    paths.append(f"{documented}.{member.name}")
    return paths


# ------------------------------------------------------------- docstrings to Markdown
_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|exc|obj|const):`([^`]+)`")
_BORDER = re.compile(r"^( *)=+( +=+)+ *$")


def _lookup(collection: griffe.ModulesCollection, path: str) -> griffe.Object | None:
    try:
        obj = collection.get_member(path)
    except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError):
        return None
    return _final(obj)


def _rendered_path(obj: griffe.Object, home: dict[str, str]) -> str | None:
    """The anchor ``obj`` gets in the API reference, or ``None`` when it is not rendered."""
    if obj.is_module:
        return home.get(obj.path)
    chain = [obj]
    while chain[-1].parent is not None and not chain[-1].parent.is_module:
        chain.append(chain[-1].parent)
    top = chain[-1]
    if top.path not in home or (not top.docstring and not top.is_class):
        return None
    for member in chain[:-1]:
        if member.name.startswith("_") or not member.docstring:
            return None
    return home[top.path] + obj.path[len(top.path) :]


def _resolve(obj: griffe.Object, target: str, home: dict[str, str]) -> str | None:
    collection = obj.modules_collection
    parts = target.lstrip(".").split(".")
    candidates = []
    try:
        candidates.append(".".join([obj.resolve(parts[0]), *parts[1:]]))
    except (griffe.NameResolutionError, AttributeError, KeyError, ValueError):
        pass
    candidates.append(".".join(parts))
    for path in candidates:
        if not path.startswith(PACKAGES):
            continue
        found = _lookup(collection, path)
        if found is not None:
            return _rendered_path(found, home)
    # Not one of ours: fine when it names a builtin or an importable module's object
    # (torch.where, nn.Module, TypeError), an error otherwise (a typo, a renamed object).
    outside = next((c for c in candidates if not c.startswith(PACKAGES)), None)
    top = (outside or "").split(".")[0]
    if outside and (hasattr(builtins, top) or importlib.util.find_spec(top) is not None):
        return None
    raise LookupError(f"{obj.path}: no object {target!r} (in a Sphinx role of its docstring)")


def _role(match: re.Match[str], obj: griffe.Object, home: dict[str, str]) -> str:
    text = match.group(2).strip()
    titled = re.fullmatch(r"(.*?)\s*<([^>]+)>", text)
    if titled:
        title, target = titled.group(1), titled.group(2)
    else:
        target = text.lstrip("~")
        title = target.rsplit(".", 1)[-1] if text.startswith("~") else target
    try:
        path = _resolve(obj, target.lstrip("~"), home)
    except LookupError as err:
        # mkdocs counts the warnings of its loggers: strict mode fails the build on this.
        logging.getLogger("mkdocs.plugins.apiref").warning(str(err))
        path = None
    return f"[`{title}`][{path}]" if path else f"`{title}`"


def escape_pipes(text: str) -> str:
    """Escape ``|`` outside code spans, for a Markdown table cell (Python-Markdown's tables
    keep pipes inside code spans)."""
    parts = re.split(r"(`+[^`]*`+)", text)
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def _table(lines: list[str]) -> list[str]:
    """A reST simple table (border, header, border, rows, border) as a Markdown table."""
    indent = len(lines[0]) - len(lines[0].lstrip())
    starts = [m.start() for m in re.finditer(r"=+", lines[0])]
    rows: list[list[str]] = []
    borders = 0
    for line in lines[1:]:
        if _BORDER.match(line):
            borders += 1
            continue
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        if rows and borders > 0 and not cells[0] and len(rows) > 1:
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    pad = " " * indent
    out = [pad + "| " + " | ".join(escape_pipes(c) for c in row) + " |" for row in rows]
    out.insert(1, pad + "|" + " --- |" * len(starts))
    return out


def to_markdown(text: str, obj: griffe.Object, home: dict[str, str]) -> str:
    """Sphinx roles to cross-references, reST simple tables to Markdown tables, ``::``
    before a literal block to ``:`` (the indented block stays a Markdown code block), and
    ``Example:`` to the ``Examples:`` section griffe parses."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _BORDER.match(line):
            end = i + 1
            seen = 1
            while end < len(lines) and seen < 3:
                seen += bool(_BORDER.match(lines[end]))
                end += 1
            if seen == 3:
                out.extend(_table(lines[i:end]))
                i = end
                continue
        if re.fullmatch(r" *Example: *", line):  # Napoleon's singular form of the section
            line = line.replace("Example:", "Examples:")
        if line.rstrip().endswith("::"):  # "text::" -> "text:", "text ::" and "::" -> "text"
            body = line.rstrip()[:-2]
            line = body.rstrip() if not body.strip() or body.endswith(" ") else body + ":"
        out.append(line)
        i += 1
    return _ROLE.sub(lambda m: _role(m, obj, home), "\n".join(out))


def comment_docstrings(pkg: griffe.Module) -> None:
    """Give an attribute without a docstring the ``#:`` comment lines right above it (the
    Sphinx convention this codebase uses for module and class attributes)."""
    for obj in _all_objects(pkg):
        if not obj.is_attribute or obj.docstring or not obj.lineno or not obj.filepath:
            continue
        lines = obj.lines_collection[obj.filepath]
        i = obj.lineno - 2
        comment: list[str] = []
        while i >= 0 and lines[i].lstrip().startswith("#:"):
            comment.insert(0, lines[i].lstrip()[2:].strip())
            i -= 1
        if comment:
            obj.docstring = griffe.Docstring(
                "\n".join(comment), lineno=i + 2, endlineno=obj.lineno - 1, parent=obj
            )


def _all_objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _all_objects(member)


class SphinxToMarkdown(griffe.Extension):
    """Griffe extension: once every package of :data:`PACKAGES` is loaded, hide re-exports
    documented elsewhere and rewrite each docstring with :func:`to_markdown`."""

    def __init__(self) -> None:
        super().__init__()
        self.converted: griffe.ModulesCollection | None = None  # once per loader

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        if pkg.name not in PACKAGES or self.converted is loader.modules_collection:
            return
        for name in PACKAGES:
            if name not in loader.modules_collection.members:
                loader.load(name)  # re-enters on_package for that package
        if self.converted is loader.modules_collection:
            return
        self.converted = loader.modules_collection
        modules = load(loader)
        home = documented_paths(modules)
        hide_reexports(modules, home)
        for name in PACKAGES:
            for obj in _all_objects(loader.modules_collection[name]):
                if obj.docstring:
                    obj.docstring.value = to_markdown(obj.docstring.value, obj, home)
