"""Open every page of the built docs in headless Chromium and fail on what a reader would see broken.

Usage::

    mkdocs build --strict --site-dir site && python docs/scripts/check_site.py site [--if-available]

The site is served on 127.0.0.1 and each page rendered with ``chromium --headless --dump-dom`` (scripts
run, so KaTeX has typeset the formulas). In the rendered pages it reports

* raw TeX: a formula span that KaTeX did not typeset, a KaTeX error, or ``\\(``, ``\\[`` or ``$$`` left
  in the text outside code;
* broken images: an ``<img>`` whose file is not in the site;
* broken internal links: an ``<a href>`` to a page or file that is not in the site, or to an anchor the
  target page does not have;
* anything loaded from another host (a script, a stylesheet or an image): the site must work offline.

It exits 1 listing every problem, 0 when there is none. Without Chromium it exits 2, or with
``--if-available`` prints that it skipped the check and exits 0 (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
TEX_LEFTOVERS = re.compile(r"\\\(|\\\[|\$\$")
SKIPPED_TEXT = {"code", "pre", "script", "style", "textarea"}


class RenderedPage(HTMLParser):
    """Collects ids, links, images, external resources and raw TeX of one rendered page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.resources: list[str] = []
        self.raw_tex: list[str] = []
        self._open: list[tuple[str, bool]] = []  # (tag, whether its text is skipped)
        self._formula_depth: list[int] = []  # open arithmatex spans and whether KaTeX output is inside

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        classes = values.get("class", "").split()
        if "id" in values:
            self.ids.add(values["id"])
        if "name" in values and tag == "a":
            self.ids.add(values["name"])
        if tag == "a" and "href" in values:
            self.links.append(values["href"])
        if tag == "img":
            self.images.append(values.get("src", ""))
        if tag == "script" and values.get("src"):
            self.resources.append(values["src"])
        if tag == "link" and "stylesheet" in values.get("rel", "") and values.get("href"):
            self.resources.append(values["href"])
        if "katex-error" in classes:
            self.raw_tex.append(f"KaTeX error: {values.get('title', '')}")
        if "katex" in classes and self._formula_depth:
            self._formula_depth[-1] = 1
        if tag in ("br", "img", "hr", "meta", "link", "input", "source", "wbr"):
            return  # void elements have no end tag
        skipped = tag in SKIPPED_TEXT or "katex" in classes or bool(self._open and self._open[-1][1])
        self._open.append((tag, skipped))
        if "arithmatex" in classes:
            self._formula_depth.append(0)
            self._open[-1] = (tag + "#formula", skipped)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            open_tag, _ = self._open.pop()
            if open_tag.endswith("#formula") and not self._formula_depth.pop():
                self.raw_tex.append("a formula that KaTeX did not typeset")
            if open_tag.split("#")[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1][1]:
            return
        match = TEX_LEFTOVERS.search(data)  # one report per text run
        if match:
            self.raw_tex.append(
                f"raw TeX: ...{data[max(0, match.start() - 30) : match.end() + 30].strip()}..."
            )


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would bury the report


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def render(chromium: str, url: str) -> str:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",  # runs as root in CI containers
        "--disable-gpu",
        "--virtual-time-budget=10000",  # let the page's scripts (KaTeX) finish before the dump
        "--dump-dom",
        url,
    ]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout


def site_file(site: Path, path: str) -> Path | None:
    """The file a URL path of the served site maps to, or None."""
    candidate = site / unquote(path).lstrip("/")
    if candidate.is_dir():
        candidate = candidate / "index.html"
    return candidate if candidate.is_file() else None


def check(site: Path, chromium: str) -> tuple[list[str], int]:
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    rendered: dict[str, RenderedPage] = {}
    try:
        for page in pages:
            path = "/" + page.relative_to(site).as_posix()
            parser = RenderedPage()
            parser.feed(render(chromium, urljoin(base, path)))
            rendered[path] = parser
    finally:
        server.shutdown()

    problems = []
    for path, page in rendered.items():
        url = urljoin(base, path)
        problems += [f"{path}: {issue}" for issue in page.raw_tex]
        for resource in page.resources + page.images:
            target = urlsplit(urljoin(url, resource))
            if target.netloc != urlsplit(base).netloc:
                problems.append(f"{path}: loads {resource} from another host")
        for image in page.images:
            target = urlsplit(urljoin(url, image))
            if target.netloc == urlsplit(base).netloc and site_file(site, target.path) is None:
                problems.append(f"{path}: broken image {image}")
        for link in page.links:
            target = urlsplit(urljoin(url, link))
            if target.scheme not in ("http", "https") or target.netloc != urlsplit(base).netloc:
                continue  # external links and mailto: are not the site's to check
            file = site_file(site, target.path)
            if file is None:
                problems.append(f"{path}: broken link {link}")
                continue
            anchor = unquote(target.fragment)
            linked = rendered.get("/" + file.relative_to(site).as_posix())
            if anchor and linked is not None and anchor not in linked.ids:
                problems.append(f"{path}: link {link} names an anchor the page does not have")
    return problems, len(rendered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built site (mkdocs build --site-dir)")
    parser.add_argument(
        "--if-available", action="store_true", help="skip with a message (exit 0) when Chromium is absent"
    )
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        parser.error(f"{args.site} has no index.html; build the site first (mkdocs build --site-dir)")
    chromium = find_chromium()
    if chromium is None:
        message = f"check_site: no Chromium found (looked for {', '.join(CHROMIUM_NAMES)}; Debian: apt-get install chromium)"
        if args.if_available:
            print(f"{message}; skipped")
            return 0
        print(message, file=sys.stderr)
        return 2
    problems, count = check(args.site, chromium)
    for problem in problems:
        print(problem)
    print(f"check_site: {count} pages rendered in Chromium, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
