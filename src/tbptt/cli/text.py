"""A text run's own parts: how its text was read, its test metrics, and the options of a
prepared corpus."""

from __future__ import annotations

import dataclasses

from torch import nn

from tbptt.cli.common import format_metric, given_flags
from tbptt.data.config import DataConfig
from tbptt.data.dataset import TextData, unigram_perplexity
from tbptt.data.prepared import PreparedText
from tbptt.errors import ConfigError
from tbptt.train import RunConfig
from tbptt.train.evaluate import score

__all__ = ["prepared_options", "test_line", "test_metrics", "text_reading"]

_NORMALIZATIONS = {
    "letters": "normalization letters (lowercase letters only, the lecture's)",
    "none": "text read as it is (no normalization)",
}


def text_reading(config: DataConfig) -> str:
    """``normalization letters (...)`` or ``text read as it is``, and the word-level options."""
    parts = [_NORMALIZATIONS.get(config.normalize, f"normalization {config.normalize}")]
    if config.eos:
        parts.append("<eos> at line ends")
    if config.min_freq > 1:
        parts.append(f"tokens seen < {config.min_freq} times are <unk>")
    if config.max_vocab:
        parts.append(f"at most {config.max_vocab} tokens")
    if config.strip_gutenberg:
        parts.append("Gutenberg header and footer removed")
    return ", ".join(parts)


def test_line(summary: dict, data: TextData) -> str:
    """``test perplexity X (bits per character Y) on N tokens``."""
    line = f"test perplexity {format_metric(summary['test_ppl'])}"
    if "test_bpc" in summary:
        line += f" (bits per character {format_metric(summary['test_bpc'])})"
    n = len(data.test) if data.test is not None else 0
    line += f" on {n:,} {data.level} tokens"
    if "unigram_test_ppl" in summary:
        line += f" (unigram baseline {format_metric(summary['unigram_test_ppl'])})"
    return line


def test_metrics(model: nn.Module, data: TextData, config: RunConfig, objective) -> dict:
    """``test_<metric>`` of the test file, scored as validation is (the test text follows the
    validation text: its first token is predicted from the last validation token)."""
    before = data.valid if len(data.valid) else data.train
    metrics = score(
        model,
        data.test_split(),
        objective=objective,
        batch_size=config.train.eval_batch_size,
        window=config.train.eval_window,
        context=before[-1:].cpu(),
    )
    out = {f"test_{k}": v for k, v in metrics.items()}
    if data.level == "char" and "test_bpt" in out:
        out["test_bpc"] = out["test_bpt"]
    out["unigram_test_ppl"] = unigram_perplexity(data.train, data.test, len(data.vocab))
    return out


def prepared_options(config: RunConfig, data: PreparedText, args):
    """The data section with the token options a prepared corpus was made with; a flag that
    asks for others is refused (they are chosen when preparing)."""
    fixed = data.token_options()
    given = given_flags(args)
    clash = [k for k, v in fixed.items() if k in given and getattr(config.data, k) != v]
    if clash:
        made = ", ".join(f"{k.replace('_', '-')} {fixed[k]!r}" for k in clash)
        raise ConfigError(
            f"{data.path} was prepared with {made}; token options are chosen when preparing: "
            "drop them here, or prepare the corpus again (tbptt prepare)",
            options=tuple(f"data.{k}" for k in clash),
        )
    return dataclasses.replace(config.data, **fixed)
