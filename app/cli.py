"""`retrain`: the operator's command line. Settings are read once here and passed down."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from app.config.settings import Settings
from app.errors import RetrainError
from app.log_setup import configure_logging


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.web.server import serve

    serve(settings, args.host, args.port)
    return 0


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from workers.local import describe_result, local_training, run_local_session

    result = asyncio.run(
        run_local_session(
            Path(args.repo), profile=args.profile, max_iters=args.max_iters, fresh=args.fresh,
            store_url=args.store or settings.store_url, training=local_training(settings, args.nproc_per_node),
        )
    )
    print(describe_result(result))
    return 0


def _sample(args: argparse.Namespace, settings: Settings) -> int:
    import codecs

    from workers.local import local_best
    from workers.trainer.device import resolve_device
    from workers.trainer.sample import SampleSettings, generate, served_model

    sampling = SampleSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_k=args.top_k or None, seed=args.seed)
    best = asyncio.run(local_best(Path(args.repo), profile=args.profile, store_url=args.store,
                                  default_store=settings.store_url))
    device = resolve_device(args.device)
    model = served_model(best.model_config, best.payload, device)
    prompt = args.prompt.encode() if args.prompt else b"\n"
    print(f"# {best.entry.checkpoint_id} (iteration {best.entry.iteration}, {best.tokenizer.id}), seed {args.seed}",
          file=sys.stderr)
    text = codecs.getincrementaldecoder("utf-8")("replace")
    sys.stdout.write(args.prompt or "")
    for token in generate(model, best.tokenizer.encode(prompt), sampling):
        sys.stdout.write(text.decode(best.tokenizer.decode([token])))
        sys.stdout.flush()
    sys.stdout.write(text.decode(b"", final=True) + "\n")
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from workers.local import export_local
    from workers.trainer.data import bits_per_byte

    best, out = asyncio.run(export_local(Path(args.repo), Path(args.out), profile=args.profile, store_url=args.store,
                                         default_store=settings.store_url))
    bpb = f"{bits_per_byte(best.entry.val_loss):.4f} bits per byte" if best.entry.val_loss is not None else "?"
    print(f"exported {best.entry.checkpoint_id} (iteration {best.entry.iteration}, {bpb}) to {out}:")
    for path in sorted(out.iterdir()):
        print(f"  {path.name:24s} {path.stat().st_size:>12,} bytes")
    print("load it with transformers.AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained "
          "(pip install 'retrain[hf]')")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers.demo import add_a_note, create_demo_repo
    from workers.local import describe_result, run_local_session

    base = Path(args.dir).resolve()
    existed = (base / "repo" / ".git").exists()
    repo = create_demo_repo(base / "repo")
    store_url = f"file://{base / 'checkpoints'}"
    print(f"demo repository: {repo}\ncheckpoint store: {store_url}")
    if existed:  # a living repository: its text changes between sessions, and learning goes on
        print(f"edited the demo repository first: {add_a_note(repo)}")
    result = asyncio.run(
        run_local_session(repo, profile="ci", max_iters=args.max_iters, fresh=False, store_url=store_url)
    )
    print(describe_result(result))
    log = subprocess.run(["git", "-C", str(repo), "log", "--oneline"], capture_output=True, text=True).stdout
    print(f"\ngit log:\n{log}\nRun `retrain demo` again: it adds a note, and the next session continues from the best "
          "checkpoint on the edited text.")
    return 0


def _register(args: argparse.Namespace, settings: Settings) -> int:
    from app.register import MANIFEST_PATH, Registration, load_manifest, register_app

    registration = Registration(
        api_url=settings.github_api_url, web_url=settings.web_url, webhook_url=args.webhook_url,
        env_file=Path(args.env_file), key_file=Path(args.key_file),
        manifest=load_manifest(Path(args.manifest) if args.manifest else MANIFEST_PATH), org=args.org,
        name=args.name, homepage=args.homepage, force=args.force, port=args.port,
    )
    try:
        asyncio.run(register_app(registration, open_browser=not args.no_browser))
    except KeyboardInterrupt:
        print("retrain: stopped before GitHub's redirect arrived; nothing was written", file=sys.stderr)
        return 130
    return 0


def _config_check(args: argparse.Namespace, settings: Settings) -> int:
    from app.config.limits import config_problems
    from app.config.repo_config import CONFIG_PATH, parse_repo_config
    from app.errors import ConfigError

    try:
        text = Path(args.path).read_bytes()  # as the worker gets it: bytes, sized as bytes
    except OSError as exc:
        raise ConfigError(f"cannot read {args.path}: {exc}") from exc
    try:
        config = parse_repo_config(text)
    except ConfigError as exc:  # name the file that was checked
        raise ConfigError(str(exc).replace(CONFIG_PATH, args.path, 1)) from exc
    over = config_problems(config, settings.limits)  # this environment's limits: the App's where it runs there
    if over:
        raise ConfigError(f"{args.path} asks for more than the App allows: {'; '.join(over)}")
    names = ", ".join(config.profiles)
    schedule = f", schedule {len(config.schedule)} entries" if config.schedule else ""
    print(f"ok: {len(config.profiles)} profiles ({names}), data include {', '.join(config.data.include)}, "
          f"retention max_checkpoints={config.retention.max_checkpoints}, permission {config.permission}"
          f"{schedule}")
    return 0


def _redacted(url: str) -> str:
    """A Redis URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _status(args: argparse.Namespace, settings: Settings) -> int:
    import redis

    from workers.coordination.live import SESSIONS_KEY, LiveSessions

    prefix = SESSIONS_KEY.format(repo="")
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=10)
    try:
        if args.repo:
            repos = [args.repo]
        else:
            repos = sorted({key.decode()[len(prefix):] for key in client.scan_iter(match=prefix + "*", count=500)})
        live = LiveSessions(client)
        found = [(repo, session) for repo in repos for session in live.of_repo(repo)]
    except redis.RedisError as exc:
        raise RetrainError(f"cannot read sessions from Redis at {_redacted(settings.redis_url)} "
                           f"(RETRAIN_REDIS_URL): {exc}") from exc
    finally:
        client.close()
    if args.json:
        print(json.dumps([{"repo": repo, **asdict(s)} for repo, s in found], indent=2))
        return 0
    if not found:
        print("no sessions queued or running" + (f" in {args.repo}" if args.repo else ""))
        return 0
    now = time.time()
    header = ("REPO", "SESSION", "PROFILE", "STATUS", "ITERATION", "LOSS", "ETA", "REQUESTED BY", "UPDATED")
    rows: list[tuple[str, ...]] = [header]
    for repo, s in found:
        iteration = "–" if s.iteration is None else f"{s.iteration} ({s.session_iteration}/{s.max_iters or '?'})"
        rows.append((repo, s.session_id[:8], s.profile, s.status, iteration,
                     "–" if s.loss is None else f"{s.loss:.4f}", _eta(s.eta_s),
                     f"@{s.sender}" if s.sender else s.trigger, _ago(now - s.updated_at)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _best_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """Where `sample` and `export` find the best checkpoint: a checkout, its profile, and its store."""
    parser.add_argument("--repo", default=".", help="path of a git checkout (default: here)")
    parser.add_argument("--profile", default="ci", help="profile whose best checkpoint is used (default: ci)")
    parser.add_argument("--store", default=None,
                        help="checkpoint store URL (default: the one the last local session here used)")


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
    train.add_argument("--nproc-per-node", type=_positive, default=None, metavar="N",
                       help="training processes, one per GPU (torchrun, DDP; gloo on the CPU); default "
                            "RETRAIN_NPROC_PER_NODE, 1")
    train.set_defaults(run=_train)

    sample = sub.add_parser("sample", help="print text generated by the best checkpoint of a local repository")
    _best_checkpoint_arguments(sample)
    sample.add_argument("--prompt", default=None, help="text to continue (default: a new line)")
    sample.add_argument("--max-new-tokens", type=int, default=256, help="tokens to generate (default: 256)")
    sample.add_argument("--temperature", type=float, default=0.8, help="0 for the most likely token (default: 0.8)")
    sample.add_argument("--top-k", type=int, default=200, help="draw from the k most likely; 0: all (default: 200)")
    sample.add_argument("--seed", type=int, default=1337, help="the same seed gives the same text (default: 1337)")
    sample.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    sample.set_defaults(run=_sample)

    export = sub.add_parser("export", help="write the best checkpoint as a Hugging Face model folder")
    _best_checkpoint_arguments(export)
    export.add_argument("--out", required=True, help="folder to write (replaced when it holds an earlier export)")
    export.set_defaults(run=_export)

    demo = sub.add_parser("demo", help="make a demo repository with a small corpus and train one session")
    demo.add_argument("--dir", default=".retrain-demo", help="where the demo repository and store live")
    demo.add_argument("--max-iters", type=int, default=None, help="iterations for this session")
    demo.set_defaults(run=_demo)

    register = sub.add_parser(
        "register", help="register the GitHub App from deploy/app-manifest.json and store its credentials",
        description="Serves a page on 127.0.0.1 that posts the App manifest to GitHub (RETRAIN_GITHUB_API_URL's "
        "web host, so GitHub Enterprise works); after you confirm there, stores the App's id, webhook secret "
        "and private key.")
    register.add_argument("--webhook-url", required=True, help="public URL of `retrain serve`'s /webhook")
    register.add_argument("--org", default=None, help="register the App for this organization (default: you)")
    register.add_argument("--name", default=None, help="the App's name (default: the manifest's; unique on GitHub)")
    register.add_argument("--homepage", default=None, help="the App's homepage URL (default: the webhook's host)")
    register.add_argument("--port", type=int, default=8765, help="local port for the page and GitHub's redirect")
    register.add_argument("--env-file", default=".env", help="where RETRAIN_APP_ID etc. go (default: .env)")
    register.add_argument("--key-file", default="retrain-app-key.pem", help="where the private key goes")
    register.add_argument("--force", action="store_true", help="overwrite an existing key file")
    register.add_argument("--manifest", default=None, help="App manifest (default: deploy/app-manifest.json)")
    register.add_argument("--no-browser", action="store_true", help="print the page's URL, do not open it")
    register.set_defaults(run=_register)

    config = sub.add_parser("config", help="repository config tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a .github/retrain.yml")
    check.add_argument("path", help="path of the file")
    check.set_defaults(run=_config_check)

    status = sub.add_parser("status", help="list queued and running sessions (from Redis)")
    status.add_argument("--repo", default=None, help="only this OWNER/NAME")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        configure_logging(logging.DEBUG if args.verbose else logging.INFO, settings.log_format)
        return int(args.run(args, settings))
    except (RetrainError, ValueError) as exc:
        print(f"retrain: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
