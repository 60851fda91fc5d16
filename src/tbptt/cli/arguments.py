"""The flags of the verbs that build data, a model and a training setup (train, compare,
analyze): where the rows come from, the model, the optimizer and the run, each defaulting
to None so a flag given explicitly is always known; :mod:`tbptt.cli.common` turns them
into a :class:`~tbptt.train.RunConfig` (its ``FLAG_KEYS`` maps each to its key).
"""

from __future__ import annotations

import argparse

from tbptt.data import NORMALIZERS, TOKENIZERS
from tbptt.data.config import DataConfig
from tbptt.data.tasks import TASKS, task_names
from tbptt.models import MODEL_KINDS, ModelConfig
from tbptt.train import OBJECTIVES, OPTIMIZERS, TrainConfig

__all__ = [
    "STRATEGY_HELP",
    "add_data_arguments",
    "add_model_arguments",
    "add_optimizer_arguments",
    "columns",
]

# The strategy specs, as tbptt train and tbptt compare print them under --help.
STRATEGY_HELP = """\
strategy spec: full | full:N | regular:K | randomized:K[,alpha=A] | k1k2:K1,K2 | variable:K
               (full and full:N take ",checkpoint" or ",checkpoint=S": full:checkpoint)
  full              exact BPTT over each column's whole stream, one step per epoch
  full:N            exact BPTT over independent N-step sequences (fresh state each)
  full:checkpoint   the same gradient with activation checkpointing over sqrt(T)-step
                    segments (memory O(sqrt T), one extra forward); checkpoint=S: S steps
  regular:K         detach the state every K steps, one step per window
  randomized:K      unbiased randomized truncation, mean window K (cut prob. 1/K,
                    surviving edges' gradients scaled by 1/(1 - 1/K))
  randomized:K,alpha=A   Tallec & Ollivier's polynomial schedule (A > 2, e.g. 4)
  k1k2:K1,K2        TBPTT(k1, k2): a step every K1 steps; the losses of those K1 steps
                    backpropagate to K2 steps before the window's end (K1 <= K2)
  variable:K        AWD-LSTM variable length: base K (p 0.95) or K/2, length
                    max(5, int(N(base, 5))), learning rate times length / K
  adaptive:D        Aicher et al.: K re-chosen each epoch from the decay of the state
                    gradients' norms (relative bias bound <= D), trained as k1k2:K,2K-1
  measured:D        regular:K with K re-chosen each epoch: the smallest whose measured
                    relative gradient bias is <= D (k=K0, max=KMAX, every=E epochs)
  rtrl              online: exact real-time recurrent learning, the state never cut
  uoro              online: unbiased rank-one RTRL (Tallec & Ollivier 2017)
  snap:N            online: SnAp-N (Menick et al.), RTRL kept on what N steps connect
  snap-lagged:N     online: SnAp's mask applied after each step's gradient (any model)
  layer-rtrl        online: exact RTRL inside each element-wise layer (minGRU, minLSTM,
                    LRU), spatial backpropagation between layers (Zucchet et al.)
                    (online ones take update_every=U: rtrl:update_every=10, snap:1,update_every=10)
"""


def columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def add_data_arguments(g) -> None:
    """Where the rows come from: text, documents, a time series (CSV/npy/npz) or a task."""
    d = DataConfig()
    g.add_argument(
        "--data",
        metavar="PATH",
        help="a text file (UTF-8, or UTF-16/32 with a byte-order mark), a time series (.csv, "
        ".npy, .npz), a corpus directory holding train.txt, valid.txt (and test.txt), a "
        "directory of documents, or a directory made by tbptt prepare (default: The Time "
        "Machine)",
    )
    g.add_argument(
        "--train", metavar="FILE", help="text: the training file (with --valid, [--test])"
    )
    g.add_argument("--valid", metavar="FILE", help="text: the validation file")
    g.add_argument(
        "--test",
        metavar="FILE",
        help="text: a test file, scored (perplexity) when training ends",
    )
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where The Time Machine is downloaded (default: $TBPTT_DATA_DIR or ~/.cache/tbptt)",
    )
    g.add_argument(
        "--task",
        metavar="SPEC",
        help="a built-in synthetic task instead of a file: "
        + "; ".join(TASKS[n].usage(n) for n in task_names()),
    )
    g.add_argument("--tokens", choices=TOKENIZERS, help=f"text: token level (default: {d.tokens})")
    g.add_argument(
        "--normalize",
        choices=NORMALIZERS,
        help="text: letters = lowercase letters, everything else one space (the lecture's); "
        "none = the text as it is (default: letters for The Time Machine, none for your file)",
    )
    g.add_argument(
        "--eos",
        action=argparse.BooleanOptionalAction,
        help="word level: each line end is the token <eos> (default: on for word level)",
    )
    g.add_argument(
        "--min-freq",
        type=int,
        metavar="N",
        help=f"text: tokens seen fewer than N times in training are <unk> (default: {d.min_freq})",
    )
    g.add_argument(
        "--max-vocab",
        type=int,
        metavar="N",
        help="text: keep the N - 1 most frequent tokens and <unk> (default: 0 = all)",
    )
    g.add_argument(
        "--strip-gutenberg",
        action="store_true",
        default=None,
        help="text: drop a Project Gutenberg header and licence footer from each file",
    )
    g.add_argument(
        "--valid-fraction",
        type=float,
        help=f"tail held out for validation (default: {d.valid_fraction})",
    )
    g.add_argument(
        "--target",
        type=columns,
        metavar="COL[,COL]",
        help="time series: the column(s) to forecast (several = multivariate)",
    )
    g.add_argument(
        "--inputs",
        type=columns,
        metavar="COL[,COL]",
        help="time series: the input columns (default: the target columns)",
    )
    g.add_argument(
        "--horizon",
        type=int,
        metavar="H",
        help=f"time series: forecast H steps ahead (default: {d.horizon})",
    )
    g.add_argument(
        "--series-id",
        metavar="COL",
        help="time series: a column naming independent series (the state resets between them)",
    )
    g.add_argument(
        "--time-column",
        metavar="COL",
        help="time series: the column labelling rows in predictions (default: Date/Time if any)",
    )
    g.add_argument(
        "--missing",
        choices=("error", "drop", "ffill"),
        help="time series: missing cells are an error (default), dropped rows (each gap starts "
        "a new segment), or forward-filled (filled targets are never scored)",
    )
    g.add_argument(
        "--direct",
        action="store_true",
        default=None,
        help="time series: forecast every step 1..H of --horizon at once, with metrics per step",
    )
    g.add_argument(
        "--season",
        type=int,
        metavar="N",
        help="time series: the seasonal baseline's period in rows (default: detected from the "
        "training rows' autocorrelation; 0: none)",
    )
    g.add_argument(
        "--categorical",
        type=columns,
        metavar="COL[,COL]",
        help="time series: input columns read as categories, one-hot (text columns are found "
        "by themselves)",
    )
    g.add_argument(
        "--calendar",
        type=columns,
        metavar="FIELD[,FIELD]",
        help="time series: inputs from the time column: month, dayofweek, dayofyear, day, "
        "hour, minute",
    )
    g.add_argument(
        "--warm-up",
        type=int,
        metavar="N",
        help=f"time series: validation opens each series with up to N earlier rows, unscored, "
        f"so the state has read the series (default: {d.warm_up})",
    )


