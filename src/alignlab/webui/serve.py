"""`alignlab webui`: options, the safe-binding check, then the Gradio server (imported only here)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

AUTH_ENV = "ALIGNLAB_WEBUI_AUTH"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="alignlab webui", description="the training web UI (Gradio)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to bind (env GRADIO_SERVER_NAME; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (env GRADIO_SERVER_PORT; default 7860)")
    parser.add_argument("--auth", default=os.environ.get(AUTH_ENV),
                        help=f"user:password (several: alice:pw1,bob:pw2; annotators are their login names) required to open "
                        f"the page (env {AUTH_ENV}); needed off loopback")
    parser.add_argument("--root-path", default=os.environ.get("GRADIO_ROOT_PATH"),
                        help="URL prefix when served behind a reverse proxy")
    parser.add_argument("--runs-root", default="saves", help="folder of the run folders (default saves/)")
    parser.add_argument("--dataset-dir", default="data", help="default dataset folder (default data/)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    auth = None
    if args.auth:  # user:password, or several comma separated (annotators log in by name)
        auth = []
        for entry in args.auth.split(","):
            user, sep, password = entry.strip().partition(":")
            if not sep or not user or not password:
                print(f"alignlab webui: --auth entry {entry.strip()!r} must be user:password (several: "
                      "alice:pw1,bob:pw2)", file=sys.stderr)
                return 1
            auth.append((user, password))
    if not is_loopback(args.host) and auth is None:
        print(f"alignlab webui: refusing to serve on {args.host} without a password: give --auth user:password "
              f"(or env {AUTH_ENV}), or bind 127.0.0.1", file=sys.stderr)
        return 1
    try:
        from .app import CSS, build_app
    except ImportError as e:
        print(f"alignlab webui: {e}; install it with pip install 'alignlab[webui]'", file=sys.stderr)
        return 1
    build_app(args.runs_root, args.dataset_dir).launch(
        server_name=args.host, server_port=args.port, auth=auth, root_path=args.root_path, css=CSS)
    return 0
