"""Options, checkpoints and values that used to reach torch unchecked (issue 11, part 2):
each is refused in one line by a tbptt error, never a traceback from inside torch."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from tbptt.cli.common import check_device, format_metric
from tbptt.errors import CheckpointError, ConfigError, DataError, NonFiniteError
from tbptt.models import ModelConfig, RecurrentLM
from tbptt.train import MetricsWriter, RunConfig, TrainConfig, Trainer, generate
from tbptt.train.engine import Context


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(kind="gru", *, vocab=7, seed=0) -> RecurrentLM:
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=vocab, kind=kind, hidden_size=4, num_layers=1, embedding_size=3, dropout=0.0
    )
    return RecurrentLM(config)


def tokens(n=260, vocab=7, seed=0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def make_trainer(strategy="regular:5", *, model=None, epochs=2, **config) -> Trainer:
    data = tokens()
    cfg = TrainConfig(strategy=strategy, batch_size=3, epochs=epochs, seed=1, **config)
    model = model or tiny_model()
    return Trainer(model, data[:220], data[220:], cfg, metrics=MetricsWriter(None))


def exploding_model(vocab=5) -> RecurrentLM:
    """A linear RNN with W_hh = 3 I: states grow as 3^t and overflow float32 after ~80 steps."""
    torch.manual_seed(0)
    model = RecurrentLM(
        ModelConfig(vocab_size=vocab, kind="linear", hidden_size=4, num_layers=1, dropout=0.0)
    )
    with torch.no_grad():
        model.recurrent.core.weight_hh_l0.copy_(3.0 * torch.eye(4))
    return model


class _Halt(Exception):
    pass


# -- defect 4: options are validated at the boundary, every problem at once --------------


def test_train_options_torch_would_refuse_are_reported_together():
    bad = TrainConfig(
        optimizer="sgd", momentum=-1.0, weight_decay=math.nan, lr=1e39, seed=10**23, device="meta"
    )
    problems = bad.problems()
    assert len(problems) == 5, problems
    for word in ("momentum", "weight decay", "learning rate", "seed", "meta"):
        assert any(word in p for p in problems), (word, problems)
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"train": {"weight_decay": -1.0, "seed": 2**63}}).check()
    assert "weight decay" in str(e.value) and "seed" in str(e.value)


@pytest.mark.parametrize(
    "option", [{"weight_decay": -1.0}, {"lr": 1e39}, {"optimizer": "sgd", "momentum": -1.0}]
)
def test_the_trainer_refuses_what_the_optimizer_would_raise_on(option):
    with pytest.raises(ConfigError):  # torch raised a bare ValueError / RuntimeError here
        make_trainer(**option)


@pytest.mark.parametrize("name", ["meta", "banana"])
def test_devices_torch_cannot_train_on_are_refused(name):
    assert TrainConfig(device=name).problems()
    with pytest.raises(ConfigError) as e:
        check_device(name)
    assert e.value.options == ("train.device",)


def test_token_ids_outside_the_vocabulary_are_one_data_error():
    for embedding_size in (0, 3):  # one-hot and embedding both indexed by the id
        model = RecurrentLM(
            ModelConfig(vocab_size=5, hidden_size=4, num_layers=1, embedding_size=embedding_size)
        )
        for bad in (5, -1):
            with pytest.raises(DataError, match=rf"token ids in \[0, 4\].*got {bad}"):
                model(torch.tensor([[1, bad]]))


def _one_step(trainer):
    def halt(record):
        raise _Halt

    with pytest.raises(_Halt):
        trainer.fit(on_step=halt)


def test_a_carried_state_of_another_dtype_is_refused():
    trainer = make_trainer()
    _one_step(trainer)
    trainer.state = trainer.state.double()
    with pytest.raises(ConfigError, match=r"float64.*needs \(1, 3, 4\) float32"):
        trainer.fit()


def test_a_carried_state_of_another_structure_is_refused():
    trainer = make_trainer()
    _one_step(trainer)
    trainer.state = (trainer.state,)  # same tensors, another nesting
    with pytest.raises(ConfigError, match="carried state"):
        trainer.fit()


def test_a_lookback_context_of_another_batch_size_is_refused():
    trainer = make_trainer("k1k2:3,7")
    _one_step(trainer)
    fresh = trainer.model.initial_state(5)
    trainer.context = Context(fresh, torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"lookback context holds rows of shape \(4, 5\)"):
        trainer.fit()


# -- defect 3: non-finite values under nonfinite="skip" ----------------------------------


def test_skipped_steps_on_an_epoch_line_count_that_epoch_only():
    data = tokens(900, vocab=5)
    config = TrainConfig(
        strategy="regular:30",
        batch_size=2,
        epochs=2,
        clip=0.0,
        lr=1e-3,
        lr_schedule="constant",
        nonfinite="skip",
    )
    trainer = Trainer(exploding_model(), data[:800], data[800:], config)
    trainer.fit()
    steps = [r for r in trainer.metrics.records if r["event"] == "step"]
    epochs = [r for r in trainer.metrics.records if r["event"] == "epoch"]
    for epoch in epochs:
        own = [r for r in steps if r["epoch"] == epoch["epoch"] and r["skipped"]]
        assert own, "the overflow repeats in every epoch"
        assert epoch["skipped_steps"] == len(own)
    assert sum(e["skipped_steps"] for e in epochs) == trainer.skipped


def test_an_epoch_whose_every_step_was_skipped_reports_no_training_figures():
    data = tokens(500, vocab=5)
    config = TrainConfig(strategy="regular:100", batch_size=2, epochs=1, clip=0.0, nonfinite="skip")
    trainer = Trainer(exploding_model(), data[:400], data[400:], config)
    (record,) = trainer.fit()
    assert record["skipped_steps"] == 2
    assert not [k for k in record if k.startswith("train_")], record


def test_weights_overflowed_by_the_last_step_stop_the_run_before_evaluation():
    trainer = make_trainer(epochs=1, nonfinite="skip")
    last = trainer.steps_per_epoch

    def overflow(record):
        if record["step"] == last:  # as if this step's update overflowed a weight
            with torch.no_grad():
                trainer.model.head.bias[0] = math.inf

    with pytest.raises(NonFiniteError, match=r"parameter head.bias is non-finite") as e:
        trainer.fit(on_step=overflow)
    assert "\n" not in str(e.value)
    assert trainer.epoch == 0, "the epoch did not complete, nothing was evaluated"


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_sampling_never_draws_from_a_non_finite_distribution(temperature):
    model = tiny_model()
    with torch.no_grad():
        model.head.bias[2] = math.nan
    with pytest.raises(NonFiniteError, match="outputs are non-finite"):
        generate(model, torch.tensor([1, 2]), 5, temperature=temperature)


def test_a_temperature_that_overflows_the_logits_samples_greedily():
    model = tiny_model()
    greedy = generate(model, torch.tensor([1, 2]), 5)
    assert generate(model, torch.tensor([1, 2]), 5, temperature=1e-320) == greedy


# -- defect 6: trainer states from other versions ----------------------------------------


@pytest.fixture(scope="module")
def saved():
    trainer = make_trainer()
    with pytest.raises(_Halt):

        def halt(record):
            if record["step"] == 3:
                raise _Halt

        trainer.fit(on_step=halt)
    return trainer.state_dict()


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: d.pop("position"), "position is missing"),
        (lambda d: d.pop("generator"), "generator is missing"),
        (lambda d: d.update(generator=torch.zeros(7, dtype=torch.uint8)), "generator is a"),
        (lambda d: d.update(epoch="2"), "epoch is '2'"),
        (lambda d: d.update(step=1.5), "step is 1.5"),
        (lambda d: d.update(epoch_partial=["x", 0, 0.0]), "epoch_partial"),
        (lambda d: d.update(hidden=torch.zeros(2)), "hidden does not have"),
        (lambda d: d.update(position=10**9), "position is 1000000000"),
        (lambda d: d.update(rng={"torch": torch.zeros(3, dtype=torch.uint8)}), "random generator"),
    ],
)
def test_a_malformed_trainer_state_is_one_checkpoint_error_and_changes_nothing(
    saved, change, words
):
    state = {**saved}
    change(state)
    trainer = make_trainer()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.raises(CheckpointError) as e:
        trainer.load_state_dict(state)
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert trainer.step == 0 and trainer.stream.position == 0


def test_an_older_trainer_state_is_migrated(saved):
    old = {k: v for k, v in saved.items() if k not in ("skipped", "context")}
    old["epoch_partial"] = saved["epoch_partial"][:3]  # before masks and per-epoch skips
    old["torch_rng"] = old.pop("rng")["torch"]
    trainer = make_trainer()
    trainer.load_state_dict(old)
    assert trainer.step == saved["step"] and trainer.skipped == 0
    assert trainer._epoch_counted == saved["epoch_partial"][1]  # rows counted = rows read


def test_a_state_that_is_not_a_mapping_is_refused():
    with pytest.raises(CheckpointError, match="trainer state is a list"):
        make_trainer().load_state_dict([1, 2])


# -- 11: numbers a person reads; the cosine schedule when a run is extended ---------------


@pytest.mark.parametrize(
    "value, shown",
    [
        (12.34567, "12.346"),
        (math.inf, "inf"),
        (math.nan, "nan"),
        (math.exp(700), "> 1e6"),  # printed with :.3f: 305 digits
        (-math.inf, "-inf"),
    ],
)
def test_format_metric(value, shown):
    assert format_metric(value) == shown


def test_extending_a_finished_cosine_run_stretches_the_schedule_and_says_so(caplog):
    finished = make_trainer(epochs=2, lr=0.01)
    finished.fit()
    assert finished.current_lr() == 0.0
    extended = make_trainer(epochs=4, lr=0.01)
    with caplog.at_level(logging.WARNING, logger="tbptt.train.runstate"):
        extended.load_state_dict(finished.state_dict())
    # Closed form: progress 2 / 4 of a cosine from 0.01 to 0.
    assert extended.current_lr() == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert "stretched from 2 to 4 epochs" in caplog.text
