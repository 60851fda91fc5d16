"""Bridges to other tools, each behind an optional extra.

- :mod:`tbptt.integrations.lightning` (``pip install 'tbptt[lightning]'``): tbptt's
  strategies inside a Lightning 2.x ``LightningModule`` (manual optimization, one
  optimizer step per window, state carried across batches and saved in checkpoints).
- :mod:`tbptt.integrations.tensorboard` (``pip install 'tbptt[tensorboard]'``): the
  scalars of ``metrics.jsonl`` as TensorBoard event files.

Importing this package imports neither tool.
"""
