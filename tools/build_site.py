"""Build the tutorial's web site: one Sphinx build per language, from the committed notebooks.

    python tools/build_site.py            # -> _site/html/index.html, _site/html/en/, _site/html/zh/

Nothing is executed: the pages show the outputs stored in ``notebooks/NN_name.{en,zh}.ipynb``
(myst-nb with ``nb_execution_mode = "off"``), so building needs neither a kernel nor torch.
Each language gets a staging copy of its notebooks in ``_site/src/<lang>/`` where the site differs
from GitHub: the navigation cells (tag ``nav``, or the first/last Markdown line linking to the
README) are dropped, the run time and hardware from ``metadata["tutorial"]`` are shown under
the title, and outputs no browser can show (``application/json`` metrics) are left out. The
download button serves the committed notebook itself, byte for byte, from ``<lang>/notebooks/``.
Sphinx warnings are errors. Configuration: ``site/conf.py`` (``REPO``, ``BRANCH``).
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS, DOCS, SITE = ROOT / "notebooks", ROOT / "docs", ROOT / "site"
LANGS = {"en": "en", "zh": "zh_CN"}           # folder -> Sphinx language
DOC_PAGES = ("benchmarks", "reliability")     # docs/<name>.md, English in both sites (zh: labelled so)
NAV_LINK = re.compile(r"\]\(\.\./README\.md(#[^)]*)?\)")
VISIBLE = ("text/plain", "text/html", "image/png", "image/jpeg", "image/svg+xml", "text/markdown",
           "text/latex")
UNTITLED: list[str] = []                      # notebooks without a "# " title, found while staging
TEXT = {
    "en": {"index_title": "CIFAR-10 with PyTorch: an executable tutorial",
           "intro": "PyTorch's classic lesson *Training a Classifier* as notebooks that run top to "
                    "bottom, then further: training fast, on GPUs and with a modern recipe. Each page "
                    "shows a notebook with the outputs of its stored run; download it, or open it in "
                    "Colab, from the buttons at the top of the page.",
           "notebooks": "Notebooks", "more": "More", "run": "Stored run", "docs": {},
           "run_text": "The outputs below come from a run of {secs} on {hw}."},
    "zh": {"index_title": "PyTorch 训练 CIFAR-10：可执行教程",
           "intro": "PyTorch 经典教程「训练一个图像分类器」的可执行版本：按编号排列、可以从头运行到尾的"
                    "笔记本，再进一步讲快速训练、GPU 与现代训练方法。每一页是一个笔记本及其保存的输出；"
                    "页面顶部的按钮可以下载笔记本，或在 Colab 中打开。",
           "notebooks": "笔记本", "more": "更多", "run": "保存的运行",
           "docs": {"benchmarks": "测量结果（英文）", "reliability": "可靠的运行（英文）"},
           "run_text": "下面的输出来自一次运行：用时 {secs}，硬件 {hw}。"},
}


def lessons(lang: str) -> list[Path]:
    """The committed notebooks of one language, in lesson order."""
    return sorted(NOTEBOOKS.glob(f"[0-9][0-9]_*.{lang}.ipynb"))


def page_name(path: Path) -> str:
    """``01_data.en.ipynb`` -> ``01_data``: the same page name in both languages."""
    return path.name.split(".")[0]


def is_nav(cell) -> bool:
    return cell.cell_type == "markdown" and ("nav" in cell.metadata.get("tags", [])
                                             or (NAV_LINK.search(cell.source) is not None
                                                 and len(cell.source.strip().splitlines()) == 1))


def duration(seconds: float, lang: str) -> str:
    minutes = seconds / 60
    if lang == "zh":
        return f"{seconds:.0f} 秒" if seconds < 90 else f"约 {minutes:.0f} 分钟"
    return f"{seconds:.0f} s" if seconds < 90 else f"about {minutes:.0f} min"


def site_link(target: str, doc_pages: set[str]) -> str:
    """A link of the notebooks' Markdown, as it must read on the site."""
    path, _, anchor = target.partition("#")
    name = Path(path).name
    if re.fullmatch(r"\d\d_\w+\.(en|zh)\.ipynb", name):
        return name.split(".")[0] + ".ipynb" + (f"#{anchor}" if anchor else "")
    if path.startswith("../docs/") and Path(path).stem in doc_pages:
        return Path(path).stem + ".md" + (f"#{anchor}" if anchor else "")
    return target


