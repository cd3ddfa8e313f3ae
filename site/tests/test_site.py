"""Browser tests of the built web site (``python tools/build_site.py`` or ``make site`` first).

    python -m pytest site/tests                 # the site in _site/html, Chromium at /usr/bin/chromium
    SITE_DIR=/tmp/copy/html CHROMIUM=/path/to/chromium python -m pytest site/tests

The site is served from a local http.server thread on 127.0.0.1 and read in headless Chromium
driven by Playwright (its own browser download is never used). A missing build, browser or
Playwright fails the tests with a message saying how to get it. Expectations come from the
committed notebooks: the pages, their order, the number of outputs and figures, the download.
Every page is read twice, at a phone's width (375 px) and at a laptop's (1280 px, where axe-core
checks its accessibility); the screenshots to look at go to ``_site/screenshots/``, and axe's
summary for the whole site to ``_site/screenshots/axe-summary.json``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("SITE_DIR", ROOT / "_site" / "html")).resolve()
SHOTS = Path(os.environ.get("SITE_SCREENSHOTS", SITE.parent / "screenshots"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LANGS = {"en": "en", "zh": "zh-CN"}
DOC_PAGES = ("teachers", "benchmarks", "reliability")
NAV_LINK = re.compile(r"\]\(\.\./README\.md(#[^)]*)?\)")
VISIBLE = ("text/plain", "text/html", "image/png", "image/jpeg", "image/svg+xml", "text/markdown",
           "text/latex")
IMAGES = ("image/png", "image/jpeg", "image/svg+xml")
#: (language, query, the page that must be among the results)
SEARCHES = [("en", "DataLoader", "01_data"), ("en", "torchrun", "07_multi_gpu"),
            ("en", "channels_last", "05_speed"), ("zh", "DataLoader", "01_data"),
            ("zh", "torchrun", "07_multi_gpu"), ("zh", "channels_last", "05_speed"),
            ("zh", "归一化", "01_data"), ("zh", "混淆矩阵", "04_evaluation")]
NONSENSE = "qxzvjkwplmorbfut"
#: Core terms: a search for each finds every page whose text contains it (notebooks/src/GLOSSARY.md)
CORE_TERMS = {
    "zh": ["优化器", "学习率", "损失函数", "反向传播", "数据增强", "批大小", "卷积", "检查点", "动量",
           "准确率", "梯度", "归一化"],
    "en": ["optimizer", "learning rate", "loss function", "gradient", "data augmentation",
           "batch size", "convolution", "checkpoint", "momentum", "accuracy"],
}
NOT_INDEXED = ("search", "genindex")     # Sphinx's own pages, not in its search index
CODE_COLUMNS = 88                        # the longest code line the page must hold at 1280 px


def notebooks(lang: str) -> list[Path]:
    return sorted((ROOT / "notebooks").glob(f"[0-9][0-9]_*.{lang}.ipynb"))


def page_of(path: Path) -> str:
    return path.name.split(".")[0]


LESSONS = [page_of(p) for p in notebooks("en")]
LESSON_PARAMS = [(lang, name) for lang in LANGS for name in LESSONS]
LESSON_IDS = [f"{lang}-{name}" for lang, name in LESSON_PARAMS]


def is_nav(cell) -> bool:
    return cell.cell_type == "markdown" and ("nav" in cell.metadata.get("tags", [])
                                             or (NAV_LINK.search(cell.source) is not None
                                                 and len(cell.source.strip().splitlines()) == 1))


@functools.cache
def expected(lang: str, name: str) -> dict:
    """What the page of one committed notebook must show."""
    nb = nbformat.read(str(ROOT / "notebooks" / f"{name}.{lang}.ipynb"), as_version=4)
    tags = lambda cell: set(cell.metadata.get("tags", []))
    code = [c for c in nb.cells if c.cell_type == "code" and "remove-cell" not in tags(c)]
    outputs = images = 0
    for cell in code:
        if "remove-output" in tags(cell):
            continue
        streams = {o.name for o in cell.outputs if o.output_type == "stream"}   # merged per name
        shown = [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")
                 and any(k in VISIBLE for k in o.get("data", {}))]
        errors = [o for o in cell.outputs if o.output_type == "error"]
        outputs += len(streams) + len(shown) + len(errors)
        images += sum(any(k in IMAGES for k in o.data) for o in shown)
    return {"code_cells": sum("remove-input" not in tags(c) for c in code), "outputs": outputs,
            "images": images, "run": nb.metadata.get("tutorial")}


# --- the server and the browser --------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def site() -> Path:
    missing = [p for p in (SITE / "index.html", *(SITE / lang / "index.html" for lang in LANGS))
               if not p.exists()]
    if missing:
        pytest.fail(f"no built site in {SITE} (missing {', '.join(str(p) for p in missing)}): "
                    "build it with `make site` (python tools/build_site.py)", pytrace=False)
    return SITE


@pytest.fixture(scope="session")
def server(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install -r requirements-site.txt", pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium "
                    "(or set CHROMIUM to a Chromium binary)", pytrace=False)
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                   args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        except Exception as e:   # noqa: BLE001 - any launch failure is the same problem
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {e}", pytrace=False)
        yield b
        b.close()


class Recorder:
    """A browser context that records console errors and every request to another host."""

    def __init__(self, browser, server, **options):
        self.server, self.errors, self.foreign = server, [], []
        self.context = browser.new_context(**options)
        self.context.set_default_timeout(20_000)
        self.context.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.server + "/") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def new_page(self):
        page = self.context.new_page()
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        return page


@pytest.fixture()
def recorder(browser, server):
    made = []

    def make(**options):
        made.append(Recorder(browser, server, **options))
        return made[-1]
    yield make
    for r in made:
        r.context.close()


def site_pages(site: Path, lang: str) -> list[str]:
    return sorted(p.stem for p in (site / lang).glob("*.html"))


# --- one visit of every page, at a phone's width -----------------------------------------------

READ_PAGE = """() => ({
  lang: document.documentElement.getAttribute("lang"),
  title: document.title,
  ids: Array.from(document.querySelectorAll("[id]"), e => e.id)
         .concat(Array.from(document.querySelectorAll("a[name]"), e => e.name)),
  links: Array.from(document.querySelectorAll("a[href]"), a => a.href),
  outputs: document.querySelectorAll(".cell_output > .output, .cell_output > img, .cell_output > a > img").length,
  images: document.querySelectorAll(".cell_output img").length,
  figureLinks: Array.from(document.querySelectorAll(".cell_output img"), i => {
    const a = i.closest("a");
    return {src: i.src, href: a ? a.href : null, alt: i.alt, shown: i.getBoundingClientRect().width,
            natural: i.naturalWidth};
  }),
  articleText: document.querySelector("article.bd-article")?.innerText ?? "",
  lessons: Array.from(document.querySelectorAll("article ul.lessons > li"), li => ({
    href: li.querySelector("a")?.getAttribute("href"), text: li.innerText,
    run: li.querySelector(".lesson-run")?.innerText ?? null})),
  brokenImages: Array.from(document.querySelectorAll("img"))
                  .filter(i => i.complete && i.naturalWidth === 0).map(i => i.src),
  codeCells: document.querySelectorAll(".cell_input").length,
  copyButtons: document.querySelectorAll(".cell_input button.copybtn").length,
  outputText: Array.from(document.querySelectorAll(".cell_output"), e => e.textContent).join("\\n"),
  prev: document.querySelector(".prev-next-area a.left-prev")?.getAttribute("href") ?? null,
  next: document.querySelector(".prev-next-area a.right-next")?.getAttribute("href") ?? null,
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  runInfo: document.querySelector(".run-info")?.textContent ?? null,
  actions: Object.fromEntries(Array.from(document.querySelectorAll(".page-actions a"),
             a => [a.dataset.action,
                   {href: a.getAttribute("href"), url: a.href, download: a.getAttribute("download"),
                    label: a.innerText.trim()}])),
})"""

#: Chinese text with a space where none belongs: between two CJK characters (or punctuation), or
#: after CJK punctuation. Code is not text here: inline code counts as one Latin letter.
STRAY_SPACES = r"""() => {
  const SKIP = "pre, code, kbd, samp, .cell_input, .cell_output, script, style, .headerlink";
  const BLOCK = "p, li, h1, h2, h3, h4, h5, h6, td, th, dt, dd, caption, figcaption, summary, .admonition-title";
  const BREAK = "br, div, section, ul, ol, table, " + BLOCK;
  const pattern = /[\p{Script=Han}\u3000-\u303f\uff00-\uffef] +[\p{Script=Han}\u3000-\u303f\uff00-\uffef]|[\u3000-\u303f\uff00-\uffef] +\S/gu;
  const bad = [];
  const article = document.querySelector("article.bd-article");
  if (!article) return bad;
  for (const block of [article, ...article.querySelectorAll(BLOCK)]) {
    if (block.closest(SKIP)) continue;
    let text = "";
    const walk = (node) => {
      for (const child of node.childNodes) {
        if (child.nodeType === Node.TEXT_NODE) text += child.data.replace(/\s+/g, " ");
        else if (child.nodeType !== Node.ELEMENT_NODE) continue;
        else if (child.matches(BREAK)) text += "\n";
        else if (child.matches(SKIP)) text += "C";
        else walk(child);
      }
    };
    walk(block);
    for (const line of text.split("\n")) {
      const t = line.trim();
      for (const m of t.matchAll(pattern)) bad.push(t.slice(Math.max(0, m.index - 12), m.index + m[0].length + 12));
      if (t.includes("**")) bad.push(t.slice(0, 60));   // bold that did not close
    }
  }
  return bad;
}"""


@pytest.fixture(scope="session")
def crawl(browser, server, site):
    """Every page of both languages, read once at 375 px wide: ``{(lang, page): facts}``."""
    rec = Recorder(browser, server, viewport={"width": 375, "height": 800})
    page = rec.new_page()
    facts = {}
    for lang in LANGS:
        for name in site_pages(site, lang):
            rec.errors.clear()
            rec.foreign.clear()
            response = page.goto(f"{server}/{lang}/{name}.html", wait_until="load")
            info = page.evaluate(READ_PAGE)
            info.update(status=response.status, errors=list(rec.errors), foreign=list(rec.foreign),
                        html=response.text())
            if lang == "zh":
                info["strayspaces"] = page.evaluate(STRAY_SPACES)
            facts[(lang, name)] = info
    rec.context.close()
    return facts


# --- one visit of every page, at a laptop's width, with axe-core ----------------------------------

READ_DESKTOP = """(columns) => {
  const pres = Array.from(document.querySelectorAll(".cell_input pre"));
  const wide = pres.filter(p => p.scrollWidth > p.clientWidth).map(p => ({
    extra: p.scrollWidth - p.clientWidth,
    line: p.innerText.split("\\n").reduce((a, b) => b.length > a.length ? b : a, "")}));
  let holds = null;
  const fitting = pres.find(p => p.scrollWidth <= p.clientWidth);
  if (fitting) {   // an 88-character line added to a code cell that fits, then taken away
    const probe = document.createElement("span");
    probe.textContent = "\\n" + "x".repeat(columns);
    fitting.appendChild(probe);
    holds = {fits: fitting.scrollWidth <= fitting.clientWidth, width: fitting.clientWidth};
    probe.remove();
  }
  return {wide, holds, codeCells: pres.length,
          labels: Array.from(document.querySelectorAll(".page-actions a"), a => [a.dataset.action, a.innerText.trim()])};
}"""


@pytest.fixture(scope="session")
def desktop(browser, server, site):
    """Every page of both languages at 1280 px: code widths, header labels and axe-core's
    violations: ``{(lang, page): facts}``. Writes axe's summary beside the screenshots."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        pytest.fail("axe-playwright-python is missing: pip install -r requirements-site.txt", pytrace=False)
    axe = Axe()
    rec = Recorder(browser, server, viewport={"width": 1280, "height": 900})
    page = rec.new_page()
    facts, summary = {}, {}
    for lang in LANGS:
        for name in site_pages(site, lang):
            page.goto(f"{server}/{lang}/{name}.html", wait_until="load")
            info = page.evaluate(READ_DESKTOP, CODE_COLUMNS)
            result = axe.run(page).response
            info["violations"] = [{"id": v["id"], "impact": v["impact"], "help": v["help"],
                                   "nodes": [", ".join(map(str, n["target"])) for n in v["nodes"]]}
                                  for v in result["violations"]]
            for v in info["violations"]:
                entry = summary.setdefault(v["id"], {"impact": v["impact"], "help": v["help"],
                                                     "pages": 0, "nodes": 0})
                entry["pages"] += 1
                entry["nodes"] += len(v["nodes"])
            facts[(lang, name)] = info
    rec.context.close()
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "axe-summary.json").write_text(json.dumps(
        {"pages": len(facts), "axe-core": result.get("testEngine", {}).get("version"),
         "violations": summary}, indent=2) + "\n")
    return facts


