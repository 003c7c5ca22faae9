"""One process of a two-process run over `jax.distributed` on localhost (test_sharding.py).

  python tests/_two_process.py COORDINATOR_ADDRESS PROCESS_ID WORKDIR OUT.npz

Each process has one CPU device; together they train the tiny model of `_mesh_runs`
with W sharded over both (`items:2`); process 0 writes the learner and
losses to OUT.npz.
"""

import sys

import jax

# A launch script's setting (the library never touches jax.config): CPU collectives
# across processes.
jax.config.update("jax_cpu_collectives_implementation", "gloo")

from arm_jax import sharding, training  # noqa: E402

if __name__ == "__main__":
    address, process_id, workdir, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    sharding.distributed_init(address, 2, process_id)
    import numpy as np
    from _mesh_runs import config, tiny_split

    mesh = sharding.make_mesh("items:2")
    result = training.train_adversarial(
        tiny_split(), model="rlarm", config=config(), seed=3, mesh=mesh, workdir=workdir
    )
    from jax.experimental import multihost_utils

    learner = multihost_utils.process_allgather(result.learner, tiled=True)
    if sharding.is_primary():
        losses = [r["learner_loss"] for r in result.history]
        np.savez(out, learner=learner, losses=losses)
    jax.distributed.shutdown()