def stage_notebook(src: Path, lang: str, doc_pages: set[str]) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nbformat.read(str(src), as_version=4))
    nb.cells = [c for c in nb.cells if not is_nav(c)]
    if not any(c.cell_type == "markdown" and re.search(r"^# \S", c.source, re.M) for c in nb.cells):
        UNTITLED.append(src.name)   # a page needs a title; --draft gives it its file name
        title = nbformat.v4.new_markdown_cell(f"# {src.name.split('.')[0]} (untitled)")
        title.id = "site-untitled"
        nb.cells.insert(0, title)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = re.sub(r"\]\(([^)\s]+)\)",
                                 lambda m: f"]({site_link(m.group(1), doc_pages)})", cell.source)
        elif cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.output_type == "stream"
                            or o.output_type == "error" or any(k in VISIBLE for k in o.get("data", {}))]
    run = nb.metadata.get("tutorial")
    if run and "run_seconds" in run and "hardware" in run:
        first_md = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown")
        text = TEXT[lang]["run_text"].format(secs=duration(float(run["run_seconds"]), lang),
                                             hw=run["hardware"])
        note = nbformat.v4.new_markdown_cell(
            f"```{{admonition}} {TEXT[lang]['run']}\n:class: run-info\n\n{text}\n```")
        note.id = "site-run-info"
        nb.cells.insert(first_md + 1, note)
    return nb


def stage(lang: str, out: Path) -> list[str]:
    """Write the Sphinx source folder of one language; returns the notebook page names."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    doc_pages = {d for d in DOC_PAGES if (DOCS / f"{d}.md").exists()}
    pages = []
    for src in lessons(lang):
        name = page_name(src)
        nbformat.write(stage_notebook(src, lang, doc_pages), str(out / f"{name}.ipynb"))
        pages.append(name)
    for d in sorted(doc_pages):
        shutil.copyfile(DOCS / f"{d}.md", out / f"{d}.md")
    t = TEXT[lang]
    toc = lambda caption, names: (f"```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n"
                                  + "\n".join(names) + "\n```\n")
    docs = [f"{t['docs'][d]} <{d}>" if d in t["docs"] else d for d in sorted(doc_pages)]
    (out / "index.md").write_text(f"# {t['index_title']}\n\n{t['intro']}\n\n"
                                  + toc(t["notebooks"], pages) + "\n" + toc(t["more"], docs),
                                  encoding="utf-8")
    return pages


def build(lang: str, site: Path) -> int:
    from sphinx.cmd.build import build_main
    src, html = site / "src" / lang, site / "html" / lang
    stage(lang, src)
    shutil.rmtree(html, ignore_errors=True)
    code = build_main(["-b", "html", "-W", "--keep-going", "-q", "-c", str(SITE),
                       "-D", f"language={LANGS[lang]}", "-d", str(site / "doctrees" / lang),
                       str(src), str(html)])
    if code == 0:   # the download button's file: the committed notebook itself
        (html / "notebooks").mkdir(exist_ok=True)
        for nb in lessons(lang):
            shutil.copyfile(nb, html / "notebooks" / nb.name)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_site", help="build folder (default _site)")
    parser.add_argument("--lang", choices=sorted(LANGS), action="append", help="only this language")
    parser.add_argument("--draft", action="store_true",
                        help="build even if a notebook has no title (it gets its file name)")
    args = parser.parse_args(argv)
    start = time.time()
    for lang in args.lang or list(LANGS):
        if build(lang, args.out):
            print(f"build_site: the {lang} build failed (warnings are errors)", file=sys.stderr)
            return 1
    (args.out / "html").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "html" / "jupyter_execute", ignore_errors=True)   # myst-nb's scratch
    shutil.copyfile(SITE / "root_index.html", args.out / "html" / "index.html")
    (args.out / "html" / ".nojekyll").touch()
    if UNTITLED:
        print("build_site: no '# ' title in " + ", ".join(UNTITLED)
              + (" (--draft: titled by file name)" if args.draft else ""), file=sys.stderr)
        if not args.draft:
            return 1
    print(f"build_site: {args.out / 'html' / 'index.html'} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
