"""`run(main)`: `absl.app.run` where a user error is one line on stderr and exit 1.

Input errors raise `arm_jax.errors.ArmJaxError` in the library, with a message naming
the file, line or flag at fault; a researcher sees that line, not a traceback.
"""

import sys

from absl import app, flags, logging

from arm_jax.errors import ArmJaxError


def run(main) -> None:
    def checked(argv):
        # JAX logs backend probing (e.g. "Unable to initialize backend 'tpu'") at INFO;
        # show warnings and above unless --verbosity was given.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except ArmJaxError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    app.run(checked)
