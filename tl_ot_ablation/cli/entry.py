"""``main``, the console-script entry point: the order of a command (check, claim the output,
load, run) and the exit-code policy.

Exit codes: 0 success; 2 bad input (arguments, files, prompts, an output folder in the way);
1 a failure while running (the message says what); 130 interrupted (nothing half-written). A
bug (an error no check meant to raise) prints a line asking for a report, then its traceback.

(Not named ``main.py``: ``cli.main`` is the function, which would hide such a module.)
"""

import shlex
import sys
from collections.abc import Sequence

from ..core.errors import UserInputError
from ..io import atomic
from .commands import JOBS
from .generate import run_generate
from .model import load_model_for
from .parser import build_parser
from .prepare import check_before_loading
from .read import run_read

BAD_INPUT, FAILED, INTERRUPTED = 2, 1, 130
BAD_INPUT_ERRORS = (UserInputError, FileNotFoundError, FileExistsError)
"""What bad input raises: one line, exit 2. Anything else not listed here or in ``main`` (a
plain ``ValueError`` or ``TypeError`` from inside the package or torch) is a bug in the
package, not the user's input: it propagates, traceback and all, after a line asking to report
it."""
REPORT_BUG = (
    "this is a bug in tl_ot_ablation: please report it with the command line and the "
    "traceback below"
)


def _command_line(argv: Sequence[str] | None) -> str:
    return "tl-ot-ablation " + shlex.join(list(sys.argv[1:] if argv is None else argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tl-ot-ablation`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    name = f"tl-ot-ablation {args.command}"
    try:
        if args.command == "read":  # no model: export or score a blind reading
            run_read(args)
            return 0
        job = check_before_loading(args)
        if job is None:
            run_generate(args, load_model_for(args))
        else:  # the output held from before the model loads; layers checked against it
            with atomic.claim(job.out):
                model = load_model_for(args)
                job.settings.check_layers(model.cfg.n_layers)
                JOBS[args.command](args, job, model, _command_line(argv))
    except BAD_INPUT_ERRORS as error:  # bad input: say what, not where
        print(f"{name}: error: {error}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no output was half-written", file=sys.stderr)
        return INTERRUPTED
    except (RuntimeError, OSError, MemoryError) as error:
        print(f"{name}: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return FAILED
    except Exception:  # a bug: say so, then let Python print the traceback (exit code 1)
        print(f"{name}: {REPORT_BUG}", file=sys.stderr)
        raise
    return 0