@pytest.mark.parametrize("lang", LANGS)
def test_every_notebook_has_a_page_in_order(crawl, lang):
    assert LESSONS, "no notebooks/NN_name.en.ipynb found"
    assert [page_of(p) for p in notebooks(lang)] == LESSONS, f"the {lang} notebooks differ from the en ones"
    order = ["index", *LESSONS]
    for name in LESSONS:
        assert (lang, name) in crawl, f"{lang}/{name}.html is missing from the site"
    index_links = [urlsplit(u).path.rsplit("/", 1)[-1] for u in crawl[(lang, "index")]["links"]]
    listed = [n for n in dict.fromkeys(u.removesuffix(".html") for u in index_links) if n in LESSONS]
    assert listed == LESSONS, f"{lang}/index.html lists {listed}"
    for i, name in enumerate(LESSONS):
        info = crawl[(lang, name)]
        assert info["prev"] == f"{order[i]}.html", f"{lang}/{name}: previous is {info['prev']}"
        after = LESSONS[i + 1] if i + 1 < len(LESSONS) else None
        if after:
            assert info["next"] == f"{after}.html", f"{lang}/{name}: next is {info['next']}"
        else:
            assert info["next"] not in {f"{n}.html" for n in LESSONS}, f"{lang}/{name}: next is {info['next']}"
    for doc in DOC_PAGES:
        if (ROOT / "docs" / f"{doc}.md").exists():
            assert (lang, doc) in crawl, f"{lang}/{doc}.html (docs/{doc}.md) is missing"


