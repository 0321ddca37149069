"""`retrain`: the operator's command line. Settings are read once here and passed down."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
from pathlib import Path

from app.errors import RetrainError
from app.settings import Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.server import serve

    serve(settings, args.host, args.port)
    return 0


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from workers.local import describe_result, run_local_session

    result = asyncio.run(
        run_local_session(
            Path(args.repo), profile=args.profile, max_iters=args.max_iters, fresh=args.fresh,
            store_url=args.store or settings.store_url,
        )
    )
    print(describe_result(result))
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers.demo import create_demo_repo
    from workers.local import describe_result, run_local_session

    base = Path(args.dir).resolve()
    repo = create_demo_repo(base / "repo")
    store_url = f"file://{base / 'checkpoints'}"
    print(f"demo repository: {repo}\ncheckpoint store: {store_url}")
    result = asyncio.run(
        run_local_session(repo, profile="ci", max_iters=args.max_iters, fresh=False, store_url=store_url)
    )
    print(describe_result(result))
    log = subprocess.run(["git", "-C", str(repo), "log", "--oneline"], capture_output=True, text=True).stdout
    print(f"\ngit log:\n{log}\nRun `retrain demo` again: the next session resumes from the best checkpoint.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrain", description="Persistent learning for GitHub repositories.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the webhook receiver")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(run=_serve)

    train = sub.add_parser("train", help="run one session on a local git repository and commit its progress")
    train.add_argument("--repo", default=".", help="path of a git checkout (default: here)")
    train.add_argument("--profile", default="ci", help="profile from .github/retrain.yml (default: ci)")
    train.add_argument("--max-iters", type=int, default=None, help="iterations for this session")
    train.add_argument("--store", default=None, help="checkpoint store URL (default: RETRAIN_STORE_URL)")
    train.add_argument("--fresh", action="store_true", help="start a new model; earlier checkpoints are kept")
    train.set_defaults(run=_train)

    demo = sub.add_parser("demo", help="make a demo repository with a small corpus and train one session")
    demo.add_argument("--dir", default=".retrain-demo", help="where the demo repository and store live")
    demo.add_argument("--max-iters", type=int, default=None, help="iterations for this session")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run(args, Settings()))
    except (RetrainError, ValueError) as exc:
        print(f"retrain: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
