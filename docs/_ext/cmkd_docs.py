"""Sphinx extension: pages generated from the code at build time, so they follow it as it changes.

A page holds a placeholder comment that is replaced, when Sphinx reads the page, by Markdown generated here:

- ``<!-- cmkd:config-reference -->``: every field of :class:`cmkd.config.ExperimentConfig` and of the models it
  nests (walked recursively): type, default, allowed range and description (``Field(description=...)``; the
  comment beside the field in ``config.py`` where a field has none yet);
- ``<!-- cmkd:layers -->``: the layer contract of ``[tool.importlinter]`` in ``pyproject.toml``;
- ``<!-- cmkd:recipes -->``: the built-in recipes with their one-line descriptions (``cmkd list``).

``config_sections()`` is also used by ``tests/test_docs.py`` to check that the page names every field.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDERS = {"config-reference", "layers", "recipes"}


@dataclass
class Section:
    """One config model on the reference page: where it sits in the YAML and the fields it adds there."""

    model: type[BaseModel]
    paths: list[str] = field(default_factory=list)
    base: type[BaseModel] | None = None  # a documented model whose fields this one inherits (listed there)

    @property
    def fields(self) -> dict[str, FieldInfo]:
        inherited = set(self.base.model_fields) if self.base else set()
        return {k: v for k, v in self.model.model_fields.items() if k not in inherited}


def _models_in(annotation: Any, path: str) -> list[tuple[type[BaseModel], str]]:
    """The pydantic models inside a field's type, each with its YAML path (``<name>`` for a dict key, ``[i]`` for
    a list item)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, path)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is None:
        return []
    if origin in (dict, typing.Mapping) or (isinstance(origin, type) and issubclass(origin, dict)):
        return _models_in(args[1], f"{path}.<name>") if len(args) == 2 else []
    if origin in (list, tuple, set, frozenset):
        return [m for a in args if a is not Ellipsis for m in _models_in(a, f"{path}[i]")]
    return [m for a in args for m in _models_in(a, path)]  # Union, Optional, Annotated


def config_sections(root: type[BaseModel] | None = None) -> list[Section]:
    """Every model reachable from ``root`` (default :class:`cmkd.config.ExperimentConfig`), depth first in field
    order, each once, with every path it appears at."""
    if root is None:
        from cmkd.config import ExperimentConfig

        root = ExperimentConfig
    found: dict[type[BaseModel], Section] = {}

    def walk(model: type[BaseModel], path: str) -> None:
        if model in found:
            found[model].paths.append(path)
            return
        found[model] = Section(model, [path])
        for name, info in model.model_fields.items():
            for sub, sub_path in _models_in(info.annotation, f"{path}.{name}" if path else name):
                walk(sub, sub_path)

    walk(root, "")
    for sec in found.values():
        sec.base = next((b for b in sec.model.__mro__[1:] if b in found), None)
    return list(found.values())


def _type_name(t: Any) -> str:
    if t is type(None):
        return "null"
    if t is Any:
        return "any"
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    if isinstance(t, type) and issubclass(t, BaseModel):
        return "section"
    return getattr(t, "__name__", str(t))


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(its defaults)"
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return repr(value)


def _bounds(info: FieldInfo) -> str:
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    out = []
    for m in info.metadata:
        for attr, sign in signs.items():
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sign} {v:,}" if isinstance(v, int) and abs(v) >= 10_000 else f"{sign} {v}")
    return ", ".join(out)


def _source_comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the comment beside it in the class source (on its line, or the comment lines just above)."""
    try:
        lines = inspect.getsource(model).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    for ln in lines[1:]:
        s = ln.strip()
        m = re.match(r"^([A-Za-z_]\w*)\s*:", s)
        if s.startswith("#"):
            above.append(s.lstrip("#").strip())
            continue
        if m and m.group(1) in model.model_fields and ln.startswith("    ") and not ln.startswith("     "):
            trailing = s.split("  # ", 1)[1].strip() if "  # " in s else ""
            out[m.group(1)] = " ".join([*above, trailing]).strip()
        above = []
    return out


def _md(text: str) -> str:
    """Docstring / comment text as one Markdown table cell: RST roles and double backticks become code spans."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return " ".join(text.split()).replace("|", "\\|")


def _cell_code(text: str) -> str:
    return f"`{text}`".replace("|", "\\|")


def config_reference() -> str:
    """The configuration reference as Markdown."""
    sections = config_sections()
    parts = []
    for sec in sections:
        heading = ", ".join(f"`{p}`" for p in sec.paths) if sec.paths != [""] else "Top level"
        anchor = "config-" + (re.sub(r"[^a-z0-9]+", "-", sec.paths[0].lower()).strip("-") or "top")
        doc = inspect.getdoc(sec.model) or ""
        lines = [f"({anchor})=", f"## {heading}", "", _md(doc.split("\n\n")[0]) if doc else "", ""]
        if sec.base is not None:
            base = next(s for s in sections if s.model is sec.base)
            lines += [f"Also takes every field of {', '.join(f'`{p}`' for p in base.paths)} (listed there).", ""]
        comments = _source_comments(sec.model)
        lines += ["| field | type | default | allowed | description |", "|---|---|---|---|---|"]
        for name, info in sec.fields.items():
            desc = info.description or comments.get(name, "")
            lines.append(f"| {_cell_code(name)} | {_cell_code(_type_name(info.annotation))} | "
                         f"{_cell_code(_default(info))} | {_bounds(info)} | {_md(desc)} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def layers() -> str:
    """The import-linter contracts of pyproject.toml as Markdown."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    out = []
    for c in cfg.get("contracts", []):
        out += [f"**{c['name']}** ({c['type']})", ""]
        if c["type"] == "layers":
            out += [f"{i}. " + " \\| ".join(f"`{m.strip()}`" for m in layer.split("|"))
                    for i, layer in enumerate(c["layers"], 1)]
        elif c["type"] == "forbidden":
            out += [f"- {', '.join(f'`{m}`' for m in c['source_modules'])} may not import "
                    f"{', '.join(f'`{m}`' for m in c['forbidden_modules'])}"]
        else:
            out += [f"- `{k}`: {v}" for k, v in c.items() if k not in ("name", "type")]
        out.append("")
    return "\n".join(out)


def recipes() -> str:
    """The built-in recipes, each linking to its page."""
    from cmkd.recipes import RECIPES, list_recipes

    desc = list_recipes()
    return "\n".join(f"- [{name}]({name}.md): {_md(desc[name])}" for name in RECIPES) + "\n"


def _source_read(app: Any, docname: str, source: list[str]) -> None:
    for key in PLACEHOLDERS:
        marker = f"<!-- cmkd:{key} -->"
        if marker in source[0]:
            gen = {"config-reference": config_reference, "layers": layers, "recipes": recipes}[key]
            source[0] = source[0].replace(marker, gen())
            deps = {"config-reference": ["src/cmkd/config.py"], "layers": ["pyproject.toml"],
                    "recipes": ["src/cmkd/recipes/__init__.py"]}[key]
            for d in deps:
                app.env.note_dependency(str(ROOT / d))


def setup(app: Any) -> dict[str, Any]:
    """Register the page generator."""
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    app.connect("source-read", _source_read)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