@pytest.mark.parametrize("lang,name", LESSON_PARAMS, ids=LESSON_IDS)
def test_outputs_and_figures_as_in_the_notebook(crawl, lang, name):
    info, want = crawl[(lang, name)], expected(lang, name)
    assert info["outputs"] == want["outputs"], f"{lang}/{name}: {info['outputs']} outputs shown, notebook has {want['outputs']}"
    assert info["images"] == want["images"], f"{lang}/{name}: {info['images']} figures shown, notebook has {want['images']}"
    assert not info["brokenImages"], f"{lang}/{name}: images that did not load: {info['brokenImages']}"
    assert info["codeCells"] == want["code_cells"], f"{lang}/{name}: {info['codeCells']} code cells shown"
    assert info["copyButtons"] == want["code_cells"], f"{lang}/{name}: {info['copyButtons']} copy buttons"


@pytest.mark.parametrize("lang,name", LESSON_PARAMS, ids=LESSON_IDS)
def test_no_progress_fragments(crawl, lang, name):
    info = crawl[(lang, name)]
    assert "\r" not in info["outputText"] and "\r" not in info["html"], f"{lang}/{name}: a \\r in the page"
    bar = re.search(r"\d+%\|[^|\n]*\|", info["outputText"])
    assert not bar, f"{lang}/{name}: a progress bar in the outputs: {bar.group(0)!r}"
    assert "README.md" not in info["html"], f"{lang}/{name}: GitHub's navigation line is still on the page"


