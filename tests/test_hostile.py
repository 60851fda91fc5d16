"""Hostile inputs (issue 24): a user's files are never deleted or truncated, crafted files are
data (never paths, code or hangs), and every bad input is one line.

One parametrized case per probe, each on tiny files, so that the whole class stays fixed.
The probes act as a hostile user, a killed process or a planted link would.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tbptt.atomic import write_atomically
from tbptt.cli import main
from tbptt.data import read_text
from tbptt.data.documents import read_documents
from tbptt.data.prepared import (
    MARKER,
    OutputExists,
    load_prepared,
    prepare,
    prepare_series_file,
    written_files,
)
from tbptt.data.prepared.format import vocab_sha256
from tbptt.data.tokenize import vocab_difference
from tbptt.errors import CheckpointError, TbpttError
from tbptt.train.checkpoint import RunLock, save_checkpoint
from tbptt.train.distributed import group as distributed

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the time traveller held in his hand a glittering metallic framework".split()


@pytest.fixture
def text(tmp_path) -> Path:
    g = torch.Generator().manual_seed(3)
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (120,), generator=g)))
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def refused(fn, *args, **kwargs) -> str:
    with pytest.raises(TbpttError) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


def snapshot(*roots: Path) -> dict[str, object]:
    """Every entry under ``roots`` as it is (a link's target, a file's bytes), links not followed."""
    seen = {}
    for root in roots:
        for top, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(top) / name
                if p.is_symlink():
                    seen[str(p)] = ("link", os.readlink(p))
                elif p.is_file():
                    seen[str(p)] = p.read_bytes()
    return seen


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- 1. prepare --overwrite removes only what prepare wrote --------------------------------


def _issue_case(tmp, text):  # the issue's own reproduction
    d = tmp / "dataset"
    d.mkdir()
    (d / "corpus.txt").write_bytes(text.read_bytes())
    (d / "meta.json").write_text('{"license": "x"}\n')
    (d / "labels.csv").write_text("a\n")
    return d / "corpus.txt", d, ()


def _named_like_a_preparation(tmp, text):  # a user's meta.json and tokens.bin, no marker
    d = tmp / "out"
    d.mkdir()
    (d / "meta.json").write_text('{"format": "tbptt-prepared", "version": 2}\n')
    (d / "tokens.bin").write_bytes(b"mine")
    return text, d, ()


def _a_preparation_and_a_users_file(tmp, text):
    d = tmp / "out"
    prepare(text, d)
    (d / "notes.txt").write_text("mine")
    return text, d, ()


def _a_forged_marker(tmp, text):  # the marker names a file prepare never writes
    d = tmp / "out"
    d.mkdir()
    names = ["corpus.txt", "meta.json"]
    (d / MARKER).write_text(json.dumps({"format": "tbptt-prepared", "version": 2, "files": names}))
    (d / "meta.json").write_text("{}")
    (d / "corpus.txt").write_text("mine")
    return text, d, ()


def _a_linked_file_in_a_preparation(tmp, text):
    d = tmp / "out"
    prepare(text, d)
    (tmp / "elsewhere.bin").write_bytes((d / "tokens.bin").read_bytes())
    (d / "tokens.bin").unlink()
    (d / "tokens.bin").symlink_to(tmp / "elsewhere.bin")
    return text, d, ()


def _documents_into_themselves(tmp, text):
    d = tmp / "docs"
    d.mkdir()
    (d / "a.txt").write_bytes(text.read_bytes())
    (d / "b.txt").write_text("another document")
    return d, d, ("--documents",)


def _the_input_under_the_output(tmp, text):
    d = tmp / "out"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "corpus.txt").write_bytes(text.read_bytes())
    return d / "sub" / "corpus.txt", d, ()


@pytest.mark.parametrize(
    "probe",
    [
        _issue_case,
        _named_like_a_preparation,
        _a_preparation_and_a_users_file,
        _a_forged_marker,
        _a_linked_file_in_a_preparation,
        _documents_into_themselves,
        _the_input_under_the_output,
    ],
)
def test_prepare_overwrite_never_removes_what_prepare_did_not_write(tmp_path, text, probe):
    source, out, flags = probe(tmp_path, text)
    before = snapshot(tmp_path)
    code, _, err = cli("prepare", source, "--out", out, "--overwrite", "--no-progress", *flags)
    assert code == 2, err
    one_line(err)
    assert snapshot(tmp_path) == before, "nothing added, changed or removed"


def test_overwrite_replaces_a_verified_preparation_and_names_the_flag(tmp_path, text):
    out = tmp_path / "p"
    prepare(text, out)
    assert written_files(out) == ["meta.json", "tokens.bin"]
    # the library names its keyword, the command line its flag
    message = refused(prepare, text, out, level="word")
    assert "overwrite=True" in message and "--" not in message
    with pytest.raises(OutputExists):
        prepare(text, out)
    code, _, err = cli("prepare", text, "--out", out, "--no-progress")
    assert code == 2 and "--overwrite" in one_line(err) and "(overwrite)" not in err
    code, _, err = cli("prepare", text, "--out", out, "--overwrite", "--tokens", "word")
    assert code == 0, err
    assert load_prepared(out).level == "word"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "p"], "no debris"
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "meta.json", "tokens.bin"]


# -- 2. a run writes only inside its directory ----------------------------------------------


def _link(run: Path, tmp: Path, name: str, target: str) -> Path:
    outside = tmp / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "file").write_text("the user's file\n")
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    link = run / name
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(target.format(outside=outside, run=run))
    return outside


@pytest.mark.parametrize(
    "name,target",
    [
        (".lock", "{outside}/file"),  # the issue's probe
        ("metrics.jsonl", "{outside}/file"),
        ("config.json", "{outside}/new"),  # dangling: writing through it creates a file
        ("checkpoint.pt", "../outside/file"),
        ("checkpoints/step-000000002.pt", "{outside}/file"),
        (".lock", "{run}/config.json"),  # inside, but never written through
    ],
)
def test_a_planted_link_in_a_run_directory_is_refused(tmp_path, name, target):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}\n")
    outside = _link(run, tmp_path, name, target)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError) as e:
        RunLock(run).acquire()
    assert "\n" not in str(e.value) and "symbolic link" in str(e.value)
    assert snapshot(tmp_path) == before
    assert not (outside / "new").exists()


def test_a_linked_checkpoints_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (run / "checkpoints").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="checkpoints ->"):
        RunLock(run).acquire()


def test_resume_with_a_linked_lock_leaves_the_outside_file_whole(tmp_path, text):
    run = tmp_path / "run"
    argv = ["--strategy", "regular:6", "--model", "gru", "--hidden-size", "4", "--num-layers"]
    argv += ["1", "--embedding-size", "4", "--batch-size", "4", "--max-steps", "2"]
    argv += ["--threads", "1", "--no-progress", "--sample-length", "0"]
    code, _, err = cli("train", "--data", text, "--out", run, *argv)
    assert code == 0, err
    outside = _link(run, tmp_path, ".lock", "{outside}/file")
    code, _, err = cli("train", "--resume", run)
    assert code == 2 and "symbolic link" in one_line(err)
    assert (outside / "file").read_text() == "the user's file\n"


def test_an_atomic_write_replaces_a_link_and_never_writes_through_it(tmp_path):
    outside = _link(tmp_path / "run", tmp_path, "summary.json", "{outside}/file")
    write_atomically(tmp_path / "run" / "summary.json", "new\n")
    assert (outside / "file").read_text() == "the user's file\n"
    assert not (tmp_path / "run" / "summary.json").is_symlink()


# -- 3, 4. meta.json is data: names, sizes and every field checked ---------------------------


@pytest.fixture
def prepared(tmp_path, text) -> Path:
    prepare(text, tmp_path / "p", level="char", normalization="letters")
    return tmp_path / "p"


def _edit_meta(path: Path, edit) -> None:
    meta = json.loads((path / "meta.json").read_text())
    edit(meta)
    (path / "meta.json").write_text(json.dumps(meta))


def _meta(edit):
    return lambda path: _edit_meta(path, edit)


def _add_file(name):
    return _meta(lambda m: m["files"].update({name: dict(m["files"]["tokens.bin"])}))


def _rename_tokens(m):
    m["files"]["../outside.bin"] = m["files"].pop("tokens.bin")


def _bytes(m):
    m["files"]["tokens.bin"]["bytes"] += 1


def _replace_tokens(how):
    def replace(path: Path) -> None:
        tokens = path / "tokens.bin"
        data = tokens.read_bytes()
        tokens.unlink()
        if how == "fifo":
            os.mkfifo(tokens)
        elif how == "zero":
            tokens.symlink_to("/dev/zero")
        else:  # a link to a copy outside: the same bytes, still not the directory's own
            (path.parent / "copy.bin").write_bytes(data)
            tokens.symlink_to(path.parent / "copy.bin")

    return replace


@pytest.mark.parametrize(
    "damage,words",
    [
        (_add_file("/dev/zero"), "lists the files"),
        (_add_file("../../../../etc/hostname"), "lists the files"),
        (_meta(_rename_tokens), "lists the files"),
        (_meta(_bytes), "records"),
        (_replace_tokens("zero"), "symbolic link"),
        (_replace_tokens("copy"), "symbolic link"),
        (_replace_tokens("fifo"), "not a regular file"),
    ],
    ids=["dev-zero", "parent-path", "renamed", "bytes", "link-dev-zero", "link-copy", "fifo"],
)
def test_files_named_by_meta_are_the_directorys_own_regular_files(prepared, damage, words):
    damage(prepared)
    with deadline(10):
        message = refused(load_prepared, prepared)
    assert words in message and "tbptt prepare" in message, message


def _set(key, value):
    return lambda m: m.__setitem__(key, value)


def _vocab(i, value):
    return lambda m: m["vocab"].__setitem__(i, value)


def _shift_count(m):  # a negative count, the sum kept
    m["train_counts"][1] -= 10**6
    m["train_counts"][2] += 10**6


def _count_more(m):
    m["valid_counts"][1] += 1


def _rot(m):  # one token changed into one the text never had: damage to the vocabulary
    m["vocab"][3] = "\u2603"


@pytest.mark.parametrize(
    "edit,words",
    [
        (_vocab(3, 5), "not a string"),
        (_vocab(3, None), "not a string"),
        (_shift_count, "train_counts"),
        (_count_more, "valid_counts summing"),
        (_set("level", "bogus"), "level 'bogus'"),
        (_set("normalize", "upper"), "normalize 'upper'"),
        (_set("eos", "yes"), "eos"),
        (_set("documents", 3), "documents"),
        (_set("valid_fraction", 2.0), "valid_fraction"),
        (_set("dtype", "uint16"), "dtype"),
        (_set("vocab_sha256", "0" * 64), "SHA-256"),
        (_rot, "SHA-256"),
        (lambda m: m.pop("vocab_sha256"), "vocab_sha256"),
        (_set("kind", "pickle"), "kind"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_every_field_of_meta_is_checked(prepared, edit, words):
    _edit_meta(prepared, edit)
    message = refused(load_prepared, prepared, verify_checksum=False)
    assert words in message and "tbptt prepare" in message, message


def test_a_not_a_number_in_meta_is_refused(prepared):
    raw = (prepared / "meta.json").read_text()
    (prepared / "meta.json").write_text(
        raw.replace('"valid_fraction": 0.1', '"valid_fraction": NaN')
    )
    assert "cannot be read" in refused(load_prepared, prepared)


def test_a_crafted_vocabulary_is_one_line_on_the_command_line(prepared, tmp_path):
    _edit_meta(prepared, _vocab(3, None))  # the issue's probe: a TypeError traceback before
    code, _, err = cli("train", "--data", prepared, "--out", tmp_path / "run", "--max-steps", "1")
    assert code == 2 and "vocabulary entry" in one_line(err)
    assert not (tmp_path / "run").exists()


# -- 6. a prepared series' report tables are checked against its sizes ----------------------


@pytest.fixture
def series(tmp_path) -> Path:
    g = torch.Generator().manual_seed(0)
    rows = [f"{d},{v:.3f}" for d, v in enumerate(torch.randn(40, generator=g).tolist())]
    (tmp_path / "w.csv").write_text("day,temp\n" + "\n".join(rows) + "\n")
    prepare_series_file(tmp_path / "w.csv", tmp_path / "s", target=["temp"])
    return tmp_path / "s"


def _shorten(key):
    return lambda m: m.__setitem__(key, m[key][:-1])


@pytest.mark.parametrize(
    "edit,words",
    [
        (_shorten("valid_persistence"), "valid_persistence"),  # the issue's probe
        (_shorten("valid_actual"), "valid_actual"),
        (lambda m: m["valid_persistence"][0].append(1.0), "valid_persistence"),
        (_set("train_target_mean", []), "train_target_mean"),
        (_shorten("valid_index"), "validation labels"),
        (_set("targets_scaler", {"mean": [0.0, 1.0], "std": [1.0, 1.0]}), "targets_scaler"),
        (_set("horizon", 0), "horizon"),
        (_set("rows", "many"), "rows"),
        (_set("input_columns", [3]), "input_columns"),
        (_set("series", 2), "no starts.bin"),  # several series would never reset their state
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_damaged_series_meta_is_one_line(series, edit, words):
    _edit_meta(series, edit)
    message = refused(load_prepared, series)
    assert words in message and "tbptt prepare" in message, message


def test_a_shortened_persistence_forecast_is_one_line_on_the_command_line(series, tmp_path):
    _edit_meta(series, _shorten("valid_persistence"))
    argv = ["--batch-size", "2", "--strategy", "regular:4", "--max-steps", "1", "--no-progress"]
    code, _, err = cli("train", "--data", series, "--out", tmp_path / "run", *argv)
    assert code == 2 and "valid_persistence" in one_line(err)


# -- 11. a lost torchrun rank is one line ---------------------------------------------------


def _gloo_reset(*args, **kwargs):
    raise RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:25223: "
        "Connection reset by peer. This is typically caused by a remote worker hanging"
    )


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    "group,lost",
    [
        (distributed.Group(rank=0, world=2), "rank 1 of the 2 processes"),
        (distributed.Group(rank=1, world=2), "rank 0 of the 2 processes"),
        (None, "rank 2 of the 4 processes"),  # found among the registered processes
        (distributed.Group(rank=0, world=3), "a rank of the 3 processes"),  # none registered
    ],
)
def test_a_lost_rank_is_one_line_naming_it_and_how_to_resume(monkeypatch, group, lost):
    if group is None:
        host = distributed.socket.gethostname()
        peers = ((host, os.getpid()), (host, os.getppid()), (host, _dead_pid()), ("far", 1))
        group = distributed.Group(rank=0, world=4, peers=peers)
    monkeypatch.setattr(distributed, "_collective_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(distributed.dist, "all_reduce", _gloo_reset)
    monkeypatch.setattr(distributed.dist, "all_gather_object", _gloo_reset)
    for collective in (lambda: group.max([1.0]), lambda: group.sum([1.0]), lambda: group.gather(1)):
        with pytest.raises(distributed.RankLost) as e:
            collective()
        assert lost in str(e.value) and "\n" not in str(e.value)
        assert f"resume the run from it on {group.world} processes" in str(e.value)
        assert e.value.__cause__ is None and e.value.__suppress_context__


def test_a_collective_error_that_is_no_lost_rank_passes(monkeypatch):
    def mismatch(*args, **kwargs):
        raise RuntimeError("tensor size mismatch in all_reduce")

    monkeypatch.setattr(distributed, "_collective_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(distributed.dist, "all_reduce", mismatch)
    with pytest.raises(RuntimeError, match="mismatch"):
        distributed.Group(rank=0, world=2).sum([1.0])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the ranks")
def test_kill_9_of_a_torchrun_rank_is_one_line_on_rank_0(tmp_path, text):
    from tests.cli.test_torchrun import env, rank_pids, torchrun

    text.write_text(text.read_text() * 40)
    out = tmp_path / "run"
    argv = ["train", "--data", text, "--out", out, "--strategy", "regular:8", "--model", "gru"]
    argv += ["--hidden-size", "4", "--num-layers", "1", "--embedding-size", "4", "--batch-size"]
    argv += ["4", "--epochs", "50", "--checkpoint-every", "5", "--threads", "1", "--no-progress"]
    argv += ["--sample-length", "0"]
    launcher = subprocess.Popen(
        [*torchrun(), *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        metrics, deadline_at = out / "metrics.jsonl", time.monotonic() + 240
        while launcher.poll() is None and time.monotonic() < deadline_at:
            if metrics.is_file() and metrics.read_bytes().count(b"\n") >= 10:
                os.kill(rank_pids(launcher)[1], signal.SIGKILL)
                break
            time.sleep(0.01)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    ours = [line for line in stderr.splitlines() if "tbptt train: error:" in line]
    assert len(ours) == 1 and "rank 1 of the 2 processes was lost" in ours[0], stderr[-3000:]
    assert "[rank0]" not in stderr, "rank 0 printed no traceback"


# -- 13. prepare removes the debris of a killed prepare, and only its own -------------------


def test_a_killed_prepare_leaves_debris_the_next_prepare_removes(tmp_path, text):
    script = (
        "import os, sys, time\n"
        "from tbptt.data.prepared import prepare\n"
        "def stall(phase, read, total):\n"
        "    if phase == 'ids':\n"
        "        open(sys.argv[3], 'w').close()\n"
        "        time.sleep(600)\n"
        "prepare(sys.argv[1], sys.argv[2], progress=stall)\n"
    )
    flag = tmp_path / "writing"
    child = subprocess.Popen([sys.executable, "-c", script, text, tmp_path / "p", flag])
    try:
        with deadline(120):
            while not flag.exists():
                assert child.poll() is None, "the preparation ended early"
                time.sleep(0.02)
        debris = [p for p in tmp_path.iterdir() if p.name.startswith(".p.")]
        assert len(debris) == 1 and debris[0].name.endswith(".tmp"), debris
        # another prepare of the same output while the first is at work leaves its directory
        prepare(text, tmp_path / "p")
        assert debris[0].exists()
    finally:
        child.kill()
        child.wait()
    assert debris[0].exists(), "a killed prepare leaves its temporary directory"
    prepare(text, tmp_path / "p", overwrite=True)
    assert not debris[0].exists(), "the next prepare of the same output removed it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "p", "writing"]


def test_debris_with_a_users_file_keeps_that_file(tmp_path, text, caplog):
    debris = tmp_path / ".p.0123abcd.tmp"
    debris.mkdir()
    (debris / "tokens.bin").write_bytes(b"\0" * 8)
    (debris / "mine.txt").write_text("mine")
    with caplog.at_level(logging.WARNING):
        prepare(text, tmp_path / "p")
    assert sorted(p.name for p in debris.iterdir()) == ["mine.txt"]
    assert "did not write" in caplog.text


# -- 14. a documents directory skips the preparations inside it -----------------------------


def test_a_preparation_inside_a_documents_directory_is_skipped_and_said(tmp_path, caplog):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, word in enumerate(WORDS):
        (docs / f"{i:02d}.txt").write_text(f"{word} {word} {word}\n")
    code, _, err = cli("prepare", docs, "--documents", "--out", docs / "prepared", "--no-progress")
    assert code == 0, err
    code, out, err = cli("prepare", docs, "--documents", "--out", tmp_path / "p", "--no-progress")
    assert code == 0, err  # before: "docs/prepared/starts.bin looks binary"
    assert "skipped prepared" in out
    assert load_prepared(tmp_path / "p").documents == len(WORDS)
    with caplog.at_level(logging.WARNING):
        assert len(read_documents(docs)) == len(WORDS)
    assert "prepared" in caplog.text and "not documents" in caplog.text


# -- 15. files are written with the user's umask ---------------------------------------------


@pytest.mark.parametrize("umask", [0o077, 0o022])
def test_files_respect_the_umask(tmp_path, text, umask):
    previous = os.umask(umask)
    try:
        write_atomically(tmp_path / "config.json", "{}\n")
        save_checkpoint({"step": 1}, tmp_path / "checkpoint.pt")
        with RunLock(tmp_path):
            pass
        prepare(text, tmp_path / "p")
    finally:
        os.umask(previous)
    files = ["config.json", "checkpoint.pt", ".lock", "p/tokens.bin", "p/meta.json", f"p/{MARKER}"]
    for name in files:
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o666 & ~umask, f"{name}: {oct(mode)}"


# -- 16. messages that mislead ----------------------------------------------------------------


def test_a_symlink_loop_is_not_called_missing(tmp_path):
    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    for fn in (read_text, read_documents, lambda p: prepare(p, tmp_path / "p")):
        message = refused(fn, loop)
        assert "loop" in message and "does not exist" not in message, message
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "gone.txt")
    assert "symbolic link to" in refused(read_text, dangling)


@pytest.mark.parametrize("normalization", ["none", "letters"])
def test_too_short_a_file_suggests_none_only_when_it_is_not_none(tmp_path, normalization):
    (tmp_path / "one.txt").write_text("!")
    message = refused(prepare, tmp_path / "one.txt", tmp_path / "p", normalization=normalization)
    assert ("try the normalization 'none'" in message) == (normalization == "letters"), message


@pytest.mark.parametrize(
    "there,here,words",
    [
        (["<unk>", "a", "b"], ["<unk>", "b", "a"], "another order (id 1 is 'a' there, 'b' here)"),
        (["<unk>", "a", "b"], ["<unk>", "a", "c"], "'b' only there; 'c' only here"),
        (list("xabcde"), list("xa"), "'b', 'c', 'd' and 1 more only there"),
    ],
)
def test_a_vocabulary_difference_is_said(there, here, words):
    assert words in vocab_difference(there, here)


def test_a_preparation_says_how_its_vocabulary_differs_from_the_runs(prepared):
    data = load_prepared(prepared)
    itos = [*data.vocab.itos[:-1], "\u2603"]  # the run had a token the corpus lacks
    message = refused(data.with_vocabulary, itos)
    assert (
        "'\u2603' only in the run" in message
        and f"{data.vocab.itos[-1]!r} only in the corpus" in message
    )


def test_the_vocabulary_digest_is_of_the_tokens_in_order():
    assert vocab_sha256(["<unk>", "a", "b"]) != vocab_sha256(["<unk>", "b", "a"])


# -- 5, 9, 10, 12: a checkpoint's configuration, generate's bounds, a run that skipped ---------

TINY_RUN = ["--model", "gru", "--hidden-size", "6", "--num-layers", "1", "--embedding-size", "4",
            "--batch-size", "4", "--epochs", "1", "--strategy", "regular:6", "--threads", "1",
            "--no-progress", "--sample-length", "5"]  # fmt: skip


@pytest.fixture
def trained(tmp_path, text) -> Path:
    run = tmp_path / "run"
    code, _, err = cli("train", "--data", text, "--out", run, *TINY_RUN)
    assert code == 0, err
    return run


def _recrafted(run: Path, edit) -> None:
    """Every checkpoint of ``run`` rewritten with ``edit(payload)`` and a valid digest (as a
    hostile user with the format's description would)."""
    from tbptt.train.checkpoint import list_checkpoints, load_checkpoint

    for path in [run / "checkpoint.pt", *list_checkpoints(run)]:
        payload = load_checkpoint(path)
        edit(payload)
        path.unlink()
        save_checkpoint(payload, path)


def _huge(payload):
    payload["config"]["model"]["hidden_size"] = 10**12


def _no_rng(payload):
    payload["trainer"]["rng"] = {}


@pytest.mark.parametrize(
    "edit, verb, words",
    [
        (_huge, "evaluate", "parameters"),
        (_huge, "resume", "parameters"),
        (_no_rng, "resume", "rng lacks"),
    ],
)
def test_a_crafted_checkpoint_configuration_is_one_line(trained, edit, verb, words):
    _recrafted(trained, edit)
    argv = ["evaluate", trained] if verb == "evaluate" else ["train", "--resume", trained]
    code, _, err = cli(*argv, *(["--epochs", "2"] if verb == "resume" else []))
    assert code == 2 and words in one_line(err), err


def test_output_paths_come_from_the_command_line_not_the_checkpoint(trained, tmp_path):
    elsewhere = tmp_path / "elsewhere"

    def board(payload):
        payload["config"]["output"]["tensorboard"] = str(elsewhere)

    _recrafted(trained, board)
    code, _, err = cli("train", "--resume", trained, "--epochs", "2")
    assert code == 0, err
    assert not elsewhere.exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--seed", "99999999999999999999999"], "--seed"),
        (["--length", "1000000000"], "--length"),
    ],
)
def test_generate_bounds_its_seed_and_length(trained, flags, words):
    code, _, err = cli("generate", trained, *flags)
    assert code == 2 and words in one_line(err), err


