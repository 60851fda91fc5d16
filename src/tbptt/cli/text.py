"""What a text run prints about how its text was read, and its test metrics."""

from __future__ import annotations

from tbptt.cli.common import format_metric
from tbptt.data.config import DataConfig
from tbptt.data.dataset import TextData

__all__ = ["text_reading", "test_line"]

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
