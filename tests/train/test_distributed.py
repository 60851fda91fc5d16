"""Distributed training (tbptt.train.distributed): 2 gloo processes on loopback against one process.

Each test spawns real ranks (torch.multiprocessing, spawn) that join a gloo group on
127.0.0.1 and run a :class:`DistributedTrainer`; every rank writes what it saw to a file
the test compares with a single-process :class:`Trainer` over the same B streams. Every
launch has a deadline, so a deadlock fails the test instead of blocking CI.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tbptt.data.streams import SequentialStream, StreamData
from tbptt.errors import CheckpointError, ConfigError
from tbptt.models import ModelConfig, RecurrentLM
from tbptt.train import TrainConfig, Trainer
from tbptt.train.distributed import DistributedTrainer, ShardedStream, setup, shard_slice, shutdown

WORLD = 2
DEADLINE_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, fn, args):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    setup("cpu", timeout_s=DEADLINE_S)
    try:
        fn(rank, *args)
    finally:
        shutdown()


def run_ranks(fn, *args, world=WORLD, deadline=DEADLINE_S) -> None:
    """Run ``fn(rank, *args)`` in ``world`` gloo processes; fail (not hang) past ``deadline``."""
    ctx = mp.start_processes(
        _entry, args=(world, free_port(), fn, args), nprocs=world, join=False, start_method="spawn"
    )
    end = time.monotonic() + deadline
    try:
        while not ctx.join(timeout=max(0.1, end - time.monotonic())):
            if time.monotonic() > end:
                raise AssertionError(f"the {world} ranks did not finish within {deadline:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()


# -- tiny run ---------------------------------------------------------------------------

B = 4


def model(seed=0, adaptive="") -> RecurrentLM:
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=7,
        kind="gru",
        hidden_size=4,
        num_layers=1,
        embedding_size=3,
        dropout=0.0,
        adaptive_softmax=adaptive,
    )
    return RecurrentLM(config)


def rare_split(n=161) -> StreamData:
    """Token 6 (an adaptive softmax's tail cluster) only in the first streams: rank 1's
    windows never use the tail's parameters, rank 0's do."""
    tokens = torch.randint(0, 6, (n,), generator=torch.Generator().manual_seed(0))
    tokens[: n // 3 : 4] = 6
    return StreamData(tokens)


def split(n=161, seed=0, starts_every=None) -> StreamData:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 7, (n,), generator=g)
    starts = None
    if starts_every is not None:
        starts = torch.zeros(n, dtype=torch.bool)
        starts[::starts_every] = True
    return StreamData(tokens, starts=starts)


def config(strategy, **kw) -> TrainConfig:
    base = dict(
        strategy=strategy, batch_size=B, epochs=1, optimizer="sgd", lr=0.5, clip=0.0, seed=3
    )
    return TrainConfig(**{**base, **kw})


def windows(trainer, count):
    """Run ``count`` windows; yield (window, gradient) after each, the gradient as the
    optimizer saw it (``.grad`` is cleared before, not after, each backward)."""
    for _ in range(count):
        window = trainer.strategy.plan(trainer.stream.remaining(), trainer.generator)
        batch = trainer.stream.next(window.length)
        trainer.train_step(
            batch.inputs, batch.targets, window, batch.reset, resets=batch.resets, mask=batch.mask
        )
        grads = {
            n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for n, p in trainer.model.named_parameters()
        }
        yield window, grads


# regular, randomized and variable as the issue asks; k1k2 (lookback) and a checkpointed
# window (gradients averaged by hand after backward) too.
SPECS = ("regular:5", "randomized:5", "variable:6", "k1k2:3,6", "full:8,checkpoint=3")
CASES = [(s, e, "sequential") for s in SPECS for e in (None, 13)]
CASES += [("regular:5", 13, "random"), ("randomized:5", None, "random")]


def _gradient_rank(rank, out):
    for strategy, starts_every, sampling in CASES:
        data = split(starts_every=starts_every)
        trainer = DistributedTrainer(
            model(), data, split(40, 1), config(strategy, sampling=sampling)
        )
        seen = [(w.length, w.gates, w.lr_scale, g) for w, g in windows(trainer, 3)]
        name = f"grad-{strategy}-{starts_every}-{sampling}-rank{rank}.pt"
        torch.save({"seen": seen, "val": trainer.evaluate()}, Path(out) / name)
    trainer = DistributedTrainer(
        model(adaptive="6"), rare_split(), split(40, 1), config("regular:5")
    )
    seen = [(w.length, w.gates, w.lr_scale, g) for w, g in windows(trainer, 3)]
    torch.save({"seen": seen, "val": trainer.evaluate()}, Path(out) / f"adaptive-rank{rank}.pt")


def _all_checks(rank, out):
    """Every check's ranks in one launch (starting processes is the slow part)."""
    _gradient_rank(rank, out)
    _uneven_rank(rank, out)
    _checkpoint_rank(rank, out)
    _indivisible_rank(rank, out)


@pytest.fixture(scope="module")
def ranks_ran(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ranks")
    run_ranks(_all_checks, str(out), deadline=DEADLINE_S)
    return out


@pytest.mark.parametrize("strategy, starts_every, sampling", [*CASES, ("adaptive", None, "")])
def test_all_reduced_gradient_equals_the_single_process_gradient(
    strategy, starts_every, sampling, ranks_ran
):
    if strategy == "adaptive":  # tail parameters used on one rank only
        name = "adaptive-rank"
        single = Trainer(model(adaptive="6"), rare_split(), split(40, 1), config("regular:5"))
    else:
        name = f"grad-{strategy}-{starts_every}-{sampling}-rank"
        data = split(starts_every=starts_every)
        single = Trainer(model(), data, split(40, 1), config(strategy, sampling=sampling))
    ranks = [torch.load(ranks_ran / f"{name}{r}.pt", weights_only=False) for r in range(WORLD)]
    reference = [(w.length, w.gates, w.lr_scale, g) for w, g in windows(single, 3)]
    for r, saw in enumerate(ranks):
        for i, ((length, gates, scale, grads), (rlen, rgates, rscale, rgrads)) in enumerate(
            zip(saw["seen"], reference, strict=True)
        ):
            assert (length, gates, scale) == (rlen, rgates, rscale), f"rank {r} window {i}"
            for name in rgrads:
                torch.testing.assert_close(
                    grads[name],
                    rgrads[name],
                    rtol=1e-6,
                    atol=1e-6,
                    msg=f"{name}, rank {r}, window {i}",
                )
        # Validation is sharded by columns and summed: the single-process figure.
        assert saw["val"]["ppl"] == pytest.approx(single.evaluate()["ppl"], rel=1e-6)


def test_a_gradient_that_is_not_all_reduced_would_fail_the_comparison():
    # The shard of one rank alone (its streams only) is not the B-stream gradient.
    single = Trainer(model(), split(), split(40, 1), config("regular:5"))
    half = Trainer(model(), split(), split(40, 1), config("regular:5"))
    half.stream = ShardedStream(half.stream, 0, WORLD)
    (_, full), (_, mine) = next(windows(single, 1)), next(windows(half, 1))
    assert any(not torch.allclose(full[n], mine[n], rtol=1e-4, atol=1e-6) for n in full)


def test_shards_are_contiguous_columns_of_the_single_process_layout():
    data = split()
    full = SequentialStream(data, B)
    shards = [ShardedStream(SequentialStream(data, B), r, WORLD) for r in range(WORLD)]
    whole = full.next(6)
    parts = [s.next(6) for s in shards]
    assert torch.equal(torch.cat([p.inputs for p in parts], dim=1), whole.inputs)
    assert [shard_slice(8, r, 2) for r in range(2)] == [slice(0, 4), slice(4, 8)]


# -- lockstep with uneven documents ---------------------------------------------------


def _uneven_rank(rank, out):
    # Documents every 3 rows in rank 0's streams, none in rank 1's: the windows, drawn from
    # the shared generator, are the same anyway and every rank steps as often.
    n = 4 * 60 + 1
    starts = torch.zeros(n, dtype=torch.bool)
    starts[: n // 2 : 3] = True
    data = StreamData(
        torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(0)), starts=starts
    )
    trainer = DistributedTrainer(model(), data, split(40, 1), config("randomized:4", epochs=2))
    lengths = []
    trainer.fit(on_step=lambda r: lengths.append(r["length"]))
    resets = int(trainer.stream.full.starts[:, trainer.stream.columns].sum())
    torch.save(
        {"step": trainer.step, "lengths": lengths, "resets": resets}, Path(out) / f"uneven{rank}.pt"
    )


def test_uneven_documents_per_rank_never_deadlock_and_every_rank_steps_alike(ranks_ran):
    ranks = [torch.load(ranks_ran / f"uneven{r}.pt") for r in range(WORLD)]
    assert ranks[0]["resets"] > 0 == ranks[1]["resets"], "the layouts really differ"
    assert ranks[0]["step"] == ranks[1]["step"] > 10
    assert ranks[0]["lengths"] == ranks[1]["lengths"]
    assert len(set(ranks[0]["lengths"])) > 1, "randomized windows of several lengths"


# -- checkpoints -----------------------------------------------------------------------


def _checkpoint_rank(rank, out):
    out = Path(out)
    trainer = DistributedTrainer(model(), split(), split(40, 1), config("randomized:5", epochs=2))
    list(windows(trainer, 4))
    state = trainer.state_dict()
    if rank == 0:
        torch.save(state, out / "state.pt")
    rest = [g for _, g in windows(trainer, 5)]
    torch.save(rest, out / f"straight{rank}.pt")

    resumed = DistributedTrainer(model(7), split(), split(40, 1), config("randomized:5", epochs=2))
    resumed.load_state_dict(torch.load(out / "state.pt", weights_only=True) if rank else state)
    again = [g for _, g in windows(resumed, 5)]
    torch.save(again, out / f"resumed{rank}.pt")


def test_a_checkpoint_holds_every_rank_and_resumes_exactly(ranks_ran):
    tmp_path = ranks_ran
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["world_size"] == WORLD and len(state["ranks"]) == WORLD
    h0, h1 = (r["hidden"] for r in state["ranks"])
    assert h0.shape == h1.shape == (1, B // WORLD, 4) and not torch.equal(h0, h1)
    for r in range(WORLD):
        straight = torch.load(tmp_path / f"straight{r}.pt")
        resumed = torch.load(tmp_path / f"resumed{r}.pt")
        for a, b in zip(straight, resumed, strict=True):
            assert all(torch.equal(a[n], b[n]) for n in a)
    # One process cannot continue a 2-process run.
    single = Trainer(model(), split(), split(40, 1), config("randomized:5", epochs=2))
    with pytest.raises(CheckpointError, match="written by 2 processes.*--nproc-per-node 2"):
        single.load_state_dict(state)


# -- bad input -------------------------------------------------------------------------


def _indivisible_rank(rank, out):
    try:
        DistributedTrainer(model(), split(), split(40, 1), config("regular:5", batch_size=3))
    except ConfigError as e:
        (Path(out) / f"indivisible{rank}.txt").write_text(str(e))


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_on_every_rank(ranks_ran):
    for r in range(WORLD):
        message = (ranks_ran / f"indivisible{r}.txt").read_text()
        assert "batch size 3 does not split into 2" in message and "\n" not in message
