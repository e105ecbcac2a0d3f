"""``clipiq adapt cdasr --checkpoint SRC --pairs DIR --shots K [--steps N] [--lr X] -o OUT.safetensors``.

Few-shot adaptation of a trained restorer to a target domain (see :mod:`clipiq.train.cdasr_adapt`). ``--pairs DIR``
holds ``lr/`` and ``hr/`` (or ``lq/`` and ``gt/``) with matching names; the first K pairs by name are used. With
``--domain NAME`` DIR holds HR images only (in ``hr/``, ``gt/`` or DIR itself) and their LR images are made by
that LR recipe of :data:`clipiq.degrade.SR_DOMAINS`. The output is a method checkpoint for
``clipiq restore --method cdasr --weights OUT``; it records the source checkpoint, the pairs and the settings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clipiq.cli.common import positive_int

#: Methods that can be adapted (one for now).
ADAPTABLE = ("cdasr",)
_DEFAULTS_NOTE = "the method's, clipiq.train.cdasr_adapt.ADAPT_DEFAULTS"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``adapt`` subcommand."""
    p = sub.add_parser("adapt", help="few-shot adaptation of a trained restorer to a target domain",
                       description="Fine-tune a trained checkpoint on K (LR, HR) pairs of a target domain and "
                       "write the adapted checkpoint.")
    p.add_argument("method", choices=ADAPTABLE, help="the method whose checkpoint is adapted")
    p.add_argument("--checkpoint", required=True, type=Path, help="the source (or meta-initialised) checkpoint")
    p.add_argument("--pairs", required=True, type=Path,
                   help="folder with lr/ and hr/ (or lq/ and gt/) of matching names, or HR images with --domain")
    p.add_argument("--shots", required=True, type=positive_int, metavar="K", help="how many pairs to adapt on")
    p.add_argument("--domain", help="make the LR images from HR ones with this LR recipe (clipiq.degrade.SR_DOMAINS)")
    # Defaults are clipiq.train.cdasr_adapt.ADAPT_DEFAULTS, read when the command runs: building the parser must not
    # import the method's modules (every clipiq command builds it).
    p.add_argument("--steps", type=positive_int, help=f"Adam steps (default: {_DEFAULTS_NOTE})")
    p.add_argument("--lr", type=float, help=f"learning rate (default: {_DEFAULTS_NOTE})")
    p.add_argument("--batch-size", type=positive_int, help=f"crops per step (default: {_DEFAULTS_NOTE})")
    p.add_argument("--patch-size", type=positive_int, help=f"crop side in LR pixels (default: {_DEFAULTS_NOTE})")
    p.add_argument("--semantic", type=float, default=None,
                   help="weight of the CLIP semantic-consistency loss (default: the source's training value)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops (and of the --domain LR images)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("-o", "--output", required=True, type=Path, help="the adapted checkpoint (.safetensors)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the pairs, adapt, write the checkpoint and print a summary."""
    from clipiq.clip.checkpoint import read_method_checkpoint
    from clipiq.core.device import resolve_device
    from clipiq.train.cdasr_adapt import adapt, load_pair_folder

    if args.output.suffix != ".safetensors":
        raise ValueError(f"-o {args.output}: the adapted checkpoint is a .safetensors file")
    if args.output.resolve() == args.checkpoint.resolve():
        raise ValueError(f"-o {args.output}: would overwrite the source checkpoint")
    source = read_method_checkpoint(args.checkpoint, args.method)  # fails early, before any image is read
    if "scale" not in source.config:
        from clipiq.core.errors import CheckpointError

        raise CheckpointError(f"--checkpoint {args.checkpoint}: its config records no scale; not a cdasr training "
                              "checkpoint")
    scale = int(source.config["scale"])
    pairs = load_pair_folder(args.pairs, scale, shots=args.shots, domain=args.domain, seed=args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    given = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("batch_size", args.batch_size),
                               ("patch_size", args.patch_size)) if v is not None}
    ck = adapt(args.checkpoint, pairs, seed=args.seed, semantic=args.semantic, device=resolve_device(args.device),
               out=args.output, note={"pairs_folder": str(args.pairs), "domain": args.domain}, **given)
    rec = ck.config["adapt"]
    print(json.dumps({"checkpoint": str(args.output), "source": rec["source"], "shots": rec["shots"],
                      "steps": rec["steps"], "support_pixel_loss": rec["support_pixel_loss"]}, indent=1))
    return 0
