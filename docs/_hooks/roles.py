"""A griffe extension for the API site: Sphinx-style roles in docstrings become code spans.

``:func:`name``` and its kin (``:mod:``, ``:class:``, ``:meth:``, ``:data:``, ``:attr:``,
``:exc:``, ``:obj:``) are written as the docstrings' references; each is resolved at build
time (fully qualified, or in the namespace of the docstring's module) and a target that does
not exist is a warning, which ``mkdocs build --strict`` turns into a failed build.
"""

from __future__ import annotations

import importlib
import logging
import re

import griffe

ROLE = re.compile(r":(?:func|mod|class|meth|data|attr|exc|obj):`~?([^`]+)`")
log = logging.getLogger("mkdocs.plugins.jaxkde_roles")


def _lookup(path: str):
    """The object at dotted ``path`` (a module, then attributes), or ``None``."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return None
            obj = getattr(obj, name)
        return obj
    return None


def resolve(target: str, scopes: list[str]) -> bool:
    """Whether ``target`` names an object: dotted from a module, or in one of ``scopes`` (the
    docstring's class, its parent class, its module), or a class's declared field."""
    target = re.sub(r"\s+", "", target).removesuffix("()")
    if target.split(".")[0] in {"numpy", "jax", "scipy", "sklearn", "optax"}:
        return True
    if _lookup(target) is not None:
        return True
    owner, _, field = target.rpartition(".")  # a dataclass field, declared but not set
    if owner and field in getattr(_lookup(owner), "__annotations__", {}):
        return True
    for scope in scopes:
        owner = _lookup(scope)
        if owner is None:
            continue
        head, _, rest = target.partition(".")
        fields = getattr(owner, "__annotations__", {})
        if hasattr(owner, head) or head in fields:
            obj = getattr(owner, head, None)
            return not rest or (obj is not None and _lookup(f"{scope}.{target}") is not None)
    return False


class SphinxRoles(griffe.Extension):
    """Resolve and rewrite the roles of every docstring griffe loads."""

    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is None or ":" not in obj.docstring.value:
            return
        scopes = [obj.path] if obj.is_class else []
        if obj.parent is not None and obj.parent.is_class:
            scopes.append(obj.parent.path)
        scopes.append(obj.path if obj.is_module else obj.module.path)

        def code(match: re.Match) -> str:
            target = match.group(1)
            if not resolve(target, scopes):
                log.warning(
                    "%s: the docstring refers to %r, which does not exist", obj.path, target
                )
            return f"`{' '.join(target.split())}`"

        obj.docstring.value = ROLE.sub(code, obj.docstring.value)