def test_every_page_loads_cleanly(crawl):
    problems = []
    for (lang, name), info in crawl.items():
        where = f"{lang}/{name}.html"
        if info["status"] != 200:
            problems.append(f"{where}: HTTP {info['status']}")
        if info["lang"] != LANGS[lang]:
            problems.append(f'{where}: <html lang="{info["lang"]}">, expected {LANGS[lang]}')
        problems += [f"{where}: console error {e}" for e in info["errors"]]
        problems += [f"{where}: asked another host for {u}" for u in info["foreign"]]
    assert not problems, "\n".join(problems)


def test_no_page_scrolls_sideways_at_375px(crawl):
    wide = {f"{lang}/{name}": info["overflow"] for (lang, name), info in crawl.items() if info["overflow"] > 0}
    assert not wide, f"pages wider than a 375 px screen (extra px): {wide}"


@pytest.mark.parametrize("width", [1280, 375])
def test_one_search_control_on_screen(recorder, server, width):
    """One search field (desktop: in the sidebar) or button (phone: in the article header), no
    second bar above the page (pydata-sphinx-theme 0.20's own header, hidden in _static/cifar_site.css)."""
    page = recorder(viewport={"width": width, "height": 800}).new_page()
    for lang in LANGS:
        page.goto(f"{server}/{lang}/{LESSONS[0]}.html")
        shown = page.locator(".search-button-field:visible, .search-button:visible")
        assert shown.count() == 1, f"{lang} at {width} px: {shown.count()} search controls visible"
        assert page.locator("#pst-header:visible").count() == 0, f"{lang} at {width} px: a header bar above the page"
        shown.first.click()
        assert page.locator("#pst-search-dialog input[name=q]").is_visible(), f"{lang} at {width} px: no search box opens"


