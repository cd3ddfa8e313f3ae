"""Sphinx extension of the tutorial's site: per-page actions and the language switch.

For each notebook page it puts into the page context: the committed notebook to download
(``notebooks/NN_name.<lang>.ipynb``, copied byte for byte by tools/build_site.py), a Colab link,
an "open an issue" link naming the page, an edit link to the notebook's source
``notebooks/src/NN_name.md``, and for every page the same page in the other language.
"""

from __future__ import annotations

import re
from urllib.parse import quote

LANG_DIRS = {"en": "en", "zh_CN": "zh"}
OTHER = {"en": ("zh", "中文", "中文"), "zh": ("en", "English", "EN")}
LABELS = {
    "en": {"download": "Download notebook", "colab": "Open in Colab", "issue": "Report an issue",
           "edit": "Edit the source"},
    "zh": {"download": "下载笔记本", "colab": "在 Colab 中打开", "issue": "报告问题",
           "edit": "编辑源文件"},
}


def page_context(app, pagename, templatename, context, doctree):
    conf = app.config
    lang = LANG_DIRS.get(conf.language, "en")
    other, other_label, other_short = OTHER[lang]
    up = "../" * pagename.count("/")
    context["site_lang"] = lang
    context["other_lang"] = {"url": f"{up}../{other}/{pagename}.html", "label": other_label, "short": other_short,
                             "lang": "zh-CN" if other == "zh" else "en"}
    context["page_actions"] = []
    if not re.fullmatch(r"\d\d_\w+", pagename):
        return
    repo, branch = conf.site_repo, conf.site_branch
    file = f"{pagename}.{lang}.ipynb"
    labels = LABELS[lang]
    title = re.sub(r"<[^>]+>", "", context.get("title", pagename))
    context["page_actions"] = [
        {"url": f"{up}notebooks/{file}", "text": labels["download"], "icon": "fas fa-download",
         "label": "download-notebook", "download": file},
        {"url": f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{file}",
         "text": labels["colab"], "icon": "fas fa-rocket", "label": "colab"},
        {"url": f"https://github.com/{repo}/issues/new?title="
                + quote(f"Notebook {file}: {title}") + "&body="
                + quote(f"Page: {pagename}.html ({lang}), notebook notebooks/{file}\n\n"),
         "text": labels["issue"], "icon": "fas fa-bug", "label": "issue"},
        {"url": f"https://github.com/{repo}/edit/{branch}/notebooks/src/{pagename}.md",
         "text": labels["edit"], "icon": "fas fa-pencil-alt", "label": "edit-source"},
    ]


def chinese_search_fix(app):
    """Sphinx 9.0's Chinese search JS asks for a ``ChineseStemmer`` that does not exist (it ships
    the English one), so the search page never finishes: sphinx-doc/sphinx#14229, fixed in
    Sphinx 9.1 (#14416), which needs Python 3.12. Name the stemmer that is shipped."""
    from sphinx.search.zh import SearchChinese
    if SearchChinese.js_stemmer_rawcode == "english-stemmer.js" and SearchChinese.language_name != "English":
        class SearchChineseFixed(SearchChinese):
            language_name = "English"   # only used for "window.Stemmer = EnglishStemmer"
        app.add_search_language(SearchChineseFixed)


def setup(app):
    import conf   # REPO and BRANCH, the one repository setting
    chinese_search_fix(app)
    app.add_config_value("site_repo", conf.REPO, "html")
    app.add_config_value("site_branch", conf.BRANCH, "html")
    app.connect("html-page-context", page_context)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
