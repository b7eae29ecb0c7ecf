"""Launched under torchrun by tests/test_train.py: groups torn down right after DDP steps and an
all_gather_object (the replica check's), as the trainer ends a run. On torch 2.13 the reducer used to
drop a group's last reference and a rank hung in the group's destructor within a few rounds."""
import gc
import sys
import types

import torch

from fastcodec.train.loop import Trainer, _Dist, destroy_group

DDP = torch.nn.parallel.DistributedDataParallel
ROUNDS = 12


def steps_then_gather(gen, crit, group=None):
    (gen(torch.randn(2, 4)).sum() + crit(torch.randn(2, 4)).sum()).backward()
    prints = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(prints, "fingerprint", group=group)
    assert prints == ["fingerprint"] * len(prints)


dist = _Dist("cpu", timeout_s=60)
for _ in range(ROUNDS):  # groups beside the world one, each torn down the trainer's way
    groups = [torch.distributed.new_group(backend="gloo")]
    gen, crit = DDP(torch.nn.Linear(4, 4), process_group=groups[0]), DDP(torch.nn.Linear(4, 1), process_group=groups[0])
    steps_then_gather(gen, crit, groups[0])
    del gen, crit
    gc.collect()  # as Trainer.close
    destroy_group(groups.pop())

# The world group, through Trainer.close as the CLI calls it.
model, critics = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
trainer = types.SimpleNamespace(dist=dist, model=model, critics=critics, gen=DDP(model), crit=DDP(critics))
steps_then_gather(trainer.gen, trainer.crit)
Trainer.close(trainer)
assert not torch.distributed.is_initialized() and trainer.gen is model
print(f"rank {dist.rank}: {ROUNDS + 1} groups torn down", flush=True)
sys.exit(0)
