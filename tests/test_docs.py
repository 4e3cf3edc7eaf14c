"""The Python snippets of the README and of every docs page run as written, in order, and print what
the page says they print.

Conventions for the pages:

* Every ```python block runs; a page reads like a notebook (later blocks use earlier names), in a
  fresh temporary directory.
* A ```text block that follows a ```python block with nothing but blank lines between them is that
  block's expected output. It is compared with what the block prints as doctest compares (``...``
  matches any text, runs of whitespace are equal). A ```text block elsewhere (an error message, a
  command's output) is not checked here.
* A page whose later snippets take minutes (they train or load a run) says so with
  ``<!-- docs-test: slow -->`` on a line of its own before them: the snippets above the line run in
  the suite, the whole page with ``pytest -m slow``.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import re
import string
import sys
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SLOW_MARK = "<!-- docs-test: slow -->"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n?", flags=re.S | re.M)
CHECKER = doctest.OutputChecker()
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def snippets(text: str) -> list[tuple[str, str | None]]:
    """``(code, expected output or None)`` for every ```python block of a page."""
    blocks = [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]
    found = []
    for i, (language, body, _, end) in enumerate(blocks):
        if language != "python":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        is_output = following is not None and following[0] == "text" and not text[end : following[2]].strip()
        found.append((body, following[1] if is_output else None))
    return found


def _page_params(page: Path) -> list:
    """The page's fast part (above its slow mark, or all of it) and, if marked, the whole page as slow."""
    text = page.read_text()
    if SLOW_MARK not in text:
        return [pytest.param(page, text, id=page.name)]
    fast = pytest.param(page, text.split(SLOW_MARK)[0], id=f"{page.name}-fast")
    return [fast, pytest.param(page, text, id=page.name, marks=[pytest.mark.slow])]


@pytest.mark.parametrize("page, text", [param for page in PAGES for param in _page_params(page)])
def test_page_snippets_print_what_the_page_shows(page, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets may write files (figures, checkpoints, ONNX models)
    namespace: dict = {"__name__": "__docs__"}
    for number, (code, expected) in enumerate(snippets(text), start=1):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{page.name}, python block {number}", "exec"), namespace)
        if expected is not None and not CHECKER.check_output(expected, printed.getvalue(), OPTIONS):
            pytest.fail(
                f"{page.name}, python block {number} printed\n{printed.getvalue()}\n"
                f"but the page shows\n{expected}",
                pytrace=False,
            )


def test_snippet_parser_pairs_outputs_with_their_blocks():
    page = "```python\nprint(1)\n```\n\n```text\n1\n```\nprose\n```python\nx = 2\n```\nprose\n```text\nnot output\n```\n"
    assert snippets(page) == [("print(1)\n", "1\n"), ("x = 2\n", None)]


def test_a_wrong_output_fails(tmp_path, monkeypatch):
    code, expected = snippets("```python\nprint(1 + 1)\n```\n```text\n3\n```\n")[0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    assert not CHECKER.check_output(expected, printed.getvalue(), OPTIONS)


def test_the_documented_minimum_torch_for_onnx_is_the_extras_and_is_installed():
    export_page = (ROOT / "docs" / "export.md").read_text()
    (documented,) = re.findall(r"requires \*\*PyTorch ≥ ([\d.]+)\*\*", export_page)
    (extra,) = re.findall(r"^onnx = \[(.*)\]", (ROOT / "pyproject.toml").read_text(), flags=re.M)
    (torch_requirement,) = [Requirement(r) for r in re.findall(r'"([^"]+)"', extra) if r.startswith("torch")]
    assert str(torch_requirement.specifier) == f">={documented}"
    assert torch.torch_version.TorchVersion(torch.__version__) >= documented


def test_every_api_heading_is_reachable_as_written_or_its_import_is_shown():
    """``::: a.b.c`` headings show the dotted name; a reader must be able to use it (``import a.b`` then
    ``a.b.c``) or, where a heading hides its path, find the ``from ... import`` form on the page."""
    for page in PAGES:
        text = page.read_text()
        for path, options in re.findall(r"^::: ([\w.]+)\n((?:    .*\n)*)", text, flags=re.M):
            parts = path.split(".")
            module, name = ".".join(parts[:-1]), parts[-1]
            assert hasattr(importlib.import_module(module), name), f"{page.name}: {path} does not exist"
            if "show_root_full_path: false" in options:
                public = re.findall(rf"from ([\w.]+) import [^`\n]*\b{name}\b", text)
                assert public, f"{page.name}: {path} hides its path but the page shows no import of {name}"
                assert all(hasattr(importlib.import_module(m), name) for m in public), page.name
                continue
            for i in range(len(parts), 0, -1):  # import the longest module prefix, as a reader would
                with contextlib.suppress(ImportError):
                    importlib.import_module(".".join(parts[:i]))
                    break
            obj = importlib.import_module(parts[0])
            for part in parts[1:]:
                assert hasattr(obj, part), f"{page.name}: `{path}` is not reachable as an attribute"
                obj = getattr(obj, part)


