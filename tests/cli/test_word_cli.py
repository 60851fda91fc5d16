"""`tbptt train` on word-level corpora: train/valid/test layout, test metrics, adaptive softmax,
the text defaults, and one-line answers to bad input."""

from __future__ import annotations

import json
import random

import pytest

from tbptt.cli import main

TINY = ["--hidden-size", "32", "--num-layers", "1", "--embedding-size", "16", "--epochs", "1",
        "--batch-size", "8", "--strategy", "regular:20", "--lr", "0.01", "--no-progress",
        "--sample-length", "5", "--dropout", "0"]  # fmt: skip


def sentences(n: int, seed: int) -> str:
    """Lines from a small grammar: what follows a word is predictable, its frequency is not."""
    rng = random.Random(seed)
    nouns = ["cat", "dog", "bird", "<unk>", "horse"]
    verbs = ["sees", "eats", "likes", "chases"]
    lines = []
    for _ in range(n):
        adj = rng.choice(["", "big ", "small "])
        lines.append(f"the {adj}{rng.choice(nouns)} {rng.choice(verbs)} a {rng.choice(nouns)} .")
    return "\n".join(lines) + "\n"


@pytest.fixture
def corpus(tmp_path):
    directory = tmp_path / "corpus"
    directory.mkdir()
    for name, n, seed in (("train", 1500, 0), ("valid", 150, 1), ("test", 150, 2)):
        (directory / f"{name}.txt").write_text(sentences(n, seed))
    return directory


@pytest.mark.slow
def test_a_word_level_corpus_beats_the_unigram_baseline_on_validation_and_test(
    corpus, tmp_path, capsys
):
    out = tmp_path / "run"
    code = main(["train", "--data", str(corpus), "--tokens", "word", "--out", str(out), *TINY])
    assert code == 0
    printed = capsys.readouterr().out
    first = printed.splitlines()[0]
    assert "test" in first and "text read as it is" in first and "<eos>" in first
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_ppl"] < summary["unigram_ppl"], summary
    assert summary["test_ppl"] < summary["unigram_test_ppl"], summary
    assert f"test perplexity {summary['test_ppl']:.3f}" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["normalize"] == "none" and config["data"]["eos"] is True
    lines = (corpus / "test.txt").read_text().splitlines()
    assert config["dataset"]["test_tokens"] == sum(len(x.split()) + 1 for x in lines)  # + <eos>
    # tbptt evaluate scores the same validation text the same way
    code = main(["evaluate", "--checkpoint", str(out), "--json", str(tmp_path / "e.json")])
    assert code == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert abs(evaluated["ppl"] - summary["val_ppl"]) < 1e-9 * summary["val_ppl"]
    # ... and the test file, named by its split or given again as --data
    for extra in (["--split", "test"], ["--data", str(corpus / "test.txt")]):
        code = main(["evaluate", str(out), *extra, "--json", str(tmp_path / "t.json")])
        assert code == 0
        evaluated = json.loads((tmp_path / "t.json").read_text())
        assert evaluated["split"] == "test"
        assert abs(evaluated["ppl"] - summary["test_ppl"]) < 1e-9 * summary["test_ppl"]


