"""Web search failures simulated at the HTTP layer on loopback, with the real ddgs client.

`ddgs` talks through `primp`, which honours an HTTP proxy for https URLs with CONNECT.
`FakeDuckDuckGo` is such a proxy on 127.0.0.1: it can refuse or drop the CONNECT, never
answer it, or complete it and play html.duckduckgo.com over TLS with a certificate from a
throwaway CA (made with the `openssl` command; ddgs is told to trust it with `verify=`).
So every byte the real client sends goes through real sockets, TLS and HTTP parsing.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from html import escape

import pytest

from agent.search.base import SearchBackend, SearchError
from agent.search.web import SEARCH_THREAD, WebSearch, clean_text, is_garbage, truncate

HOST = "html.duckduckgo.com"
SLACK_S = 0.75  # scheduling slack on a busy 2-core machine


# --- a loopback DuckDuckGo -------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throwaway CA and a server certificate for html.duckduckgo.com signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("the TLS cases need the `openssl` command to make a test certificate")
    d = tmp_path_factory.mktemp("certs")

    def ssl_cmd(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl_cmd("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=restreact test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ssl_cmd("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
            "-subj", f"/CN={HOST}")
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{HOST}\nbasicConstraints=CA:FALSE\n"
                               "extendedKeyUsage=serverAuth\n")
    ssl_cmd("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": str(d / "ca.pem"), "cert": str(d / "srv.pem"), "key": str(d / "srv.key")}


class FakeDuckDuckGo:
    """A CONNECT proxy on 127.0.0.1 whose n-th connection follows script[n] (the last repeats).

    Behaviours: "hang" (accept, never answer), "close" (drop before answering CONNECT),
    "refuse" (CONNECT → 502, as a real proxy says when it cannot reach the site), or
    (status, html) to complete the tunnel and answer the search request over TLS.
    """

    def __init__(self, script: list, certs: dict | None = None):
        self.script = list(script)
        self.connects: list[str] = []  # CONNECT targets, in order
        self.requests: list[bytes] = []  # the HTTP requests seen inside the tunnel
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._tls = None
        if certs:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(certs["cert"], certs["key"])
            self._tls.set_alpn_protocols(["http/1.1"])
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            n = len(self._conns) - 1
            step = self.script[min(n, len(self.script) - 1)]
            threading.Thread(target=self._serve, args=(conn, step), daemon=True).start()

    def _serve(self, conn: socket.socket, step) -> None:
        try:
            conn.settimeout(10)
            head = _read_head(conn)
            self.connects.append(head.split(b" ")[1].decode() if head else "")
            if step == "hang":
                self._stop.wait(30)
            elif step == "close":
                pass
            elif step == "refuse":
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            else:
                status, body = step
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                tls = self._tls.wrap_socket(conn, server_side=True)
                self.requests.append(_read_request(tls))
                data = body.encode()
                tls.sendall(b"HTTP/1.1 %d X\r\nContent-Type: text/html; charset=utf-8\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(data), data))
                tls.close()
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass


def _read_head(conn) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _read_request(conn) -> bytes:
    """Head plus a Content-Length body (ddgs POSTs the query as a form)."""
    data = _read_head(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def ddg_page(results: list[tuple[str, str, str]], raw: bool = False) -> str:
    """A page in the markup of html.duckduckgo.com/html/ that ddgs's own xpaths parse."""
    items = []
    for title, href, body in results:
        t, b = (title, body) if raw else (escape(title), escape(body))
        items.append(
            '<div class="result results_links results_links_deep web-result">'
            '<div class="links_main links_deep result__body">'
            f'<h2 class="result__title"><a rel="nofollow" class="result__a" href="{escape(href)}">{t}</a></h2>'
            f'<a class="result__snippet" href="{escape(href)}">{b}</a></div></div>')
    return "<html><head><title>DuckDuckGo</title></head><body>" + "".join(items) + "</body></html>"


@pytest.fixture
def proxies():
    made: list[FakeDuckDuckGo] = []

    def make(script, certs=None) -> FakeDuckDuckGo:
        made.append(FakeDuckDuckGo(script, certs))
        return made[-1]

    yield make
    for p in made:
        p.close()
    # A search abandoned at its deadline lives on in its daemon thread until the closed proxy
    # fails it; let it end here, or it touches logging while pytest's teardown walks it.
    for t in threading.enumerate():
        if t.name == SEARCH_THREAD:
            t.join(timeout=30)


