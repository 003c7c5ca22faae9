"""`run(main)`: `absl.app.run` where a user error is one line on stderr and exit 1.

Input errors raise `arm_jax.errors.ArmJaxError` in the library, with a message naming
the file, line or flag at fault; a researcher sees that line, not a traceback. `--help`
lists the script's key flags (each script adopts the shared modules' flags with
`flags.adopt_module_key_flags`) and exits 0.
"""

import sys

from absl import app, flags, logging

from arm_jax.errors import ArmJaxError

_HELP = {"--help", "-help", "-?", "--helpshort", "-helpshort", "--helpfull", "-helpfull"}


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

    try:
        app.run(checked)
    except SystemExit as e:
        # absl exits 1 after printing help; asking for help is not a failure.
        args = sys.argv[1 : sys.argv.index("--")] if "--" in sys.argv else sys.argv[1:]
        if e.code == 1 and _HELP.intersection(args):
            sys.exit(0)
        raise
