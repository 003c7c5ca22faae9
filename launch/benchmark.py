r"""Speed benchmarks (timings live here, never in tests).

  python launch/benchmark.py --what=ease --data=amazon-book      # CPU, NumPy baseline too
  python launch/benchmark.py --what=ease --data=ml-20m-shape,msd-shape --nobaseline  # GPU
  python launch/benchmark.py --what=train --data=amazon-book      # R-LARM epochs
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python launch/benchmark.py \
      --what=train --data=items-4000-shape --products=sparse --mesh=items:8  # per device
  python launch/benchmark.py --what=ease_inverse --data=items-4000-shape  # EASE's inverse

--data takes real folders under $ARM_JAX_TEST_DATA (amazon-book, gowalla: merged and
re-split with the strong-generalization split) or synthetic matrices of the paper's
shapes (ml-20m-shape, msd-shape). Prints one JSON line per case and writes them to --out.
"""

import json
import os

import _bench_ease
import _cli
import _mesh_flags
import jax
from absl import flags

from arm_jax import io
from arm_jax.data import load_split
from arm_jax.errors import ArmJaxError

WHAT = flags.DEFINE_enum(
    "what", "ease", ["ease", "train", "ease_inverse"], "What to time (ease_inverse: its memory)."
)
DATA = flags.DEFINE_list("data", ["amazon-book"], "Cases: amazon-book, gowalla, *-shape.")
DATA_ROOT = flags.DEFINE_string(
    "data_root", os.environ.get("ARM_JAX_TEST_DATA"), "Folder holding amazon-book/, gowalla/."
)
BASELINE = flags.DEFINE_bool("baseline", True, "Also time the NumPy float64 inv baseline.")
C = flags.DEFINE_float("C", 0.002, "EASE regulariser (authors' scaling).")
GRAM = flags.DEFINE_list(
    "gram", ["auto"], "ease: Gram matrix methods (auto, sparse, device, pairs)."
)
PRODUCTS = flags.DEFINE_list("products", ["dense", "sparse"], "train: x_u W products to time.")
STEPS = flags.DEFINE_integer("steps", 10, "train: timed steps per product (after compiling).")
PARTS = flags.DEFINE_bool("parts", False, "train: also time a step's parts, each alone.")
OUT = flags.DEFINE_string("out", None, "Append the JSON lines here too.")


def _case(name: str):
    """(training matrix, (fold-in, held-out) for a metric check or None, batch size)."""
    if name in _bench_ease.SHAPES:
        users, items, nnz = _bench_ease.SHAPES[name]
        return _bench_ease.synthetic_matrix(users, items, nnz), None
    if not DATA_ROOT.value:
        raise ArmJaxError(f"--data={name} needs --data_root or $ARM_JAX_TEST_DATA")
    split = load_split("lines", os.path.join(DATA_ROOT.value, name))
    return split.train, (split.valid_tr, split.valid_te)


def _emit(row: dict, rows: list) -> None:
    row["device"] = str(jax.devices()[0].device_kind)
    print(json.dumps(row), flush=True)  # at once: a later case may run out of time
    rows.append(row)


def main(argv):
    del argv
    mesh = _mesh_flags.setup_mesh()
    if mesh is not None and WHAT.value != "train":
        raise ArmJaxError("--mesh is for --what=train")
    rows = []
    for name in DATA.value:
        x, eval_data = _case(name)
        if WHAT.value == "train":
            import _bench_train

            _emit(_bench_train.run_train_benchmark(
                name, x, products=PRODUCTS.value, steps=STEPS.value, parts=PARTS.value,
                mesh=mesh,
            ), rows)  # fmt: skip
            continue
        if WHAT.value == "ease_inverse":
            _emit(_bench_ease.run_inverse_memory(name, x, C=C.value), rows)
            continue
        for i, gram in enumerate(GRAM.value):  # the baseline with the first method only
            _emit(_bench_ease.run_ease_benchmark(
                name, x, C=C.value, baseline=BASELINE.value and i == 0,
                eval_data=eval_data, gram=gram,
            ), rows)  # fmt: skip
    if OUT.value:
        io.write_text(OUT.value, "".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    _cli.run(main, compilation_cache=False)  # it times compiling