@pytest.fixture(scope="module", autouse=True)
def _ddgs_loaded():
    """One search through a refusing proxy before the tests: it loads ddgs, lxml and primp's
    15 MB compiled client, which a process's first search would otherwise load inside the
    few-second deadlines below (seconds, on a busy machine whose page cache has let the files
    go; the tests time the network, not that)."""
    fake = FakeDuckDuckGo(["refuse"])
    try:
        WebSearch(proxy=fake.url, max_retries=0, deadline_s=60.0, timeout_s=30.0,
                  backend="duckduckgo").search("warm-up")
    except SearchError:
        pass
    finally:
        fake.close()


# The cases that check what comes back (not how long it takes) get a roomy deadline; the
# timing is checked by the failure cases below, each with its own deadline.
ROOMY = dict(deadline_s=10.0, timeout_s=5.0)


def web(proxy: str, certs: dict | None = None, **kw) -> WebSearch:
    opts = dict(deadline_s=3.0, max_retries=2, backoff_s=0.1, timeout_s=1.0, backend="duckduckgo")
    opts.update(kw)
    return WebSearch(proxy=proxy, verify=certs["ca"] if certs else True, **opts)


def timed(fn):
    start = time.monotonic()
    try:
        return fn(), time.monotonic() - start
    except SearchError as e:
        return e, time.monotonic() - start


# --- results ---------------------------------------------------------------------------


def test_results_come_back_cleaned_numbered_and_capped(proxies, certs):
    page = ddg_page([
        ("Talvor Brenn - Pocketpedia", "https://pocket.example/talvor-brenn",
         "Talvor Brenn was born in Ostrava in 1921."),
        ("Talvor Brenn &amp; the <i>Ostrava</i> years", "https://pocket.example/years",
         "&amp;lt;b&amp;gt;Talvor&amp;lt;/b&amp;gt; Brenn &amp;amp;\tfriends \x07 lived   there."),
        ("Symbols only", "https://pocket.example/noise", "@@@ ### !!! ~~~ ^^^ *** ///"),
        ("Script link", "javascript:alert(1)", "Talvor Brenn clickbait text here"),
        ("Talvor Brenn (long)", "https://pocket.example/long", "Talvor Brenn " + "word " * 400),
    ], raw=True)
    fake = proxies([(200, page)], certs)
    results = web(fake.url, certs, **ROOMY).search("Talvor Brenn", k=3)

    assert fake.connects == [f"{HOST}:443"]
    assert b"q=Talvor+Brenn" in fake.requests[0]  # the real client sent the real query
    assert [r.link_id for r in results] == [1, 2, 3]
    by_url = {r.url: r for r in results}
    assert set(by_url) == {"https://pocket.example/talvor-brenn", "https://pocket.example/years",
                           "https://pocket.example/long"}  # noise and javascript: dropped
    assert by_url["https://pocket.example/talvor-brenn"].snippet == "Talvor Brenn was born in Ostrava in 1921."
    years = by_url["https://pocket.example/years"]
    assert years.title == "Talvor Brenn & the Ostrava years"
    assert years.snippet == "Talvor Brenn & friends lived there."  # double-escaped tags gone
    long = by_url["https://pocket.example/long"].snippet
    assert len(long) <= 500 and long.endswith("…")


def test_empty_result_page_is_an_empty_list_not_an_error(proxies, certs):
    fake = proxies([(200, ddg_page([]))], certs)
    assert web(fake.url, certs, **ROOMY).search("nothing matches this") == []
    assert len(fake.connects) == 1  # an empty page is an answer: no retry


# --- failures ------------------------------------------------------------------------------


def test_rate_limit_is_retried_with_backoff_then_fails(proxies, certs):
    fake = proxies([(429, "<html>slow down</html>")], certs)
    err, elapsed = timed(lambda: web(fake.url, certs, max_retries=2, backoff_s=0.2).search("q"))
    assert isinstance(err, SearchError)
    assert "rate limited (HTTP 429)" in str(err) and "3 attempts" in str(err)
    assert len(fake.requests) == 3
    assert 0.2 + 0.4 <= elapsed < 3.0 + SLACK_S  # two backoff pauses, inside the deadline
    assert "\n" not in str(err)