def test_erf_help_states_each_presets_true_input_size(capsys):
    from recconv.cli import main
    from recconv.models import PRESETS

    with pytest.raises(SystemExit):
        main(["erf", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    groups = help_text.split("models, their preset's input: ", 1)[1].split(")", 1)[0].split("; ")
    stated = {
        name: size for size, names in (g.split(" for ", 1) for g in groups) for name in names.split(", ")
    }
    assert stated == {name: "x".join(map(str, p.input_size[1:])) for name, p in PRESETS.items()}


@pytest.fixture(scope="module")
def check_site():
    sys.path.insert(0, str(ROOT / "docs" / "scripts"))
    try:
        import check_site
    finally:
        sys.path.remove(str(ROOT / "docs" / "scripts"))
    return check_site


def _rendered(check_site, html: str):
    page = check_site.RenderedPage()
    page.feed(html)
    return page


def test_site_check_finds_raw_tex_and_passes_typeset_formulas(check_site):
    typeset = (
        '<p>a <span class="arithmatex"><span class="katex">x</span></span> and <code>\\(kept\\)</code></p>'
    )
    assert _rendered(check_site, typeset).raw_tex == []
    raw = _rendered(check_site, '<div class="arithmatex">\\[ f_0 = x \\]</div><p>$$y$$</p>')
    assert len(raw.raw_tex) == 3  # the untypeset formula, its \[ and the $$ in the text
    assert _rendered(check_site, '<span class="katex-error" title="ParseError">\\frac</span>').raw_tex


def test_site_check_collects_links_images_anchors_and_resources(check_site):
    page = _rendered(
        check_site,
        '<h2 id="costs">Costs</h2><a href="../layer/#options">x</a><img src="figures/a.png">'
        '<script src="https://cdn.example/mathjax.js"></script><link rel="stylesheet" href="k.css">',
    )
    assert (page.ids, page.links, page.images) == ({"costs"}, ["../layer/#options"], ["figures/a.png"])
    assert page.resources == ["https://cdn.example/mathjax.js", "k.css"]


def test_site_check_without_chromium_fails_unless_told_to_skip(check_site, tmp_path, monkeypatch, capsys):
    (tmp_path / "index.html").write_text("<html></html>")
    monkeypatch.setattr(check_site, "find_chromium", lambda: None)
    assert check_site.main([str(tmp_path)]) == 2
    assert "no Chromium found" in capsys.readouterr().err
    assert check_site.main([str(tmp_path), "--if-available"]) == 0
    assert "skipped" in capsys.readouterr().out


def test_the_performance_page_keeps_the_benchmarks_header_word_for_word():
    """benchmarks/bench_recconv.py --write-docs rewrites docs/performance.md from its header template:
    an edit made to the page alone would be lost at the next run."""
    header = (ROOT / "benchmarks" / "performance_header.md").read_text()
    pattern = "".join(
        re.escape(literal) + ("" if field is None else "(.*?)")
        for literal, field, _, _ in string.Formatter().parse(header)
    )
    assert re.fullmatch(pattern + ".*", (ROOT / "docs" / "performance.md").read_text(), flags=re.S)