def test_english_pages_are_labelled_so_on_the_chinese_site(recorder, server):
    page = recorder().new_page()
    page.goto(f"{server}/zh/index.html")
    for doc in DOC_PAGES:
        if (ROOT / "docs" / f"{doc}.md").exists():
            text = page.locator(f".bd-sidebar-primary a[href='{doc}.html']").first.text_content()
            assert "英文" in text, f"zh sidebar entry of {doc}.html reads {text!r}: say it is in English"


def test_every_same_site_link_and_anchor_resolves(crawl, server, browser):
    by_path = {f"/{lang}/{name}.html": info for (lang, name), info in crawl.items()}
    for lang in LANGS:
        by_path.setdefault(f"/{lang}/", crawl[(lang, "index")])
    ctx = browser.new_context()
    broken, fetched = [], {}
    for (lang, name), info in crawl.items():
        for url in info["links"]:
            if not url.startswith(server + "/"):
                continue
            target, anchor = urldefrag(url)
            path = urlsplit(target).path
            if path not in by_path:
                if path not in fetched:
                    fetched[path] = ctx.request.get(server + path).status
                if fetched[path] != 200:
                    broken.append(f"{lang}/{name}.html -> {path}: HTTP {fetched[path]}")
                elif anchor:
                    broken.append(f"{lang}/{name}.html -> {path}#{anchor}: anchor on a page not crawled")
            elif anchor and anchor not in by_path[path]["ids"]:
                broken.append(f"{lang}/{name}.html -> {path}#{anchor}: no such anchor")
    ctx.close()
    assert not broken, "\n".join(sorted(set(broken)))


@pytest.mark.parametrize("lang,name", LESSON_PARAMS, ids=LESSON_IDS)
def test_page_actions(crawl, server, browser, lang, name):
    import sys
    sys.path.insert(0, str(ROOT / "site"))
    import conf
    actions, file = crawl[(lang, name)]["actions"], f"{name}.{lang}.ipynb"
    other = "zh" if lang == "en" else "en"
    assert actions.get("lang-switch", {}).get("href") == f"../{other}/{name}.html", actions
    download = actions.get("download-notebook")
    assert download and download["download"] == file, f"{lang}/{name}: no download button for {file}"
    ctx = browser.new_context()
    body = ctx.request.get(download["url"]).body()
    ctx.close()
    assert body == (ROOT / "notebooks" / file).read_bytes(), f"{lang}/{name}: the download differs from notebooks/{file}"
    assert actions["colab"]["href"] == (f"https://colab.research.google.com/github/{conf.REPO}/blob/"
                                        f"{conf.BRANCH}/notebooks/{file}")
    assert actions["edit-source"]["href"] == f"https://github.com/{conf.REPO}/edit/{conf.BRANCH}/notebooks/src/{name}.md"
    issue = actions["issue"]["href"]
    assert issue.startswith(f"https://github.com/{conf.REPO}/issues/new?") and file in issue, issue


def test_download_button_downloads_the_notebook(recorder, server):
    page = recorder().new_page()
    page.goto(f"{server}/en/{LESSONS[0]}.html")
    with page.expect_download() as info:
        page.click(".page-actions a.btn-download-notebook")
    download = info.value
    file = f"{LESSONS[0]}.en.ipynb"
    assert download.suggested_filename == file
    assert Path(download.path()).read_bytes() == (ROOT / "notebooks" / file).read_bytes()


