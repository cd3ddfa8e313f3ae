"""Build the tutorial's web site: one Sphinx build per language, from the committed notebooks.

    python tools/build_site.py            # -> _site/html/index.html, _site/html/en/, _site/html/zh/

Nothing is executed: the pages show the outputs stored in ``notebooks/NN_name.{en,zh}.ipynb``
(myst-nb with ``nb_execution_mode = "off"``), so building needs neither a kernel nor torch.
Each language gets a staging copy of its notebooks in ``_site/src/<lang>/`` where the site differs
from GitHub: the navigation cells (tag ``nav``, or the first/last Markdown line linking to the
README) are dropped, the run time and hardware from ``metadata["tutorial"]`` are shown under
the title, and outputs no browser can show (``application/json`` metrics) are left out. The
download button serves the committed notebook itself, byte for byte, from ``<lang>/notebooks/``.
The front page lists the lessons, numbered, each with its one-line description (``LESSONS``
below), the run time and hardware of its stored run, and says how to run them; the pages of
``docs/`` named in ``DOC_PAGES`` follow, in English in both sites. Sphinx warnings are errors.
Configuration: ``site/conf.py`` (``REPO``, ``BRANCH``); the Chinese search dictionary comes from
``notebooks/src/GLOSSARY.md`` (``site/cifar_site.py``).
"""

from __future__ import annotations

import argparse
import copy
import html
import re
import shutil
import sys
import time
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS, DOCS, SITE = ROOT / "notebooks", ROOT / "docs", ROOT / "site"
LANGS = {"en": "en", "zh": "zh_CN"}           # folder -> Sphinx language
DOC_PAGES = ("teachers", "benchmarks", "reliability")   # docs/<name>.md, English in both sites
NAV_LINK = re.compile(r"\]\(\.\./README\.md(#[^)]*)?\)")
VISIBLE = ("text/plain", "text/html", "image/png", "image/jpeg", "image/svg+xml", "text/markdown",
           "text/latex")
