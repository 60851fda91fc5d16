"""tbptt's strategies in a Lightning 2.x ``LightningModule`` (``pip install 'tbptt[lightning]'``).

Lightning 2.0 removed ``truncated_bptt_steps``. :class:`TruncatedBPTT` gives it back,
for every tbptt strategy: mix it into your ``LightningModule``, call
:meth:`~TruncatedBPTT.configure_tbptt` in ``__init__``, and its ``training_step``
does, for each batch::

    batch (B, T, ...)  ->  time-major (T, B, ...)
    while rows are left in the batch:
        window = strategy.plan(rows left, generator)      # length, gates, lookback, lr factor
        state  = fresh if the batch / window starts a stream, else the carried state, detached
        loss   = objective.loss_sum(model(window rows, state, gates, resets)) / (B * K)
        zero_grad; manual_backward(loss); clip; optimizer.step()    # one step per window
        carried state = detach(state)                     # into the next window and batch

with the same engine as :class:`tbptt.Trainer` (:func:`tbptt.train.engine.run_window`:
gates, TBPTT(k1, k2) lookback, activation checkpointing, per-stream resets), so a window's
gradient is the one tbptt's own trainer computes. The carried state, the lookback
context and the strategy's random generator are saved in Lightning checkpoints
(``on_save_checkpoint``) and restored from them; :class:`StreamBatches` handed to ``fit``
saves its position with them, so a run resumed from a checkpoint written after any
batch, mid-epoch too, continues exactly; where it cannot (a ``DataLoader`` has no position
to save), the resume is refused at its first batch (:meth:`TruncatedBPTT.tbptt_check_resume`).

Batches are dicts with ``inputs`` and ``targets`` (and optionally ``resets``: a stream
(document, episode) starts before that row; ``mask``: the rows whose loss counts;
``reset``: a bool, the batch starts every stream afresh) or tuples ``(inputs, targets[,
resets])``, batch-first (B, T, ...) unless ``batch_first=False``. Consecutive batches
must continue the same B streams for the carried state to make sense; :class:`StreamBatches`
cuts a tbptt split into such batches (the layout of :class:`tbptt.Trainer`).

The batch end is always a window end: the state crosses into the next batch detached
(regular truncation's cut). For ``regular:K`` and ``k1k2:K1,K2`` make the batch length a
multiple of K (K1) and the windows are exactly the trainer's; a randomized strategy's
windows are drawn inside each batch, so its estimate is unbiased within a batch and
each batch end adds one cut: use batches much longer than K.
"""

from tbptt.integrations.lightning.batches import StreamBatches
from tbptt.integrations.lightning.module import CHECKPOINT_KEY, TruncatedBPTT

__all__ = ["TruncatedBPTT", "StreamBatches", "CHECKPOINT_KEY"]
