"""Every bad input is answered: property-based tests over corpora and strategy specs.

Random bytes, random text, empty files, huge single lines, and random strategy specs
(from the grammar, mangled, or arbitrary strings) go to the library and to
``tbptt train``. Every case either trains or fails with the library's own error type
(:class:`TbpttError`) and a one-line message; the command line then prints exactly
one line on stderr and exits with code 2 -- never another exception, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from tbptt.cli import main
from tbptt.data import load_corpus, prepare_text
from tbptt.errors import TbpttError
from tbptt.models import ModelConfig, RecurrentLM
from tbptt.train import MetricsWriter, TrainConfig, Trainer
from tbptt.truncation import STRATEGIES, parse_strategy

SETTINGS = dict(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- what the inputs look like -----------------------------------------------------------

WORDS = "the time traveller held in his hand a glittering metallic framework".split()
NUMBERS = ["0", "1", "2", "3", "5", "-1", "1.5", "1e9", "1e400", "nan", "inf", "", "x", "00", "+4"]
KEYS = ["alpha", "checkpoint", "beta", "", "ALPHA"]


@st.composite
def specs(draw) -> str:
    """Strategy specs: well-formed, mangled, or arbitrary text."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=24))
    name = draw(st.sampled_from([*sorted(STRATEGIES), "Regular", "bogus", ""]))
    args = draw(st.lists(st.sampled_from(NUMBERS), max_size=3))
    kwargs = draw(st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(NUMBERS)), max_size=2))
    parts = args + [f"{k}={v}" for k, v in kwargs]
    sep = draw(st.sampled_from([":", ": ", "::", ""])) if parts else ""
    return name + sep + ",".join(parts)


def words_text(draw_list) -> bytes:
    return " ".join(WORDS[i % len(WORDS)] for i in draw_list).encode()