def add_model_arguments(g, defaults: ModelConfig | None = None) -> None:
    """--model, --hidden-size, --num-layers, --embedding-size, --dropout, zoneout, spectral norm,
    --objective; the help quotes ``defaults`` (the verb's own, default: tbptt train's)."""
    d = defaults or ModelConfig()
    g.add_argument(
        "--model",
        choices=MODEL_KINDS,
        help=f"cell (default: {d.kind}; linear = identity RNN; mingru, minlstm, lru = linear "
        "recurrences, docs/linear-recurrences.md)",
    )
    g.add_argument("--hidden-size", type=int, help=f"(default: {d.hidden_size})")
    g.add_argument("--num-layers", type=int, help=f"(default: {d.num_layers})")
    g.add_argument(
        "--embedding-size",
        type=int,
        help=f"token embedding width, 0 = one-hot (default: {d.embedding_size}); for float "
        "features a linear projection, 0 = the features as they are (default: 0)",
    )
    g.add_argument(
        "--dropout",
        type=float,
        help=f"between the recurrent layers, and on the embedding and the head's input unless "
        f"given below (default: {d.dropout})",
    )
    g.add_argument(
        "--highway",
        type=int,
        metavar="P",
        help="time series: add a linear autoregression on the last P inputs to the output "
        "(LSTNet; docs/forecasting.md); -1 (default): the order and ridge penalty chosen on "
        "the training rows' tail, 0: none",
    )
    g.add_argument(
        "--embedding-dropout",
        type=float,
        metavar="P",
        help="dropout on the embedded inputs (default: --dropout)",
    )
    g.add_argument(
        "--output-dropout",
        type=float,
        metavar="P",
        help="dropout on the last layer's outputs, before the head (default: --dropout)",
    )
    g.add_argument(
        "--zoneout",
        type=float,
        metavar="Z",
        help="zoneout rate of the hidden state (Krueger et al. 2016; default: 0 = off)",
    )
    g.add_argument(
        "--zoneout-cell",
        type=float,
        metavar="Z",
        help="LSTM cell-state zoneout rate (default: the same as --zoneout)",
    )
    g.add_argument(
        "--spectral-norm",
        type=float,
        metavar="C",
        help="bound the spectral norm of every recurrent block by C, exactly at every step "
        "(e.g. 1.0; default: 0 = off)",
    )
    g.add_argument(
        "--adaptive-softmax",
        nargs="?",
        const="auto",
        metavar="C1,C2",
        help="language model: an adaptive softmax output layer (Grave et al. 2017), cut at "
        "token ids C1,C2,... (default cut-offs: chosen from token frequencies); exact "
        "log-probabilities in evaluation",
    )
    g.add_argument(
        "--tie-weights",
        action="store_true",
        default=None,
        help="language model: the output layer shares the embedding's weights (Press & Wolf "
        "2017; the embedding size becomes the hidden size unless given)",
    )
    g.add_argument(
        "--objective",
        choices=tuple(OBJECTIVES),
        help="lm: next-token cross-entropy (perplexity); classify: per-step classes "
        "(accuracy); regress: squared error (RMSE, MAE in the data's units); "
        "default: what the data implies",
    )


def add_optimizer_arguments(g) -> None:
    """--batch-size, --optimizer, --lr, --lr-schedule, --weight-decay, --momentum, --clip,
    --sampling, --nonfinite, --device, --threads."""
    t = TrainConfig()
    g.add_argument("--batch-size", type=int, help=f"parallel streams B (default: {t.batch_size})")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default: {t.optimizer})")
    g.add_argument("--lr", type=float, help=f"learning rate (default: {t.lr})")
    g.add_argument(
        "--lr-schedule",
        choices=("cosine", "constant"),
        help=f"cosine: decay to 0 over the epochs (default: {t.lr_schedule})",
    )
    g.add_argument("--weight-decay", type=float, help=f"(default: {t.weight_decay})")
    g.add_argument("--momentum", type=float, help="SGD momentum (default: 0)")
    g.add_argument(
        "--clip", type=float, help=f"global gradient-norm clip, 0 = off (default: {t.clip})"
    )
    g.add_argument(
        "--sampling",
        choices=("sequential", "random"),
        help="sequential (default): state carries across windows; random: random offsets, "
        "fresh state",
    )
    g.add_argument(
        "--nonfinite",
        choices=("stop", "skip"),
        help="on a NaN/inf loss or gradient: stop or skip the step",
    )
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cpu)")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
