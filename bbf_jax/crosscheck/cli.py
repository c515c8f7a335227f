"""``bbf-crosscheck``: verify fixture files with bbf_jax, or export bbf_jax's own.

  bbf-crosscheck verify FILE...
  bbf-crosscheck export --gin_files F [--gin_bindings B ...] --num_actions A --seed S \\
      --inputs FILE --out OUT.npz [--kind network|losses|shrink_perturb]
  bbf-crosscheck torch FILE...            (needs the 'torch' extra)
  bbf-crosscheck torch --gin_files F [--gin_bindings B ...] --num_actions A --seed S \\
      [--batch_size B]
  bbf-crosscheck torch btr [--small] [--seed S] [--num_actions A] [--batch_size B]

Exit status: 0 when every compared array is within tolerance, 1 on any mismatch,
2 on a file or argument that cannot be used (one clear line, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import sys


@contextlib.contextmanager
def _parity_numerics():
    """Full float32 matmul precision on every backend, for this command only (a context,
    so that calling :func:`main` in-process leaves JAX's global configuration alone)."""
    import jax

    with jax.default_matmul_precision("highest"):
        yield


def _verify(files) -> int:
    from bbf_jax.crosscheck.fixture_io import verify_files
    from bbf_jax.crosscheck.kinds import detect_kind

    def check(fixture):
        kind = detect_kind(fixture)
        return f"kind {kind.KIND}", kind.verify(fixture)

    with _parity_numerics():
        return verify_files(files, check)


def _export(args) -> int:
    import importlib

    from bbf_jax.crosscheck.fixture_io import FixtureError
    from bbf_jax.gin_utils import ConfigError

    try:
        mod = importlib.import_module(f"bbf_jax.crosscheck.kinds.{args.kind}")
    except ModuleNotFoundError:
        print(f"error: no exporter for kind {args.kind!r}", file=sys.stderr)
        return 2
    try:
        with _parity_numerics():
            out = mod.export(args)
    except (FixtureError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def _torch(args) -> int:
    try:
        from bbf_jax.crosscheck import torch_cli
    except ModuleNotFoundError as e:
        if e.name == "torch":
            print("error: PyTorch is not installed; pip install 'bbf_jax[torch]'", file=sys.stderr)
            return 2
        raise
    with _parity_numerics():
        return torch_cli.run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bbf-crosscheck", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify", help="recompute every output of fixture files with bbf_jax")
    v.add_argument("files", nargs="+")

    e = sub.add_parser("export", help="write a fixture file computed by bbf_jax")
    e.add_argument("--kind", default="network", choices=["network", "losses", "shrink_perturb"])
    e.add_argument("--gin_files", nargs="+", default=[])
    e.add_argument("--gin_bindings", nargs="+", default=[])
    e.add_argument("--num_actions", type=int, required=True)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--inputs", help="fixture file whose input/* arrays are used")
    e.add_argument("--out", required=True)

    t = sub.add_parser("torch", help="check the PyTorch reference against fixtures or bbf_jax")
    t.add_argument("files", nargs="*", help="fixture files, or 'btr' for the BTR check")
    t.add_argument("--gin_files", nargs="+", default=[])
    t.add_argument("--gin_bindings", nargs="+", default=[])
    t.add_argument("--num_actions", type=int, default=6)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch_size", type=int, default=4)
    t.add_argument("--small", action="store_true",
                   help="torch btr: small network sizes instead of the paper's")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "verify":
        return _verify(args.files)
    if args.command == "export":
        return _export(args)
    return _torch(args)


if __name__ == "__main__":
    sys.exit(main())
