r"""Downloads (if needed), reads and splits a dataset into the cache; prints its sizes.

  python launch/prepare_data.py --dataset=ml-20m            # downloads from GroupLens
  python launch/prepare_data.py --dataset=ml-100k --data_dir=data/ml-100k
  python launch/prepare_data.py --dataset=interactions --data_path=clicks.tsv \
      --columns=user_id,item_id

Training runs read the cached split afterwards.
"""

import json

import _cli
import _data_flags
from absl import app, flags

from arm_jax.data import split_stats

flags.adopt_module_key_flags(_data_flags)  # --help lists them


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    split = _data_flags.load_split_from_flags()
    print(json.dumps(split_stats(split), indent=2))


if __name__ == "__main__":
    _cli.run(main)
