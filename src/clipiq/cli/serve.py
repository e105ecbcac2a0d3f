"""``clipiq serve``: the HTTP service (scores, explanations, restorations) on FastAPI and uvicorn.

The API key comes from the environment (``CLIPIQ_API_KEY``), never from a flag (flags show in ``ps``). A host
other than the loopback needs a key, or ``--insecure`` to serve without one knowingly.
"""

from __future__ import annotations

import argparse
import os
import sys

from clipiq.cli.common import metric_options, positive_int

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
KEY_ENV = "CLIPIQ_API_KEY"
INSTALL_HINT = ("clipiq serve needs FastAPI, uvicorn, python-multipart and prometheus-client: "
                "pip install 'clipiq[serve]'")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser("serve", help="run the HTTP service (score, explain, restore; web page at /)",
                       description="Serve clipiq over HTTP: POST /v1/score, /v1/explain, /v1/restore; GET /docs for "
                                   f"the API. Set {KEY_ENV} to require 'Authorization: Bearer <key>'.")
    p.add_argument("--metric", default="clipiqa", help="metric name (see `clipiq metrics`)")
    p.add_argument("--model", help="CLIP weights or architecture name (default: the metric's own)")
    p.add_argument("--weights", help="local weights file or Hugging Face folder (no download)")
    p.add_argument("--checkpoint", help="trained checkpoint, for metrics that need one")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--restore", action="append", default=[], metavar="NAME",
                   help="enable a restorer for /v1/restore (repeatable; see `clipiq restorers`)")
    p.add_argument("--attributes", default="", help="clipiqa: attribute outputs, comma list or 'all' (default all)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra metric option (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per scoring batch (default 16)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="longest wait for a batch to fill, in ms (default 5)")
    p.add_argument("--queue-size", type=positive_int, default=64,
                   help="images waiting at most; beyond, requests get 503 (default 64)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a request waits for scores (default 30)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload per file, MiB (default 20)")
    p.add_argument("--max-files", type=positive_int, default=32, help="most files per /v1/score request (default 32)")
    p.add_argument("--insecure", action="store_true",
                   help=f"allow a non-local --host without {KEY_ENV} (anyone who reaches it may use it)")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace):
    """The ServeSettings the flags and the environment describe (refuses an unsafe host)."""
    from clipiq.serve.settings import MIB, ServeSettings

    key = os.environ.get(KEY_ENV) or None
    if args.host not in LOCAL_HOSTS and key is None and not args.insecure:
        raise ValueError(f"--host {args.host} is reachable from other machines: set {KEY_ENV} to require a key, "
                         "or pass --insecure to serve without one")
    if args.max_upload_mb <= 0 or args.timeout <= 0 or args.max_wait_ms < 0:
        raise ValueError("--max-upload-mb and --timeout must be positive and --max-wait-ms non-negative")
    opts = metric_options(args)
    opts.pop("checkpoint", None)
    return ServeSettings(metric=args.metric, model=args.model, weights=args.weights, checkpoint=args.checkpoint,
                         device=args.device, restore=tuple(args.restore), batch_size=args.batch_size,
                         max_wait_ms=args.max_wait_ms, queue_size=args.queue_size, timeout_s=args.timeout,
                         max_upload_bytes=int(args.max_upload_mb * MIB), max_files=args.max_files, api_key=key,
                         metric_options=opts)


def run(args: argparse.Namespace) -> int:
    """Check the settings, load the models (errors before listening), then serve until interrupted."""
    settings = settings_from_args(args)
    try:
        import uvicorn

        from clipiq.serve.app import create_app, load_models
    except ImportError as e:
        print(f"clipiq serve: error: {INSTALL_HINT} ({e})", file=sys.stderr)
        return 2
    if args.host not in LOCAL_HOSTS and settings.api_key is None:
        print(f"WARNING: serving on {args.host} without {KEY_ENV} (--insecure): anyone who reaches it may use it",
              file=sys.stderr)
    models = load_models(settings)
    app = create_app(settings, models=models)
    print(f"clipiq serve: {settings.metric} on http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                server_header=False)
    return 0
