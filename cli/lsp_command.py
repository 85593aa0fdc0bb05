"""`vqedit lsp`: the language server's command line and logging (lsp/server.py serves).

Usage:

    vqedit lsp                        # stdio, the way editors start it
    vqedit lsp --tcp 127.0.0.1:2087   # wait for one client on TCP (debugging)
    vqedit lsp --in-process           # no daemon: the model runs inside the server
    vqedit lsp --log-file /tmp/vqedit-lsp.log --log-level debug
"""

import argparse
import logging
import os
import sys

from vqedit.lsp.app import create_server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tcp", metavar="HOST:PORT", type=_host_port,
                        help="listen for one client on TCP instead of stdio (debugging)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the model inside the server instead of the daemon")
    parser.add_argument("--log-file", help="also write the log to this file")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"HOST:PORT is needed, got {value!r}")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    _configure_logging(args.log_file, args.log_level)
    server = create_server(args.in_process)
    try:
        if args.tcp:
            server.serve_tcp(*args.tcp)
        else:
            # LSP owns standard output; anything else that prints (a library, a progress bar)
            # goes to standard error instead of corrupting the stream.
            lsp_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
            server.start_io(sys.stdin.buffer, lsp_out)
    finally:
        server.stop_backend()
    return server.exit_code


def _configure_logging(path: str | None, level: str) -> None:
    """The log goes to standard error (editors show it) and, if asked, to a file."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        handlers.append(logging.FileHandler(path))
    logging.basicConfig(level=logging.WARNING, handlers=handlers,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in ("vqedit", "pygls"):
        logging.getLogger(name).setLevel(level.upper() if name == "vqedit" else logging.WARNING)
