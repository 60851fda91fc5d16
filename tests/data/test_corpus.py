"""Corpus download and caching: a partial or corrupt download never becomes the cached file.

Downloads come from a file:// URL or a local HTTP server the test starts (no internet).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tbptt.data.corpus import RemoteFile, fetch, load_corpus, read_text
from tbptt.errors import DataError

# Larger than the 64 KiB blocks fetch reads, so half of it reaches the disk before a stall.
CONTENT = ("The Time Traveller (for so it will be convenient to speak of him)\n" * 3000).encode()
SHA1 = hashlib.sha1(CONTENT).hexdigest()


def remote(url: str, sha1: str = SHA1) -> RemoteFile:
    return RemoteFile(name="corpus.txt", url=url, sha1=sha1, size=len(CONTENT))


def debris(directory: Path) -> list[Path]:
    return list(directory.glob(".corpus.txt.*.part"))


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "source" / "corpus.txt"
    path.parent.mkdir()
    path.write_bytes(CONTENT)
    return path


def test_download_verifies_and_caches(source, tmp_path):
    cache = tmp_path / "cache"
    path = fetch(remote(source.as_uri()), cache)
    assert path == cache / "corpus.txt" and path.read_bytes() == CONTENT
    source.unlink()  # the second call needs no network: the verified cached copy is used
    assert fetch(remote(source.as_uri()), cache).read_bytes() == CONTENT
    assert not debris(cache)


def test_a_download_with_the_wrong_checksum_is_not_cached(source, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="has SHA-1 .* expected 0000") as e:
        fetch(remote(source.as_uri(), sha1="0" * 40), cache)
    assert "\n" not in str(e.value)
    assert not (cache / "corpus.txt").exists() and not debris(cache)


def test_a_corrupt_cached_copy_is_reported_not_used(source, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "corpus.txt").write_bytes(CONTENT[:100])
    with pytest.raises(DataError, match="delete it so tbptt downloads a fresh copy"):
        fetch(remote(source.as_uri()), cache)


@pytest.mark.parametrize(
    "url", ["file:///no/such/file.txt", "http://127.0.0.1:9/corpus.txt", "notaurl"]
)
def test_unreachable_sources_give_one_line(url, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="cannot download") as e:
        fetch(remote(url), cache)
    assert "\n" not in str(e.value) and "pass your own file" in str(e.value)
    assert e.value.options == ("data.path",)  # the command line names its flag for it
    assert not (cache / "corpus.txt").exists() and not debris(cache)


class _Server:
    """A local HTTP server; ``mode`` picks how it answers."""

    def __init__(self, mode: str):
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                if outer.mode == "missing":
                    self.send_error(404)
                    return
                self.send_response(200)
                size = 2 * len(CONTENT) if outer.mode == "oversized" else len(CONTENT)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if outer.mode == "trickle":  # a byte every 50 ms, for 20 s, then hang up
                    try:
                        for byte in CONTENT[:400]:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            if outer.release.wait(0.05):
                                return
                    except OSError:  # the client hung up
                        pass
                    return
                if outer.mode == "oversized":  # not the pinned file: twice as long, held open
                    self.wfile.write(CONTENT + CONTENT)
                    self.wfile.flush()
                    outer.release.wait(120)  # longer than the client's per-read timeout
                    return
                self.wfile.write(CONTENT[: len(CONTENT) // 2])
                self.wfile.flush()
                if outer.mode == "stall":  # half sent; wait (the client gets killed meanwhile)
                    outer.release.wait(30)
                    return
                if outer.mode == "full":
                    self.wfile.write(CONTENT[len(CONTENT) // 2 :])
                # "truncated": close with half the promised bytes

        self.mode = mode
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/corpus.txt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_over_http(tmp_path):
    with _Server("full") as server:
        assert fetch(remote(server.url), tmp_path).read_bytes() == CONTENT


@pytest.mark.parametrize(
    "mode, reason", [("truncated", "stopped after 99000 of 198000 bytes"), ("missing", "Not Found")]
)
def test_a_connection_cut_short_or_refused_leaves_no_cached_file(mode, reason, tmp_path):
    with _Server(mode) as server, pytest.raises(DataError, match=reason) as e:
        fetch(remote(server.url), tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "corpus.txt").exists() and not debris(tmp_path)


def test_a_trickling_server_is_cut_off_by_the_overall_deadline(tmp_path):
    # Every byte arrives well within the per-read timeout and the server goes on for 20 s,
    # so only the 0.5 s deadline can end the download with this message (without it: 20 s,
    # then "stopped after 400 bytes"); no clock of the test's own that a busy machine misses.
    with _Server("trickle") as server, pytest.raises(DataError, match="within 0.5 s") as e:
        fetch(remote(server.url), tmp_path, timeout=10.0, deadline=0.5)
    assert "\n" not in str(e.value) and e.value.options == ("data.path",)
    assert not (tmp_path / "corpus.txt").exists() and not debris(tmp_path)


def test_an_oversized_download_stops_at_the_expected_size(tmp_path):
    # The server announces and sends twice the file, then holds the connection open until
    # the test ends: reading to the end would wait for the per-read timeout and fail with
    # it ("timed out"), so this message shows the read stopped at the expected size.
    with _Server("oversized") as server, pytest.raises(DataError, match="more than the expected"):
        fetch(remote(server.url), tmp_path, timeout=30.0)
    assert not (tmp_path / "corpus.txt").exists() and not debris(tmp_path)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_the_cached_file_gets_the_permissions_a_plain_open_would_give(umask, source, tmp_path):
    previous = os.umask(umask)
    try:
        path = fetch(remote(source.as_uri()), tmp_path / "cache")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_partial_downloads_are_removed_and_fresh_ones_kept(source, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    stale, fresh = cache / ".corpus.txt.dead.part", cache / ".corpus.txt.live.part"
    stale.write_bytes(CONTENT[:10])
    fresh.write_bytes(CONTENT[:10])  # possibly another process's download in progress
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    fetch(remote(source.as_uri()), cache, timeout=1.0, deadline=60.0)
    assert not stale.exists() and fresh.exists()
    os.utime(fresh, (an_hour_ago, an_hour_ago))  # also when the cached copy is already there
    fetch(remote(source.as_uri()), cache, timeout=1.0, deadline=60.0)
    assert not debris(cache)


CHILD = textwrap.dedent(
    """
    import sys
    from tbptt.data.corpus import RemoteFile, fetch
    url, sha1, size, directory = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    fetch(RemoteFile("corpus.txt", url, sha1, size), directory)
    """
)


@pytest.mark.slow
def test_a_download_killed_half_way_never_becomes_the_cached_file(tmp_path):
    with _Server("stall") as server:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, server.url, SHA1, str(len(CONTENT)), str(tmp_path)],
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            parts = debris(tmp_path)
            if parts and parts[0].stat().st_size > 0:
                break
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    parts = debris(tmp_path)
    assert parts and 0 < parts[0].stat().st_size < len(CONTENT), "killed mid-download"
    assert not (tmp_path / "corpus.txt").exists()
    # The next attempt downloads afresh, verifies and caches; the debris is ignored.
    with _Server("full") as server:
        assert fetch(remote(server.url), tmp_path).read_bytes() == CONTENT


def test_load_corpus_reads_files_and_caches_into_directories(source, tmp_path, monkeypatch):
    text, path = load_corpus(source)
    assert path == source and text == CONTENT.decode()
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"  \n\t ", "is empty"),
        (b"abc\x00def", "binary"),
        (b"caf\xe9 au lait", "not UTF-8 text .* offset 3"),
    ],
)
def test_unreadable_text_gives_one_line(content, message, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        read_text(path)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="is a directory"):
        read_text(tmp_path)


def test_an_unwritable_cache_directory_is_reported(source, tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.raises(DataError, match="cannot write to data directory"):
        fetch(remote(source.as_uri()), blocker / "sub")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(DataError, match="cannot write to data directory"):
            fetch(remote(source.as_uri()), locked)
