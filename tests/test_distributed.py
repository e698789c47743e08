"""minillm.distributed in one process: the engine's post-accumulate-grad hook, the DataLoader's
shards, the buckets and their order, the averaging (over a stand-in world of two identical ranks),
the model check and the reduced metrics. The real two-rank runs are tests/test_distributed_mpi.py."""
import numpy as np
import pytest

import minillm as mm
from minillm import distributed, nn
from minillm.data import DataLoader
from minillm.distributed.buckets import make_buckets
from minillm.distributed.world import collective_timeout
from minillm.optim import SGD


# ---- the hook ---------------------------------------------------------------------------------------
def test_post_accumulate_grad_hook_runs_once_per_backward_with_the_whole_gradient():
    x = mm.tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    seen = []
    handle = x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    (x * x + 3 * x).sum().backward()  # x used three times: one call, with 2x + 3
    assert len(seen) == 1 and seen[0].tolist() == [5.0, 7.0]
    handle.remove()
    (x * 2).sum().backward()
    assert len(seen) == 1


def test_post_accumulate_grad_hook_only_on_a_leaf():
    x = mm.tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match="only a leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)


# ---- the data -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [32, 37])
def test_shards_are_disjoint_equal_and_together_the_global_batches(n):
    data = [{"x": i} for i in range(n)]
    whole = DataLoader(data, 8, shuffle=True, seed=3)
    shards = [DataLoader(data, 4, shuffle=True, seed=3, num_replicas=2, rank=r) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(whole)
    per_rank = [np.concatenate(s.batches(1)) for s in shards]
    assert len(per_rank[0]) == len(per_rank[1]) == -(-n // 2)
    padded = np.resize(np.concatenate(whole.batches(1)), 2 * (-(-n // 2)))  # the first index again if n is odd
    assert sorted(np.concatenate(per_rank)) == sorted(padded)
    if n % 8 == 0:  # rank 0's batch i and rank 1's are the one process's batch i
        for i, batch in enumerate(whole.batches(1)):
            assert sorted(batch) == sorted(np.concatenate([s.batches(1)[i] for s in shards]))


def test_bucketed_shards_have_equal_step_counts():
    class Data(list):
        lengths = np.arange(37) % 7
    shards = [DataLoader(Data({"x": i} for i in range(37)), 4, shuffle=True, bucket=True, num_replicas=2, rank=r)
              for r in range(2)]
    assert len(shards[0].batches(0)) == len(shards[1].batches(0)) == len(shards[0])


def test_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError, match="rank must be in"):
        DataLoader([1, 2], num_replicas=2, rank=2)


# ---- buckets and averaging over a stand-in world ----------------------------------------------------
class TwinWorld(distributed.World):
    """Two ranks that compute the same thing: a sum over ranks is twice this rank's buffer.
    ``started`` records each allreduce start with how many bucket starts came before it."""

    def __init__(self):
        super().__init__()
        self.size, self.started = 2, []

    def iallreduce(self, buffer):
        self.started.append(buffer.size)
        return Doubling(buffer)


class Doubling:
    """A request that completes when first tested (the hooks poke started requests during
    backward, as MPICH progresses only inside MPI calls; synchronize's wait tests until done)."""

    def __init__(self, buffer):
        self.buffer, self.done = buffer, False

    def Test(self):
        if not self.done:
            self.buffer *= 2
            self.done = True
        return True


class MLP(nn.Module):
    def __init__(self, labels=2):
        super().__init__()
        self.first, self.middle, self.last = nn.Linear(8, 32), nn.Linear(32, 32), nn.Linear(32, labels)

    def forward(self, x):
        return self.last(self.middle(self.first(x).relu()).relu())


def mlp(labels=2):
    mm.manual_seed(0)
    return MLP(labels)


def test_buckets_follow_the_reversed_parameters_and_the_cap():
    params = list(mlp().parameters())  # 8x32, 32, 32x32, 32, 32x2, 2 floats
    buckets = make_buckets(params, bucket_cap_mb=(32 * 32 * 4) / 2**20)
    assert [[p.shape for p in b.params] for b in buckets] == [[(2,), (2, 32), (32,)], [(32, 32)], [(32,), (32, 8)]]


def test_allreduces_start_during_backward_and_the_gradient_is_the_mean():
    model, twin = mlp(), TwinWorld()
    x = mm.tensor(np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32))
    model(x).sum().backward()
    expected = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    model.zero_grad()
    optimizer = distributed.DistributedOptimizer(SGD(model.parameters(), lr=0.1), model.named_parameters(), twin,
                                                 bucket_cap_mb=(32 * 32 * 4) / 2**20)
    model(x).sum().backward()
    assert twin.started == [2 + 64 + 32, 32 * 32, 32 + 256]  # every bucket started by the hooks, in order
    optimizer.synchronize()
    for name, p in model.named_parameters():  # (g + g) / 2 on two identical ranks
        np.testing.assert_array_equal(p.grad.numpy(), expected[name])


def test_a_parameter_without_gradient_counts_as_zero_and_step_synchronizes():
    model, twin = mlp(), TwinWorld()
    optimizer = distributed.DistributedOptimizer(SGD(model.parameters(), lr=0.1), model.named_parameters(), twin)
    first = model.first  # a loss of the last layer only: the first two layers get no gradient
    model.last(mm.tensor(np.ones((1, 32), dtype=np.float32))).sum().backward()
    assert twin.started == []  # the one 25 MB bucket is not full
    before = first.weight.numpy().copy()
    optimizer.step()
    assert twin.started == [sum(p.numel() for p in model.parameters())]
    np.testing.assert_array_equal(first.weight.grad.numpy(), 0)
    np.testing.assert_array_equal(first.weight.numpy(), before)


def test_a_second_backward_before_the_step_is_refused():
    model = mlp()
    distributed.DistributedOptimizer(SGD(model.parameters(), lr=0.1), model.named_parameters(), TwinWorld())
    x = mm.tensor(np.ones((1, 8), dtype=np.float32))
    model(x).sum().backward()
    with pytest.raises(RuntimeError, match="second backward"):
        model(x).sum().backward()


# ---- the start and the metrics ------------------------------------------------------------------
class GatheringWorld(distributed.World):
    def __init__(self, others):
        super().__init__()
        self.size, self.others = 1 + len(others), others

    def allgather(self, value):
        return [value] + [distributed.replicas.describe(m) for m in self.others]

    def average(self, values):
        return [v * 3 / 2 / self.size for v in values]  # this rank's values, and the other's half more


def test_different_models_are_refused_naming_the_parameter():
    other = mlp(labels=3)
    with pytest.raises(distributed.ModelMismatch, match=r"rank 1's last.weight is \[\(3, 32\), 'float32'\], "
                                                        r"rank 0's \[\(2, 32\), 'float32'\]"):
        distributed.check_same_model(mlp(), GatheringWorld([other]))
    distributed.check_same_model(mlp(), GatheringWorld([mlp()]))


def test_metrics_are_weighted_by_each_shards_examples():
    world = GatheringWorld([None])  # averages as if the other rank had 1.5 x each value
    merged = distributed.average_metrics({"loss": 1.0, "accuracy": 0.5, "examples": 10}, world)
    assert merged == {"loss": 1.0, "accuracy": 0.5, "examples": 15}


def test_the_world_without_a_launcher_is_one_process():
    world = distributed.world()
    assert (world.rank, world.size, world.iallreduce(np.ones(2))) == (0, 1, None)
    assert distributed.Shard(list(range(5)), world)[4] == 4


class NeverDone:
    """A request whose collective never completes (another rank never joins)."""

    def Test(self):
        return False


def test_a_collective_that_never_completes_is_given_up_saying_where(capsys):
    world = distributed.World(timeout=0.05)
    world.size, aborted = 3, []
    world.abort = aborted.append
    with pytest.raises(TimeoutError):  # after the abort, which is a stub here
        world.wait(NeverDone(), "an allgather")
    assert aborted == [1]
    assert ("rank 0 of 3 waited 0.05 s (MINILLM_COLLECTIVE_TIMEOUT) in an allgather for one of the other 2 ranks"
            in capsys.readouterr().err)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_the_collective_timeout_must_be_a_positive_number(monkeypatch, value):
    monkeypatch.setenv("MINILLM_COLLECTIVE_TIMEOUT", value)
    with pytest.raises(ValueError, match=f"MINILLM_COLLECTIVE_TIMEOUT='{value}': expected a number of seconds > 0"):
        collective_timeout()
    monkeypatch.setenv("MINILLM_COLLECTIVE_TIMEOUT", "2.5")
    assert collective_timeout() == 2.5