@pytest.mark.parametrize("lang,name", LESSON_PARAMS, ids=LESSON_IDS)
def test_hardware_and_run_time_shown(crawl, lang, name):
    run = expected(lang, name)["run"]
    assert run and {"run_seconds", "hardware"} <= set(run), (
        f"notebooks/{name}.{lang}.ipynb has no metadata['tutorial'] with run_seconds and hardware: "
        "run python -m cifar_helpers.run_all --inplace")
    shown = crawl[(lang, name)]["runInfo"]
    assert shown and run["hardware"] in shown, f"{lang}/{name}: run info shown: {shown!r}"


def test_language_switch_opens_the_same_page(recorder, server):
    page = recorder().new_page()
    for lang, other in (("en", "zh"), ("zh", "en")):
        name = LESSONS[-1]
        page.goto(f"{server}/{lang}/{name}.html")
        page.click(".page-actions a.btn-lang-switch")
        page.wait_for_url(f"{server}/{other}/{name}.html")
        assert page.evaluate("document.documentElement.lang") == LANGS[other]


@pytest.mark.parametrize("lang,query,page", SEARCHES, ids=[f"{l}-{q}" for l, q, _ in SEARCHES])
def test_search_finds(search, lang, query, page):
    assert page in LESSONS, f"{page} is not a notebook any more: update SEARCHES"
    found = search(lang, query)
    assert page in found, f"searching {lang} for {query!r} does not find {page}: {found}"


@pytest.mark.parametrize("lang", LANGS)
def test_search_finds_nothing_for_nonsense(search, lang):
    assert search(lang, NONSENSE) == []


@pytest.fixture(scope="session")
def search(browser, server, site):
    """``search(lang, query)``: the pages (names) that the site's search lists for ``query``, read
    from one browser tab (the search index stays cached between queries)."""
    rec = Recorder(browser, server)
    page, cache = rec.new_page(), {}

    def run(lang, query):
        if (lang, query) not in cache:
            rec.errors.clear()
            rec.foreign.clear()
            page.goto(f"{server}/{lang}/search.html?q={query}")
            page.wait_for_function("""() => {
                const s = document.querySelector('#search-results .search-summary');
                return s && s.textContent.trim().length > 0 && !document.querySelector('#search-progress')?.textContent.trim();
            }""")
            hrefs = page.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.getAttribute('href'))")
            assert not rec.errors and not rec.foreign, rec.errors + rec.foreign
            cache[(lang, query)] = sorted({h.split("#")[0].split("?")[0].removesuffix(".html") for h in hrefs})
        return cache[(lang, query)]
    yield run
    rec.context.close()


def test_dark_mode_survives_a_reload_and_figures_stay_white(recorder, server):
    rec = recorder(viewport={"width": 1280, "height": 900})
    page = rec.new_page()
    name = next(n for n in LESSONS if expected("en", n)["images"])
    page.goto(f"{server}/en/{name}.html")
    page.click(".article-header-buttons .theme-switch-button")
    page.click(".article-header-buttons .theme-change-button[data-mode=dark]")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark", "dark mode lost on reload"
    backgrounds = page.eval_on_selector_all(".cell_output img", "is => is.map(i => getComputedStyle(i).backgroundColor)")
    assert backgrounds and all(b == "rgb(255, 255, 255)" for b in backgrounds), backgrounds
    body = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert body != "rgb(255, 255, 255)", "the page itself did not turn dark"
    assert not rec.errors and not rec.foreign, rec.errors + rec.foreign


def test_copy_button_copies_the_code(recorder, server):
    rec = recorder(viewport={"width": 1280, "height": 900}, permissions=["clipboard-read", "clipboard-write"])
    page = rec.new_page()
    page.goto(f"{server}/en/{LESSONS[0]}.html")
    cell = page.locator(".cell_input").first
    cell.hover()
    cell.locator("button.copybtn").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    code = next(c.source for c in nbformat.read(str(notebooks("en")[0]), as_version=4).cells if c.cell_type == "code")
    assert copied.strip() == code.strip()


@pytest.mark.parametrize("locale,lang", [("en-US", "en"), ("zh-CN", "zh")])
def test_root_page_sends_readers_to_a_language(recorder, server, locale, lang):
    page = recorder(locale=locale).new_page()
    page.goto(f"{server}/")
    page.wait_for_url(f"{server}/{lang}/index.html")


