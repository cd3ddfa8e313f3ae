"""Sphinx configuration of the tutorial's web site (both languages; built by tools/build_site.py).

The language comes from the command line (``-D language=en`` or ``-D language=zh_CN``); every
link to the repository is made from REPO and BRANCH below.
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _repository() -> str:
    """GitHub owner/name from pyproject.toml's ``[project.urls] Repository``, the one address of
    the repository (the notebooks' install cell and the README use it too)."""
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^Repository\s*=\s*"https://github\.com/([^/"]+/[^/"]+?)(?:\.git)?/?"', text, re.M)
    if not m:
        raise RuntimeError("pyproject.toml has no [project.urls] Repository = \"https://github.com/OWNER/NAME\"")
    return m.group(1)


# Download, Colab, issue and edit links are built from these.
REPO = _repository()       # GitHub owner/name
BRANCH = "main"

project = "CIFAR-10 with PyTorch"
author = "the tutorial's authors"
copyright = "the tutorial's authors, BSD-3-Clause"
language = "en"

extensions = ["myst_nb", "sphinx_copybutton", "cifar_site"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["cifar_site.css"]

# Notebooks are shown with their stored outputs, never executed.
nb_execution_mode = "off"
nb_merge_streams = True
nb_ipywidgets_js = {}          # no widget scripts from a CDN
# MathJax (from a CDN) is added only to pages with math, and the lessons have none; the browser
# tests fail if a page ever asks another host for anything.
myst_heading_anchors = 3        # [text](#a-heading) links in Markdown resolve

html_theme = "sphinx_book_theme"
html_title = "CIFAR-10 with PyTorch"
html_show_sourcelink = False
html_copy_source = True         # search result snippets read _sources/
html_last_updated_fmt = None
html_context = {"default_mode": "auto"}   # a first visit follows the system; the switch is remembered
html_theme_options = {
    "use_download_button": False,       # cifar_site adds one for the committed notebook
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "article_header_end": ["page-actions.html", "article-header-buttons.html"],
}
copybutton_selector = "div.cell_input div.highlight pre, div.highlight-bash pre, div.highlight-python pre"
copybutton_exclude = ".linenos, .gp, .go"

try:                              # the Chinese search index splits words with jieba: quietly
    import logging
    import jieba
    jieba.setLogLevel(logging.WARNING)
except ImportError:
    pass
