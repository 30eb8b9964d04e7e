"""The documentation site: it builds with warnings as errors (so every MyST link and cross-reference resolves and
every autodoc'd docstring parses), the configuration reference names every field of the schema, the README's
relative links point at files that exist, and the generated result tables are up to date."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def config_fields() -> set[tuple[str, str]]:
    """(model name, field name) for every field of ExperimentConfig and of every model nested in it, at any depth
    (inside dicts, lists and optionals too)."""
    from cmkd.config import ExperimentConfig

    def models_in(t: object) -> list[type[BaseModel]]:
        if isinstance(t, type) and issubclass(t, BaseModel):
            return [t]
        return [m for a in typing.get_args(t) for m in models_in(a)]

    seen: set[type[BaseModel]] = set()
    out: set[tuple[str, str]] = set()
    todo: list[type[BaseModel]] = [ExperimentConfig]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            out.add((model.__name__, name))
            todo += models_in(info.annotation)
    return out


def test_walk_finds_the_nested_models() -> None:
    names = {m for m, _ in config_fields()}
    assert {"ExperimentConfig", "DataConfig", "ModalitySpec", "TargetSpec", "ModelConfig", "TeacherSpec",
            "DistillConfig"} <= names


def test_generated_reference_has_a_row_per_field() -> None:
    """Fast check of the generator (no Sphinx): a table row for every field of every model."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import cmkd_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    text = cmkd_docs.config_reference()
    rows = set(re.findall(r"^\| `([A-Za-z_]\w*)` \|", text, flags=re.M))
    missing = {f for _, f in config_fields()} - rows
    assert not missing, f"configuration reference lacks rows for {sorted(missing)}"
    for sec in cmkd_docs.config_sections():  # each model's own fields in its own section
        block = text.split(f"## {', '.join(f'`{p}`' for p in sec.paths) if sec.paths != [''] else 'Top level'}\n")[1]
        block = block.split("\n## ")[0]
        assert all(f"| `{f}` |" in block for f in sec.fields), sec.model.__name__


def _relative_links(md: str) -> list[str]:
    md = re.sub(r"```.*?```", "", md, flags=re.S)  # not inside code blocks
    links = re.findall(r"\]\(([^)\s]+)\)", md) + re.findall(r'(?:src|href)="([^"]+)"', md)
    return [u for u in links if not re.match(r"^[a-z][a-z0-9+.-]*:", u) and not u.startswith("#")]


def test_readme_relative_links_exist() -> None:
    links = _relative_links((ROOT / "README.md").read_text())
    assert links, "README links into docs/"
    broken = [u for u in links if not (ROOT / u.split("#", 1)[0]).exists()]
    assert not broken, f"README.md links to missing files: {broken}"
    assert any(u.startswith("docs/") for u in links)


def test_client_example_is_the_same_in_the_docs() -> None:
    """tests/test_runtime.py runs the README's copy; the docs page must show the same code."""
    pat = r"<!-- client-example -->\s*```python\n(.*?)```"
    readme = re.search(pat, (ROOT / "README.md").read_text(), re.S)
    page = re.search(pat, (DOCS / "edge-model.md").read_text(), re.S)
    assert readme and page
    assert readme.group(1) == page.group(1)


def test_generated_tables_are_up_to_date() -> None:
    """README's headline table and docs/results.md are what benchmarks/readme_sections.py writes."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "readme_sections.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"run `python benchmarks/readme_sections.py`:\n{r.stdout}{r.stderr}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs-html")
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                        "-d", str(out / ".doctrees"), str(DOCS), str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, f"sphinx-build -W failed:\n{r.stdout[-3000:]}{r.stderr[-6000:]}"
    return out


@pytest.mark.slow
def test_docs_build_without_warnings(site: Path) -> None:
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    for md in DOCS.rglob("*.md"):
        if "_build" not in md.parts:
            assert md.relative_to(DOCS).with_suffix(".html").as_posix() in pages, md


@pytest.mark.slow
def test_configuration_page_names_every_field(site: Path) -> None:
    html = (site / "configuration.html").read_text()
    missing = sorted({f"{m}.{f}" for m, f in config_fields() if f'<span class="pre">{f}</span>' not in html})
    assert not missing, f"configuration.html lacks {missing}"


@pytest.mark.slow
def test_api_pages_render_the_docstrings(site: Path) -> None:
    """autodoc found the public API (a module that fails to import would leave these out, and -W would fail)."""
    loop = (site / "training-loop.html").read_text()
    edge = (site / "edge-model.html").read_text()
    for name in ("MultimodalNet", "CompositeLoss", "task_loss", "kd_loss", "feature_loss", "relation_loss",
                 "contrastive_loss", "run"):
        assert f'id="cmkd.{name}"' in loop, name
    for name in ("runtime.EdgeModel", "runtime.load_npz", "export.sidecar.write_card"):
        assert f'id="cmkd.{name}"' in edge, name