def test_screenshots(recorder, server, search):
    """Into _site/screenshots/ (look at them): a lesson in light and one in dark mode, both front
    pages, the Chinese search for 学习率, and a lesson on a 375 px phone."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = recorder(viewport={"width": 1280, "height": 900}, color_scheme="light").new_page()
    for lang in LANGS:
        page.goto(f"{server}/{lang}/index.html")
        page.screenshot(path=str(SHOTS / f"{lang}-index.png"), full_page=True)
    assert search("zh", "学习率")
    page.goto(f"{server}/zh/search.html?q=学习率")
    page.wait_for_selector("#search-results .search-summary:not(:empty)")
    page.screenshot(path=str(SHOTS / "zh-search-学习率.png"))
    phone = recorder(viewport={"width": 375, "height": 800}, color_scheme="light").new_page()
    name = next((n for n in LESSONS if "evaluation" in n), LESSONS[-1])
    phone.goto(f"{server}/zh/{name}.html")
    phone.screenshot(path=str(SHOTS / f"zh-{name}-375px.png"))
    if phone.locator(".cell_output img").count():
        phone.locator(".cell_output img").last.scroll_into_view_if_needed()
        phone.screenshot(path=str(SHOTS / f"zh-{name}-375px-figure.png"))
    rec = recorder(viewport={"width": 1280, "height": 900}, color_scheme="light")
    page = rec.new_page()
    page.goto(f"{server}/en/{LESSONS[0]}.html")
    page.locator(".cell_output img").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / f"en-{LESSONS[0]}-light.png"))
    dark = next((n for n in LESSONS if "evaluation" in n), LESSONS[-1])
    page = recorder(viewport={"width": 1280, "height": 900}, color_scheme="dark").new_page()
    page.goto(f"{server}/zh/{dark}.html")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.locator(".cell_output img").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / f"zh-{dark}-dark.png"))
    assert (SHOTS / f"en-{LESSONS[0]}-light.png").stat().st_size > 10_000


# --- the front page -----------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGS)
def test_front_page_numbers_describes_and_times_the_lessons(crawl, lang):
    items = crawl[(lang, "index")]["lessons"]
    assert [i["href"] for i in items] == [f"{n}.html" for n in LESSONS], f"{lang}/index.html lists {items}"
    for name, item in zip(LESSONS, items):
        title_line, *rest = item["text"].strip().splitlines()
        assert title_line.startswith(name[:2]), f"{lang}/index.html: {name} is not numbered: {title_line!r}"
        description = [line for line in rest if line.strip() and line != item["run"]]
        assert description and len(description[0]) >= 15, f"{lang}/index.html: {name} has no description"
        run = expected(lang, name)["run"]
        assert run and item["run"] and run["hardware"] in item["run"], (
            f"{lang}/index.html: {name} does not show its stored run's hardware: {item['run']!r}")
        assert re.search(r"\d+ (s|min|秒|分钟)", item["run"]), f"{lang}/index.html: {name}: no run time"


@pytest.mark.parametrize("lang", LANGS)
def test_front_page_says_how_to_run(crawl, lang):
    text = crawl[(lang, "index")]["articleText"]
    heading = {"en": "How to run", "zh": "如何运行"}[lang]
    assert heading in text, f"{lang}/index.html has no '{heading}' section"
    how = text.split(heading, 1)[1]
    for needed in ("Colab", "pip install", "git clone", "make run"):
        assert needed in how, f"{lang}/index.html: '{heading}' does not mention {needed}"


@pytest.mark.parametrize("width", [1280, 375])
def test_header_buttons_show_text_labels(crawl, desktop, width):
    """Download, Colab, issue and edit buttons (and the language switch) show a label, not only an icon."""
    facts = desktop if width == 1280 else crawl
    bad = []
    for (lang, name), info in facts.items():
        if name not in LESSONS:
            continue
        labels = dict(info["labels"]) if width == 1280 else {k: v["label"] for k, v in info["actions"].items()}
        for action in ("lang-switch", "download-notebook", "colab", "issue", "edit-source"):
            if not labels.get(action):
                bad.append(f"{lang}/{name} at {width} px: {action} has no visible label")
        if "Colab" not in labels.get("colab", ""):
            bad.append(f"{lang}/{name} at {width} px: the Colab button reads {labels.get('colab')!r}")
    assert not bad, "\n".join(bad)


# --- Chinese text, search -----------------------------------------------------------------------

def test_chinese_pages_have_no_stray_spaces(crawl):
    """No space between two Chinese characters, nor after Chinese punctuation (code aside): a line
    break inside a Chinese paragraph of the sources must not reach the page as a space. Nor a
    ``**`` left over from bold that did not close (``**硬件：**只需``, see GLOSSARY.md)."""
    bad = {name: info["strayspaces"] for (lang, name), info in crawl.items()
           if lang == "zh" and info["strayspaces"]}
    count = sum(len(v) for v in bad.values())
    assert not bad, f"{count} stray spaces in Chinese text:\n" + "\n".join(
        f"zh/{name}: {snippet!r}" for name, found in bad.items() for snippet in found[:8])


def pages_containing(crawl, lang: str, term: str) -> list[str]:
    if lang == "zh":
        has = lambda text: term in text
    else:
        pattern = re.compile(r"(?<![\w])" + re.escape(term).replace(r"\ ", r"\s+") + r"(?![\w])", re.I)
        has = lambda text: pattern.search(text) is not None
    return sorted(name for (l, name), info in crawl.items()
                  if l == lang and name not in NOT_INDEXED and has(info["articleText"]))


CORE = [(lang, term) for lang, terms in CORE_TERMS.items() for term in terms]


@pytest.mark.parametrize("lang,term", CORE, ids=[f"{l}-{t}" for l, t in CORE])
def test_search_finds_every_page_with_a_core_term(crawl, search, lang, term):
    want = pages_containing(crawl, lang, term)
    assert want, f"no {lang} page contains {term!r}: choose another core term"
    found = search(lang, term)
    missing = sorted(set(want) - set(found))
    assert not missing, f"searching {lang} for {term!r} misses {missing} (found {found})"


# --- accessibility, figures, code ---------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGS)
def test_no_serious_accessibility_violation(desktop, lang):
    """axe-core on every page: nothing rated serious or critical (see axe-summary.json for all)."""
    bad = [f"{lang}/{name}: {v['id']} ({v['impact']}): {v['help']} -- {v['nodes'][:3]}"
           for (l, name), info in sorted(desktop.items()) if l == lang
           for v in info["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, "\n".join(bad)


def test_figures_open_full_size_on_a_phone(crawl, browser):
    """At 375 px every output figure is a link to its own image file, to open and zoom."""
    bad, checked = [], set()
    ctx = browser.new_context()
    for (lang, name), info in crawl.items():
        for fig in info["figureLinks"]:
            if fig["href"] != fig["src"]:
                bad.append(f"{lang}/{name}: figure {fig['src']} links to {fig['href']}")
            elif fig["src"] not in checked:
                checked.add(fig["src"])
                response = ctx.request.get(fig["src"])
                if response.status != 200 or not response.headers.get("content-type", "").startswith("image/"):
                    bad.append(f"{lang}/{name}: {fig['src']}: HTTP {response.status}")
            if not fig["alt"] or "/" in fig["alt"]:
                bad.append(f"{lang}/{name}: figure {fig['src']} has the alt text {fig['alt']!r}")
    ctx.close()
    assert checked, "no figure found on any page"
    assert not bad, "\n".join(bad)


def test_the_code_column_holds_88_characters(desktop):
    holds = {(lang, name): info["holds"] for (lang, name), info in desktop.items() if info["holds"]}
    assert holds, "no code cell on any page"
    short = {f"{lang}/{name}": h["width"] for (lang, name), h in holds.items() if not h["fits"]}
    assert not short, f"an {CODE_COLUMNS}-character line scrolls sideways at 1280 px (code box px): {short}"


@pytest.mark.parametrize("lang,name", LESSON_PARAMS, ids=LESSON_IDS)
def test_no_code_cell_scrolls_sideways_at_1280px(desktop, lang, name):
    info = desktop[(lang, name)]
    assert info["codeCells"] == expected(lang, name)["code_cells"]
    assert not info["wide"], (f"{lang}/{name}: {len(info['wide'])} code cells scroll sideways at 1280 px: "
                              + "; ".join(f"+{w['extra']} px: {w['line'][:100]!r}" for w in info["wide"][:5]))
