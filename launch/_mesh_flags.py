"""Device flags shared by the launch scripts (`import _mesh_flags`): --mesh and the
flags of a run over several hosts (`jax.distributed`).

  python launch/train.py --model=rlarm --mesh=items:8          # 8 GPUs of one host
  python launch/train.py --model=rlarm --mesh=items:16 \\
      --coordinator_address=host0:1234 --num_processes=2 --process_id=0   # on host 0
"""

from absl import flags

from arm_jax import sharding

MESH = flags.DEFINE_string(
    "mesh",
    None,
    "Device mesh, e.g. items:8 or users:2,items:4 (W and its Adam state sharded over "
    "items, batches over users); its size is the number of devices of all hosts.",
)
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "Several hosts: HOST:PORT of process 0 (jax.distributed)."
)
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Several hosts: processes in all.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "Several hosts: this process, 0-based.")


def _hosts() -> tuple:
    return COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value


def check_mesh_flags() -> None:
    """--mesh's form and the host flags (all or none), before any data is read."""
    if MESH.value:
        sharding.parse_mesh(MESH.value)
    sharding.check_distributed(*_hosts())


def setup_mesh():
    """Joins the other processes (when asked), then the mesh (None without --mesh).

    Call before anything else touches a device: `jax.distributed.initialize` must come
    first.
    """
    check_mesh_flags()
    sharding.distributed_init(*_hosts())
    return sharding.make_mesh(MESH.value)