def test_rate_limit_then_success_recovers(proxies, certs):
    page = ddg_page([("Ostrava", "https://pocket.example/ostrava", "Ostrava is a city of Varnland.")])
    fake = proxies([(429, "no"), (200, page)], certs)
    results = web(fake.url, certs, **ROOMY).search("Ostrava")
    assert [(r.link_id, r.url) for r in results] == [(1, "https://pocket.example/ostrava")]
    assert len(fake.requests) == 2


def test_server_that_never_answers_is_retried_then_fails_within_deadline(proxies):
    fake = proxies(["hang"])
    ws = web(fake.url, deadline_s=2.5, timeout_s=0.5, max_retries=5, backoff_s=0.1)
    err, elapsed = timed(lambda: ws.search("anything"))
    assert isinstance(err, SearchError) and "timed out" in str(err)
    assert len(fake.connects) >= 2  # retried
    assert elapsed < 2.5 + SLACK_S


def test_overall_deadline_bounds_backend_auto(proxies):
    """backend='auto' walks many engines (12–30 s when hung); the deadline cuts it short."""
    fake = proxies(["hang"])
    ws = web(fake.url, backend="auto", deadline_s=1.5, timeout_s=10.0, max_retries=3)
    err, elapsed = timed(lambda: ws.search("anything"))
    assert isinstance(err, SearchError) and "timed out" in str(err)
    assert 1.4 <= elapsed < 1.5 + SLACK_S
    assert len(fake.connects) >= 1


def test_dropped_connection_is_retried_then_reported(proxies):
    fake = proxies(["close"])
    err, _ = timed(lambda: web(fake.url, max_retries=2).search("anything"))
    assert isinstance(err, SearchError) and "closed connection" in str(err)
    assert len(fake.connects) == 3


def test_proxy_refusing_the_tunnel_is_reported(proxies):
    fake = proxies(["refuse"])
    err, _ = timed(lambda: web(fake.url, max_retries=1).search("anything"))
    assert isinstance(err, SearchError) and "502" in str(err)
    assert len(fake.connects) == 2


def test_dns_failure_fails_at_once():
    # .invalid never resolves (RFC 6761): the client cannot even find its proxy.
    ws = web("http://restreact-no-such-host.invalid:3128", max_retries=3, backoff_s=1.0)
    err, elapsed = timed(lambda: ws.search("anything"))
    assert isinstance(err, SearchError)
    assert str(err).startswith("web search failed: cannot reach DuckDuckGo (offline?)")
    assert "dns" in str(err).lower()
    assert elapsed < 1.0  # no backoff pauses for an offline machine


def test_connection_refused_fails_at_once():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    err, elapsed = timed(lambda: web(f"http://127.0.0.1:{port}", backoff_s=1.0).search("q"))
    assert isinstance(err, SearchError) and "cannot reach DuckDuckGo" in str(err)
    assert "refused" in str(err).lower()
    assert elapsed < 1.0


# --- the parts that need no network ---------------------------------------------------


def test_bad_arguments_are_refused_clearly():
    ws = WebSearch(proxy="http://127.0.0.1:9")
    assert isinstance(ws, SearchBackend) and ws.name == "web"
    with pytest.raises(SearchError, match="empty query"):
        ws.search("   ")
    with pytest.raises(SearchError, match="k must be at least 1"):
        ws.search("q", k=0)
    with pytest.raises(ValueError, match="deadline_s"):
        WebSearch(deadline_s=0)


def test_clean_text_strips_markup_entities_and_control_characters():
    raw = "<p>Born&nbsp;in <b>Ostrava</b></p>\x1b[31m &amp;lt;script&amp;gt;x&amp;lt;/script&amp;gt;\u200b\r\n end"
    assert clean_text(raw) == "Born in Ostrava [31m x end"
    assert clean_text(None) == ""
    assert truncate("alpha beta gamma delta", 12) == "alpha beta…"
    assert is_garbage("") and is_garbage("-- | -- | --") and not is_garbage("Ostrava, 1921")
