"""Browser check of the built documentation site.

Usage: python docs/check_site.py BUILD_DIR [PAGE ...]

Serves BUILD_DIR on 127.0.0.1, opens each page (relative to BUILD_DIR) in Debian's headless
Chromium through playwright, and fails on console errors, page exceptions, failed requests,
images that did not load and internal links whose file or #fragment is missing.
Needs: pip install playwright; apt-get install chromium (never `playwright install`).
"""

import argparse
import functools
import html.parser
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
DEFAULT_PAGES = ["index.html", "reference/api.html", "benchmarks.html"]
# The machines have no network: nothing in Chromium may try to reach out on its own.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# Chromium reports some failed loads (a font it cannot decode, ...) as warnings, not errors.
LOAD_WARNING = re.compile(r"failed to|net::err|ots parsing|could not load|unable to load", re.I)
# Waits for every <img>, lazy ones included (made eager), then tells which did not load.
IMAGES_JS = """async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => { i.loading = "eager"; return i.complete ? null :
    new Promise(r => { i.addEventListener("load", r); i.addEventListener("error", r);
                       setTimeout(r, 5000); }); }));
  return imgs.map(i => [i.getAttribute("src"), i.complete && i.naturalWidth > 0]);
}"""
# a[href] includes SVG links, whose .href is no string: resolve the attribute ourselves.
LINKS_JS = """() => Array.from(document.querySelectorAll("a[href]"), a => {
  const raw = a.getAttribute("href");
  try { return [raw, new URL(raw, document.baseURI).href]; } catch (e) { return [raw, null]; }
})"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send_head(self):
        # Chromium asks for /favicon.ico on its own, whatever the page says: a missing one is
        # no fault of the site (Sphinx puts a configured favicon under _static/).
        if self.path == "/favicon.ico" and not os.path.exists(self.translate_path(self.path)):
            self.send_response(204)
            self.end_headers()
            return None
        return super().send_head()


class AnchorParser(html.parser.HTMLParser):
    """Collects what a #fragment can name: any id, and the name of an <a>."""

    def __init__(self):
        super().__init__()
        self.anchors = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.anchors.update(v for v in (attrs.get("id"), tag == "a" and attrs.get("name")) if v)