def test_generate_prints_a_long_text_as_it_is_drawn(trained, capsys):
    from tbptt.cli import evaluate

    chunks = []
    real = evaluate._flush
    evaluate._flush = lambda chunk, data, before: (
        chunks.append(len(chunk)) or real(chunk, data, before)
    )
    try:
        code, out, err = cli("generate", trained, "--length", str(3 * evaluate.STREAM_CHUNK + 7))
    finally:
        evaluate._flush = real
    assert code == 0, err
    assert chunks == [evaluate.STREAM_CHUNK] * 3 + [7]


def test_a_run_that_skipped_most_steps_fails_with_its_outputs_kept(tmp_path, text):
    run = tmp_path / "run"
    argv = [
        "train",
        "--data",
        text,
        "--out",
        run,
        *TINY_RUN,
        "--model",
        "lru",
        "--lr",
        "1e5",
        "--clip",
        "0",
        "--nonfinite",
        "skip",
    ]  # fmt: skip (the issue's probe)
    code, out, err = cli(*argv)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_steps"] > summary["steps"] / 2
    last = err.strip().splitlines()[-1]  # (after "no sample": its outputs are non-finite)
    assert code == 2 and "skipped for non-finite values" in last and "Traceback" not in err, err
    assert (run / "curves.png").is_file() and (run / "checkpoint.pt").is_file()


def test_weights_that_do_not_fit_say_which_sizes_differ(trained):
    def other_size(payload):
        payload["config"]["model"]["hidden_size"] = 9  # the weights stay of hidden size 6

    _recrafted(trained, other_size)
    code, _, err = cli("evaluate", trained)
    line = one_line(err)
    assert code == 2 and "torch.Size([18, 4])" in line and "torch.Size([27, 4])" in line, line