@pytest.mark.slow
def test_separate_files_with_an_adaptive_softmax_and_char_level_test_bpc(corpus, tmp_path):
    out = tmp_path / "run"
    files = [f"--{k}={corpus / f'{k}.txt'}" for k in ("train", "valid", "test")]
    code = main(["train", *files, "--tokens", "word", "--adaptive-softmax", "--out", str(out),
                 *TINY])  # fmt: skip
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    cutoffs = [int(c) for c in config["model"]["adaptive_softmax"].split(",")]
    assert 0 < cutoffs[0] < config["dataset"]["vocab_size"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_ppl"] < summary["unigram_test_ppl"], summary
    out = tmp_path / "chars"
    assert main(["train", *files, "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_bpc"] == summary["test_bpt"] > 0


@pytest.mark.slow
def test_a_folder_of_documents_trains_and_downloads_nothing(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("TBPTT_DATA_DIR", str(cache))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"{i}.txt").write_text(sentences(60, i))
    code = main(["train", "--data", str(docs), "--out", str(tmp_path / "run"), *TINY])
    assert code == 0, capsys.readouterr().err
    assert not cache.exists()


@pytest.fixture
def bad(tmp_path, corpus):
    plain = tmp_path / "plain.txt"
    plain.write_text("just some text without any gutenberg markers\n" * 50)
    u16 = tmp_path / "u16.txt"
    u16.write_bytes(("text " * 200).encode("utf-16-le"))
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    return {"plain": plain, "u16": u16, "empty": empty, "corpus": corpus}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train", "{corpus}/train.txt"], "training file needs a validation file"),
        (["--valid", "{corpus}/valid.txt"], "need a training file"),
        (["--data", "{plain}", "--eos"], "end-of-line token applies to word level"),
        (["--data", "{plain}", "--tokens", "word", "--max-vocab", "1"], "maximum vocabulary"),
        (["--data", "{plain}", "--min-freq", "0"], "minimum token frequency"),
        (["--data", "{plain}", "--strip-gutenberg"], "no Project Gutenberg header"),
        (["--data", "{u16}"], "UTF-16"),
        (["--data", "{empty}"], "holds no non-empty text file"),
        (["--data", "{corpus}", "--tokens", "word", "--adaptive-softmax", "5,2"], "cut-offs"),
        (["--data", "{plain}", "--tie-weights", "--embedding-size", "3"], "weight tying"),
        (["--data", "{plain}", "--objective", "lm", "--adaptive-softmax", "x"], "cut-offs"),
    ],
)
def test_bad_word_level_input_gets_one_line_and_exit_2(argv, message, bad, tmp_path, capsys):
    argv = [a.format(**bad) for a in argv]
    code = main(["train", *argv, "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "run").exists()


def test_word_level_flags_reach_the_run_configuration():
    from tbptt.cli import build_parser
    from tbptt.cli.common import run_config_from_args

    argv = ["train", "--tokens", "word", "--no-eos", "--min-freq", "2", "--max-vocab", "500",
            "--strip-gutenberg", "--cache-dir", "c", "--adaptive-softmax", "--tie-weights"]  # fmt: skip
    config = run_config_from_args(build_parser().parse_args(argv))
    assert config.data.eos is False  # given, though False
    assert (config.data.min_freq, config.data.max_vocab) == (2, 500)
    assert config.data.strip_gutenberg and config.data.cache_dir == "c"
    assert config.model.adaptive_softmax == "auto" and config.model.tie_weights
    plain = run_config_from_args(build_parser().parse_args(["train"]))
    assert plain.data.eos is None and plain.data.normalize is None  # the text defaults decide
    assert plain.data.resolved().normalize == "letters" and plain.data.resolved().eos is False


def test_a_run_saved_before_the_end_of_line_token_is_read_as_it_was_trained():
    from tbptt.train import RunConfig

    saved = RunConfig().to_dict()
    saved["data"].update(tokens="word", normalize="letters")
    del saved["data"]["eos"]  # a config.json written before the field existed
    assert RunConfig.from_dict(saved).data.resolved().eos is False
    saved["data"]["eos"] = None  # a current one: word level means <eos>
    assert RunConfig.from_dict(saved).data.resolved().eos is True


def test_the_first_line_says_how_the_text_was_read(time_machine, tmp_path):
    from tbptt.data.config import DataConfig, load_dataset

    lecture = load_dataset(DataConfig(path=str(time_machine))).reading()
    assert lecture.startswith("normalization letters") and "<eos>" not in lecture
    mine = tmp_path / "mine.txt"
    mine.write_text("Some Text. Some more text, some.\n" * 3)
    words = load_dataset(DataConfig(path=str(mine), tokens="word", min_freq=3)).reading()
    assert (
        words
        == "text read as it is (no normalization), <eos> at line ends, tokens seen < 3 times are <unk>"
    )
