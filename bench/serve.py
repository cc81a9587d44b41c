"""`python -m bench.serve MODULE:APP --port N`: a bench app served as the service is.

`sessions-service serve` runs the service through `service.cli.run_server`: one uvicorn worker
on uvloop and httptools, the garbage collector tuned once the app is built. The reference and
the bare FastAPI app run through the same function, without an access log, so that what the
benchmark compares is their code rather than how their processes are set up.
"""

import argparse
from collections.abc import Sequence

from service.cli import run_server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    parser.add_argument("app", help="the ASGI app, as module:attribute")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    run_server(args.app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