UNTITLED: list[str] = []                      # notebooks without a "# " title, found while staging
#: The clone-and-run commands, the same in both languages' "How to run".
CLONE_BLOCK = """```bash
git clone {url}
cd {folder}
make run    # install into .venv, then run every notebook (downloads CIFAR-10 first)
make test   # install into .venv, then the tests
```"""
TEXT = {
    "en": {"index_title": "CIFAR-10 with PyTorch: an executable tutorial",
           "intro": "PyTorch's classic lesson *Training a Classifier* as notebooks that run top to "
                    "bottom, then further: training fast, on GPUs and with a modern recipe. Each page "
                    "shows a notebook with the outputs of its stored run; download it, or open it in "
                    "Colab, from the buttons at the top of the page.",
           "notebooks": "Notebooks", "more": "More", "run": "Stored run", "docs": {},
           "lessons": "The lessons",
           "run_text": "The outputs below come from a run of {secs} on {hw}.",
           "index_run": "Stored run: {secs} on {hw}",
           "how": "How to run",
           "how_text": """**In Colab or Kaggle, with nothing to install.** Open a lesson and press **Open in
Colab** at the top of its page, then run all cells. Every notebook runs alone: it downloads
CIFAR-10 and trains the model it needs, and a notebook that uses the tutorial's helper package
installs it in its first cell. For notebooks 06–08, choose a GPU: *Runtime → Change runtime type*.

**One notebook on your computer.** Press **Download** at the top of a lesson's page and open the
file in Jupyter, in a Python {python} environment with PyTorch:

```bash
pip install torch torchvision matplotlib jupyterlab
jupyter lab 01_data.en.ipynb
```

To install the helper package yourself: `pip install "{spec}"` (for notebook 09, write
`cifar_helpers[export]`: it adds ONNX and ONNX Runtime).

**The whole course.** Clone the repository and use its two commands:

{clone_block}

Each takes about half an hour on a 2-core CPU. Running the notebooks with other parameters, and
what the tests check: [For teachers](teachers.md).
"""},
    "zh": {"index_title": "PyTorch 训练 CIFAR-10：可执行教程",
           "intro": "PyTorch 经典教程「训练一个图像分类器」的可执行版本：按编号排列、可以从头运行到尾的"
                    "笔记本，再进一步讲快速训练、GPU 与现代训练方法。每一页是一个笔记本及其保存的输出；"
                    "页面顶部的按钮可以下载笔记本，或在 Colab 中打开。",
           "notebooks": "笔记本", "more": "更多", "run": "保存的运行",
           "docs": {"teachers": "给教师（英文）", "benchmarks": "测量结果（英文）",
                    "reliability": "可靠的运行（英文）"},
           "lessons": "课程",
           "run_text": "下面的输出来自一次运行：用时 {secs}，硬件 {hw}。",
           "index_run": "保存的运行：用时 {secs}，硬件 {hw}",
           "how": "如何运行",
           "how_text": """**在 Colab 或 Kaggle 中运行，什么都不用装**。打开一课，按页面顶部的**在 Colab 中打开**，然后运行全部单元格。每个笔记本都能单独运行：它会下载 CIFAR-10、训练它需要的模型；用到本教程辅助包的笔记本会在第一个代码单元格里安装它。笔记本 06–08 请选用 GPU：*代码执行程序 → 更改运行时类型*。

**在自己的电脑上运行一个笔记本**。按页面顶部的**下载**，在装有 PyTorch 的 Python {python} 环境里用 Jupyter 打开：

```bash
pip install torch torchvision matplotlib jupyterlab
jupyter lab 01_data.zh.ipynb
```

自己安装辅助包：`pip install "{spec}"`（笔记本 09 请写 `cifar_helpers[export]`：它还会装上 ONNX 和 ONNX Runtime）。

**运行整个课程**。克隆仓库，然后用它的两条命令：

{clone_block}

在双核 CPU 上每条命令各需约半小时。用别的参数运行笔记本、测试检查什么：见[给教师（英文）](teachers.md)。
"""},
}
#: Each lesson's line on the front page, per language; a lesson missing here fails the build.
LESSONS = {
    "01_data": ("Load CIFAR-10 with torchvision, look at the images, normalize them and draw "
                "mini-batches with a DataLoader.",
                "用 torchvision 加载 CIFAR-10，看看图片，做归一化，再用 DataLoader 取小批量。"),
    "02_network": ("Define the convolutional network `Net` and follow a batch's shape through "
                   "each layer.",
                   "定义卷积神经网络 `Net`，逐层跟踪一个批次的形状。"),
    "03_training": ("Train it: loss function, optimizer with momentum, and the training loop with "
                    "its running loss; save the model.",
                    "训练网络：损失函数、带动量的优化器、打印累计损失的训练循环；保存模型。"),
    "04_evaluation": ("Measure it on the test set: accuracy overall and per class, the confusion "
                      "matrix, the mistakes.",
                      "在测试集上评估：总体与各类别的准确率、混淆矩阵、错例。"),
    "05_speed": ("Where a CPU's time goes, and the same accuracy in a fraction of it: data in "
                 "memory, larger batches, learning-rate schedule.",
                 "CPU 的时间花在哪里，怎样只用一小部分时间达到同样的准确率：数据常驻内存、"
                 "更大的批大小、学习率调度。"),
    "06_gpu": ("Move the model and every batch to a GPU, and see when a GPU is faster.",
               "把模型和每一批数据移到 GPU 上，看看 GPU 什么时候更快。"),
    "07_multi_gpu": ("Data parallelism: `DataParallel` taken apart, and a DDP script launched with "
                     "`torchrun`.",
                     "数据并行：拆解 `DataParallel`，用 `torchrun` 启动一个 DDP 脚本。"),
    "08_modern_recipe": ("A modern network and recipe: whitening, BatchNorm, data augmentation, "
                         "Muon, test-time augmentation.",
                         "现代网络与配方：白化、BatchNorm、数据增强、Muon、测试时增强。"),
    "09_use_the_model": ("Use the model: classify your own pictures, calibrate its confidence, "
                         "export it to ONNX.",
                         "使用模型：给自己的图片分类，校准置信度，导出为 ONNX。"),
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


def no_gaps(text: str) -> str:
    """No space between two Chinese characters (``用时 约 2 分钟`` -> ``用时约 2 分钟``)."""
    return re.sub(r"(?<=[\u4e00-\u9fff]) +(?=[\u4e00-\u9fff])", "", text)


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
        text = no_gaps(TEXT[lang]["run_text"].format(secs=duration(float(run["run_seconds"]), lang),
                                                     hw=run["hardware"]))
        note = nbformat.v4.new_markdown_cell(
            f"```{{admonition}} {TEXT[lang]['run']}\n:class: run-info\n\n{text}\n```")
        note.id = "site-run-info"
        nb.cells.insert(first_md + 1, note)
    return nb


def package() -> dict[str, str]:
    """What the front page's install instructions name, from pyproject.toml: the pip spec of the
    package at its release tag (as the notebooks' install cell has it), the repository, Python."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    url = meta["urls"]["Repository"]
    return {"spec": f"{meta['name']} @ git+{url}@v{meta['version']}", "url": url,
            "folder": url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"),
            "python": meta.get("requires-python", ">=3.11").replace(">=", "") + "+"}


def lesson_line(src: Path, lang: str) -> str:
    """One lesson on the front page: number, title (a link), description, its stored run."""
    nb = nbformat.read(str(src), as_version=4)
    name, t = page_name(src), TEXT[lang]
    title = next((m.group(1).strip() for c in nb.cells if c.cell_type == "markdown"
                  for m in [re.search(r"^# (.+)$", c.source, re.M)] if m), name)
    if name not in LESSONS:
        raise SystemExit(f"build_site: {name} has no line on the front page: add it to LESSONS "
                         "in tools/build_site.py")
    line = f"- **{name[:2]}** · [{title}]({name}.ipynb)\\\n  {LESSONS[name][lang == 'zh']}"
    run = nb.metadata.get("tutorial") or {}
    if "run_seconds" in run and "hardware" in run:
        text = no_gaps(t["index_run"].format(secs=duration(float(run["run_seconds"]), lang),
                                             hw=run["hardware"]))
        line += f'\\\n  <span class="lesson-run">{html.escape(text)}</span>'
    return line


def stage(lang: str, out: Path) -> list[str]:
    """Write the Sphinx source folder of one language; returns the notebook page names."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    doc_pages = [d for d in DOC_PAGES if (DOCS / f"{d}.md").exists()]
    pages = []
    for src in lessons(lang):
        name = page_name(src)
        nbformat.write(stage_notebook(src, lang, set(doc_pages)), str(out / f"{name}.ipynb"))
        pages.append(name)
    for d in doc_pages:
        shutil.copyfile(DOCS / f"{d}.md", out / f"{d}.md")
    t = TEXT[lang]
    toc = lambda caption, names: (f"```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n:hidden:\n\n"
                                  + "\n".join(names) + "\n```\n")
    docs = [f"{t['docs'][d]} <{d}>" if d in t["docs"] else d for d in doc_pages]
    lines = "\n".join(lesson_line(src, lang) for src in lessons(lang))
    (out / "index.md").write_text(
        f"# {t['index_title']}\n\n{t['intro']}\n\n"
        + toc(t["notebooks"], pages) + "\n" + toc(t["more"], docs)
        + f"\n## {t['lessons']}\n\n```{{rst-class}} lessons\n```\n\n{lines}\n\n"
        + f"## {t['how']}\n\n" + t["how_text"].format(clone_block=CLONE_BLOCK.format(**package()), **package()),
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
