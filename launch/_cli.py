"""`run(main)`: `absl.app.run` where a user error is one line on stderr and exit 1.

Input errors raise `arm_jax.errors.ArmJaxError` in the library, with a message naming
the file, line or flag at fault; a researcher sees that line, not a traceback. `--help`
lists the script's key flags (each script adopts the shared modules' flags with
`flags.adopt_module_key_flags`) and exits 0.

Compiled programs are kept in JAX's persistent compilation cache (`--compilation_cache_dir`,
off with `--nocompilation_cache`): a second run of the same shapes skips compiling, about
half the wall time of a short run on synthetic data (docs/performance.md).
"""

import os
import sys

import jax
from absl import app, flags, logging

from arm_jax.data.cache import default_cache_dir
from arm_jax.errors import ArmJaxError

COMPILATION_CACHE = flags.DEFINE_bool(
    "compilation_cache", True, "Reuse compiled programs across runs (JAX's persistent cache)."
)
COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None, "Its folder (default: the data cache folder's jax/)."
)
_HELP = {"--help", "-help", "-?", "--helpshort", "-helpshort", "--helpfull", "-helpfull"}


def _compilation_cache(enabled: bool) -> None:
    """Points JAX at the persistent cache, in this process and the ones it spawns."""
    if not (enabled and COMPILATION_CACHE.value):
        return
    path = COMPILATION_CACHE_DIR.value or os.path.join(default_cache_dir(), "jax")
    # Every entry: most of a run's programs compile in under JAX's default 1 s threshold,
    # and together they are most of a short run's wall time.
    settings = {"jax_compilation_cache_dir": path, "jax_persistent_cache_min_compile_time_secs": 0}
    for name, value in settings.items():
        os.environ[name.upper()] = str(value)  # sweep.py's spawned workers read these
        jax.config.update(name, value)


def run(main, *, compilation_cache: bool = True) -> None:
    """`app.run(main)`; `compilation_cache=False` for scripts that time compiling."""

    def checked(argv):
        # JAX logs backend probing (e.g. "Unable to initialize backend 'tpu'") at INFO;
        # show warnings and above unless --verbosity was given.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        _compilation_cache(compilation_cache)
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
