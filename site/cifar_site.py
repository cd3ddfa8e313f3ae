"""Sphinx extension of the tutorial's site: page actions, the language switch, figures that open
full size, and a Chinese search that finds whole words.

For each notebook page it puts into the page context: the committed notebook to download
(``notebooks/NN_name.<lang>.ipynb``, copied byte for byte by tools/build_site.py), a Colab link,
an "open an issue" link naming the page, an edit link to the notebook's source
``notebooks/src/NN_name.md``, and for every page the same page in the other language.

Every figure of a cell's output becomes a link to its own image file, so that on a phone it can be
opened full size and zoomed.

Chinese search: Sphinx's splitter keeps jieba's pieces of two characters or more, so 学习率 was
indexed as 学习 alone and a query for 学习率 found nothing. Here the index also holds jieba's
whole words, with the Chinese terms of ``notebooks/src/GLOSSARY.md`` added to its dictionary and
indexed wherever they occur, and a query is cut into the longest words that the index knows
(``SPLITTER``), the way jieba cut the text.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
GLOSSARY = ROOT / "notebooks" / "src" / "GLOSSARY.md"
LANG_DIRS = {"en": "en", "zh_CN": "zh"}
OTHER = {"en": ("zh", "中文", "中文"), "zh": ("en", "English", "EN")}
#: per action: the button's label, a shorter one for a phone's width (None: the same), the tooltip
LABELS = {
    "en": {"download": ("Download", None, "Download the notebook (.ipynb)"),
           "colab": ("Open in Colab", "Colab", "Open the notebook in Google Colab"),
           "issue": ("Report an issue", "Issue", "Report an issue with this page on GitHub"),
           "edit": ("Edit", None, "Edit the notebook's source on GitHub")},
    "zh": {"download": ("下载", None, "下载笔记本（.ipynb）"),
           "colab": ("在 Colab 中打开", "Colab", "在 Google Colab 中打开笔记本"),
           "issue": ("报告问题", None, "在 GitHub 上报告这一页的问题"),
           "edit": ("编辑", None, "在 GitHub 上编辑笔记本的源文件")},
}
FIGURE = {"en": ("Figure {n}", "Open the figure full size"),
          "zh": ("图 {n}", "打开原尺寸的图")}


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

    def action(key, url, icon, label, **more):
        text, short, tip = labels[key]
        return {"url": url, "text": text, "short": short, "title": tip, "icon": icon, "label": label, **more}
    context["page_actions"] = [
        action("download", f"{up}notebooks/{file}", "fas fa-download", "download-notebook", download=file),
        action("colab", f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{file}",
               "fas fa-rocket", "colab"),
        action("issue", f"https://github.com/{repo}/issues/new?title="
                        + quote(f"Notebook {file}: {title}") + "&body="
                        + quote(f"Page: {pagename}.html ({lang}), notebook notebooks/{file}\n\n"),
               "fas fa-bug", "issue"),
        action("edit", f"https://github.com/{repo}/edit/{branch}/notebooks/src/{pagename}.md",
               "fas fa-pencil-alt", "edit-source"),
    ]


# --- figures ------------------------------------------------------------------------------------

def link_figures(app, doctree, docname):
    """Wrap each image of a cell output in a link to the image file itself, and give it an alt
    text ("Figure 3") instead of myst-nb's file path."""
    from docutils import nodes
    from sphinx.util.osutil import relative_uri
    lang = LANG_DIRS.get(app.config.language, "en")
    alt, title = FIGURE[lang]
    n = 0
    for image in list(doctree.findall(nodes.image)):
        parent, in_output = image.parent, False
        while parent is not None:
            if "cell_output" in parent.get("classes", []):
                in_output = True
                break
            parent = parent.parent
        if not in_output or isinstance(image.parent, nodes.reference):
            continue
        n += 1
        if image.get("alt", "") in ("", image["uri"]):
            image["alt"] = alt.format(n=n)
        uri = image.get("candidates", {}).get("*", image["uri"])
        if uri not in app.env.images:
            continue
        target = relative_uri(app.builder.get_target_uri(docname),
                              f"{app.builder.imagedir}/{app.env.images[uri][1]}")
        link = nodes.reference("", "", refuri=target, reftitle=title, classes=["figure-link"])
        image.replace_self(link)
        link.append(image)


# --- Chinese search -----------------------------------------------------------------------------

#: JavaScript ``splitQuery`` of the Chinese search page (language_data.js): Latin runs stay whole;
#: a run of Chinese characters is cut into the longest words of the index, left to right; a
#: character that starts no word of the index is dropped, as the index drops one-character words.
SPLITTER = r"""
var splitQuery = (query) => {
  const index = (typeof Search !== "undefined" && Search._index) || {};
  const known = (w) => [index.terms, index.titleterms]
    .some((t) => t && Object.prototype.hasOwnProperty.call(t, w));
  const words = [];
  for (const chunk of query.split(/[^\p{Letter}\p{Number}_\p{Emoji_Presentation}]+/gu)) {
    for (const run of chunk.match(/\p{Script=Han}+|[^\p{Script=Han}]+/gu) || []) {
      if (!/\p{Script=Han}/u.test(run)) {
        words.push(run);
        continue;
      }
      let i = 0, unknown = "";
      while (i < run.length) {
        let j = run.length;
        while (j > i + 1 && !known(run.slice(i, j))) j--;
        if (j > i + 1 || known(run[i])) {
          if (unknown.length > 1) words.push(unknown);
          unknown = "";
          words.push(run.slice(i, j));
        } else {
          unknown += run[i];
        }
        i = j;
      }
      if (unknown.length > 1) words.push(unknown);
    }
  }
  return words;
};
"""


def glossary_terms(path: Path = GLOSSARY) -> list[str]:
    """The Chinese terms of GLOSSARY.md's tables (second column; "A / B" gives both)."""
    terms = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            cols = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and len(cols) >= 2 and cols[0] != "English" \
                    and re.search(r"[\u4e00-\u9fff]", cols[1]):
                terms += [t.strip() for t in cols[1].split("/") if len(t.strip()) > 1]
    return sorted(set(terms), key=lambda t: (-len(t), t))


def chinese_search(app):
    """Register the Chinese search language described above. It also names the English stemmer
    that Sphinx 9.0 ships for Chinese: 9.0's search JS asks for a ``ChineseStemmer`` that does not
    exist, so the search page never finishes (sphinx-doc/sphinx#14229, fixed in Sphinx 9.1)."""
    from sphinx.search.zh import SearchChinese
    base_name = SearchChinese.language_name
    stemmer_fix = SearchChinese.js_stemmer_rawcode == "english-stemmer.js" and base_name != "English"

    class SearchChineseWords(SearchChinese):
        language_name = "English" if stemmer_fix else base_name   # "window.Stemmer = EnglishStemmer"
        js_splitter_code = SPLITTER

        def __init__(self, options):
            super().__init__(options)
            self.terms = glossary_terms()
            try:
                import jieba
            except ImportError:
                return
            for term in self.terms:
                jieba.add_word(term)

        def split(self, input: str) -> list[str]:
            return super().split(input) + [t for t in self.terms if t in input]

    app.add_search_language(SearchChineseWords)


def setup(app):
    import conf   # REPO and BRANCH, the one repository setting
    chinese_search(app)
    app.add_config_value("site_repo", conf.REPO, "html")
    app.add_config_value("site_branch", conf.BRANCH, "html")
    app.connect("html-page-context", page_context)
    app.connect("doctree-resolved", link_figures)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