corpora = st.one_of(
    st.binary(max_size=300),  # random bytes (mostly not UTF-8, sometimes NUL)
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=300).map(str.encode),
    st.just(b""),
    st.sampled_from([b"\n\n\n", b"   ", b"\xef\xbb\xbf", b"a", b"ab"]),
    st.lists(st.integers(0, 50), min_size=1, max_size=200).map(words_text),  # real-ish text
)
# A huge single line (no newline at all): trained with many streams to stay fast.
huge_lines = st.tuples(
    st.sampled_from(["ab", "x", "time ", "\u00e9t\u00e9 "]), st.integers(20_000, 120_000)
).map(lambda t: (t[0] * (t[1] // len(t[0]))).encode())


def run_cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: its own one-line message, exit 2
            code = e.code
    return code, err.getvalue()


def check_answer(code, err, argv):
    if currently_in_test_context():
        event("trained" if code == 0 else "refused")  # see --hypothesis-show-statistics
    if code == 0:
        return
    assert code == 2, (code, err, argv)
    lines = err.splitlines()
    assert len(lines) == 1, (err, argv)
    assert "Traceback" not in err and lines[0].startswith("tbptt"), (err, argv)


def cli_argv(path, out, spec, *, batch_size, tokens, normalize):
    return [
        "train", "--data", str(path), "--out", str(out), f"--strategy={spec}",
        "--tokens", tokens, "--normalize", normalize, "--batch-size", str(batch_size),
        "--epochs", "1", "--hidden-size", "3", "--num-layers", "1", "--embedding-size", "2",
        "--sample-length", "3", "--no-progress", "--checkpoint-every", "epoch",
    ]  # fmt: skip


# -- the command line ----------------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=60, **SETTINGS)
@given(
    # about half the cases are text and specs that should train, so both paths are exercised
    corpus=st.one_of(
        corpora, st.lists(st.integers(0, 50), min_size=30, max_size=200).map(words_text)
    ),
    spec=st.one_of(
        specs(),
        st.sampled_from(["regular:4", "randomized:3", "full", "full:5", "k1k2:2,4", "variable:4"]),
    ),
    batch_size=st.sampled_from([1, 2, 3, 64]),
    tokens=st.sampled_from(["char", "word"]),
    normalize=st.sampled_from(["letters", "none"]),
)
def test_cli_trains_or_answers_in_one_line(corpus, spec, batch_size, tokens, normalize):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_bytes(corpus)
        argv = cli_argv(
            path, Path(tmp) / "run", spec, batch_size=batch_size, tokens=tokens, normalize=normalize
        )
        check_answer(*run_cli(argv), argv)


VALID_SPECS = st.one_of(
    st.builds("regular:{}".format, st.integers(1, 6)),
    st.builds("randomized:{}".format, st.integers(1, 6)),
    st.builds("randomized:{},alpha={}".format, st.integers(1, 6), st.sampled_from([2.5, 4])),
    st.builds("full:{}".format, st.integers(1, 8)),
    st.builds(lambda a, b: f"k1k2:{a},{a + b}", st.integers(1, 3), st.integers(0, 4)),
    st.builds("variable:{}".format, st.integers(2, 6)),
    st.just("full"),
)


@pytest.mark.slow
@settings(max_examples=8, **SETTINGS)
@given(
    words=st.lists(st.integers(0, 50), min_size=40, max_size=120),
    spec=VALID_SPECS,
    batch_size=st.integers(1, 3),
    sampling=st.sampled_from(["sequential", "random"]),
)
def test_cli_trains_on_text_with_any_valid_spec(words, spec, batch_size, sampling):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_bytes(words_text(words))
        argv = cli_argv(
            path, Path(tmp) / "run", spec, batch_size=batch_size, tokens="char", normalize="letters"
        )
        code, err = run_cli([*argv, "--sampling", sampling])
        assert code == 0, (err, argv)


@pytest.mark.slow
@settings(max_examples=6, **SETTINGS)
@given(corpus=huge_lines, spec=st.sampled_from(["regular:35", "randomized:20", "full:50", "x:"]))
def test_cli_on_a_huge_single_line(corpus, spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_bytes(corpus)
        argv = cli_argv(
            path, Path(tmp) / "run", spec, batch_size=512, tokens="char", normalize="none"
        )
        check_answer(*run_cli(argv), argv)


def test_cli_answers_a_missing_or_directory_corpus(tmp_path):
    for data in (tmp_path / "missing.txt", tmp_path):
        argv = cli_argv(
            data, tmp_path / "run", "regular:4", batch_size=2, tokens="char", normalize="none"
        )
        code, err = run_cli(argv)
        # a directory is a corpus, never a download cache: this one holds no text file
        assert code == 2, err
        check_answer(code, err, argv)


@pytest.mark.parametrize("flag", ["--embedding-dropout", "--output-dropout"])
def test_cli_refuses_a_dropout_rate_outside_0_1_naming_its_flag(small_text, tmp_path, flag):
    argv = [*cli_argv(small_text, tmp_path / "run", "regular:4", batch_size=2, tokens="char",
                      normalize="none"), flag, "1.5"]  # fmt: skip
    code, err = run_cli(argv)
    check_answer(code, err, argv)
    assert code == 2 and f"must be in [0, 1), got 1.5 (flags: {flag})" in err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


# -- the library ---------------------------------------------------------------------------


# Each library test counts its outcomes: "trains or raises TbpttError" would also pass if
# every case were refused, so a share of the generated cases must get through (the shares
# are deterministic: derandomize=True). The floors sit at about half the observed shares
# (parsed 0.21, planned 1.0, prepared 0.69, trained 0.25).
PARSED, PLANNED, PREPARED, TRAINED = 0.1, 0.5, 0.3, 0.1


def test_strategy_specs_parse_or_raise_spec_errors():
    seen = Counter()

    # Specs from the grammar (nearly all refused) or well-formed; each parsed one plans
    # windows for a few fixed stream lengths, so the examples are spent on the specs.
    @settings(max_examples=300, **SETTINGS)
    @given(spec=st.one_of(specs(), VALID_SPECS))
    def case(spec):
        try:
            strategy = parse_strategy(spec)
        except TbpttError as e:
            assert "\n" not in str(e) and str(e)
            seen["refused"] += 1
            return
        seen["parsed"] += 1
        assert parse_strategy(strategy.spec).spec == strategy.spec, "spec round-trips"
        generator = torch.Generator().manual_seed(0)
        for r in (1, 2, 5, 17, 60):
            try:
                window = strategy.plan(r, generator)
            except TbpttError:
                seen["plan refused"] += 1
                continue
            seen["planned"] += 1
            assert 1 <= window.length <= r
            if window.gates is not None:
                assert len(window.gates) == window.length
                assert all(math.isfinite(g) and g >= 0 for g in window.gates)
            assert math.isfinite(window.lr_scale) and window.lr_scale > 0

    case()
    assert seen["parsed"] >= PARSED * (seen["parsed"] + seen["refused"]), seen
    assert seen["planned"] >= PLANNED * (seen["planned"] + seen["plan refused"]), seen


def test_corpora_load_and_prepare_or_raise_data_errors():
    seen = Counter()

    @settings(max_examples=150, **SETTINGS)
    @given(corpus=st.one_of(corpora, huge_lines), level=st.sampled_from(["char", "word"]))
    def case(corpus, level):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "corpus.txt"
            path.write_bytes(corpus)
            try:
                text, _ = load_corpus(path)
                data = prepare_text(text, level=level, normalization="none")
            except TbpttError as e:
                assert "\n" not in str(e)
                seen["refused"] += 1
                return
        seen["prepared"] += 1
        assert len(data.train) + len(data.valid) >= 2
        assert int(data.train.max()) < len(data.vocab)

    case()
    assert seen["prepared"] >= PREPARED * (seen["prepared"] + seen["refused"]), seen


def test_trainer_trains_or_raises_library_errors():
    seen = Counter()

    @settings(max_examples=40, **SETTINGS)
    @given(
        n=st.integers(0, 60),
        vocab=st.integers(2, 5),
        spec=st.one_of(specs(), st.sampled_from(["regular:3", "randomized:2", "full", "k1k2:2,4"])),
        batch_size=st.integers(1, 4),
        sampling=st.sampled_from(["sequential", "random"]),
    )
    def case(n, vocab, spec, batch_size, sampling):
        tokens = torch.arange(n) % vocab
        model = RecurrentLM(
            ModelConfig(vocab_size=vocab, kind="gru", hidden_size=3, num_layers=1, embedding_size=2)
        )
        try:
            config = TrainConfig(strategy=spec, batch_size=batch_size, epochs=1, sampling=sampling)
            trainer = Trainer(model, tokens, tokens[:0], config, metrics=MetricsWriter(None))
            trainer.fit()
        except TbpttError as e:
            assert "\n" not in str(e)
            seen["refused"] += 1
            return
        seen["trained"] += 1
        assert trainer.epoch == 1 and trainer.step >= 1

    case()
    assert seen["trained"] >= TRAINED * (seen["trained"] + seen["refused"]), seen
