"""`python -m colam_core` (and the `colam` command): the CLI, with Ctrl-C during the imports (torch takes seconds)
one line and exit 130 like any other interrupt."""
import sys


def run() -> int:
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("error: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