@functools.cache
def fetch_anchors(url):
    """(error or None, anchors or None for a file that is not HTML), once per target."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            if "html" not in response.headers.get("Content-Type", ""):
                return None, None
            parser = AnchorParser()
            parser.feed(response.read().decode("utf-8", "replace"))
            return None, parser.anchors
    except OSError as exc:  # URLError and HTTPError included
        return f"cannot fetch: {exc}", None


def check_links(links, origin):
    """Checks the internal links; returns (problems, internal count, external count)."""
    problems, internal, external = [], 0, 0
    for raw, url in dict.fromkeys(map(tuple, links)):  # each distinct href once
        if url is None:
            problems.append(f"unparsable link: {raw!r}")
            continue
        parts = urllib.parse.urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != origin:
            external += 1  # no network here: counted, never fetched
            continue
        internal += 1
        error, anchors = fetch_anchors(parts._replace(fragment="").geturl())
        fragment = urllib.parse.unquote(parts.fragment)
        if error:
            problems.append(f"broken link {raw!r}: {error}")
        # "" and "top" scroll to the top of any page (HTML spec); no element needed.
        elif anchors is not None and fragment not in ("", "top") and fragment not in anchors:
            problems.append(f"broken link {raw!r}: no id or <a name> {fragment!r} on target")
    return problems, internal, external


def check_page(context, url, origin):
    """Opens one page; returns (problems, summary line)."""
    problems, messages, bad_urls = [], [], set()

    def on_response(response):
        if response.status >= 400:
            bad_urls.add(response.url)
            problems.append(f"HTTP {response.status}: {response.url}")

    def on_request_failed(request):
        if request.url not in bad_urls:  # a 404 also aborts its request: said once is enough
            problems.append(f"request failed: {request.url} ({request.failure})")

    page = context.new_page()
    page.on("console", lambda msg: messages.append(msg))  # playwright wants a settable handler
    page.on("pageerror", lambda exc: problems.append(f"uncaught exception: {exc}"))
    page.on("response", on_response)
    page.on("requestfailed", on_request_failed)
    try:
        page.goto(url, wait_until="load")
        try:  # late requests (fonts, scripts' fetches) still get seen, but a busy page is no hang
            page.wait_for_load_state("networkidle", timeout=5000)
        except PlaywrightError:
            pass
        images = page.evaluate(IMAGES_JS)
        links = page.evaluate(LINKS_JS)
    except PlaywrightError as exc:
        return [*problems, f"page did not open: {exc.message.splitlines()[0]}"], "not opened"
    finally:
        page.close()
    for msg in messages:
        where = msg.location.get("url", "")
        if where in bad_urls and msg.text.startswith("Failed to load resource: the server"):
            continue  # Chromium's echo of an HTTP error already listed
        if msg.type == "error" or (msg.type == "warning" and LOAD_WARNING.search(msg.text)):
            problems.append(f"console {msg.type}: {msg.text}" + (f" ({where})" if where else ""))
    problems += [f"image did not load: {src!r}" for src, ok in images if not ok]
    link_problems, internal, external = check_links(links, origin)
    problems += link_problems
    summary = (
        f"{len(links)} links ({internal} distinct internal checked, {external} external counted), "
        f"{len(images)} images, {len(messages)} console messages"
    )
    return problems, summary


def kill_descendants_and_exit(profile):
    """Overall timeout: kill everything we started, then exit. playwright starts Chromium in a
    process group of its own, so walk /proc for our descendants instead of killing a group."""
    print("site check: FAILED (overall timeout)", flush=True)
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    tree = {os.getpid()}
    while children := {pid for pid, ppid in parents.items() if ppid in tree} - tree:
        tree |= children
    for pid in tree - {os.getpid()}:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(profile, ignore_errors=True)
    os._exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir")
    parser.add_argument("pages", nargs="*", default=DEFAULT_PAGES)
    parser.add_argument("--timeout", type=float, default=120, help="overall, seconds")
    parser.add_argument("--page-timeout", type=float, default=30, help="per page, seconds")
    args = parser.parse_args()
    if not os.path.isdir(args.build_dir):
        parser.error(f"no such directory: {args.build_dir}")
    if not os.access(CHROMIUM, os.X_OK):
        # A desk without Chromium can still build the site; CI (SHIMPID_REQUIRE_ALL=1) cannot.
        if os.environ.get("SHIMPID_REQUIRE_ALL", "0") not in ("", "0"):
            parser.error(f"no {CHROMIUM}: apt-get install chromium")
        print(f"site check: SKIPPED, no {CHROMIUM} (apt-get install chromium)")
        return 0
    start = time.monotonic()
    profile = tempfile.mkdtemp(prefix="check_site-")  # a fresh Chromium user-data-dir
    watchdog = threading.Timer(args.timeout, kill_descendants_and_exit, [profile])
    watchdog.daemon = True
    watchdog.start()

    handler = functools.partial(QuietHandler, directory=args.build_dir)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: an ephemeral one
    server.handle_error = lambda *args: None  # a client hanging up is no failure of the site
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    failed = 0
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            context.set_default_timeout(args.page_timeout * 1000)
            for name in args.pages:
                url = f"{origin}/{urllib.parse.quote(name.lstrip('/'))}"
                problems, summary = check_page(context, url, origin)
                print(f"{name}: {summary}" + (f": {len(problems)} problem(s)" if problems else ""))
                for problem in problems:
                    print(f"  - {problem}")
                failed += bool(problems)
            context.close()
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    elapsed = time.monotonic() - start
    if failed:
        print(f"site check: FAILED ({failed} of {len(args.pages)} pages, {elapsed:.1f} s)")
        return 1
    print(f"site check: ok ({len(args.pages)} pages, {elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
