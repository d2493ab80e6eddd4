"""``python -m tests.lab --duration S --faults kill,pause,... --seed N --out DIR``: one fault-lab run.

Exit status: 0 linearizable, 1 not linearizable (the failing window is printed), 2 the lab itself
failed (cluster not ready after healing, a final read failed, ...), 3 no checker available.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from .nemesis import FAULT_KINDS, parse_faults
from .runner import LabConfig, report, run


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run like Ctrl-C: every node is still stopped


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the lab, print the report; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, required=True, help="seconds of client load under faults")
    p.add_argument("--faults", default=",".join(FAULT_KINDS),
                   help=f"comma-separated fault kinds (default all): {','.join(FAULT_KINDS)}; '' for none")
    p.add_argument("--seed", type=int, default=1, help="seeds the fault schedule and the clients' operations")
    p.add_argument("--out", required=True, help="directory for history.jsonl, nemesis.jsonl, summary.json, logs/")
    p.add_argument("--clients", type=int, default=5, help="client threads (default 5)")
    p.add_argument("--keys", type=int, default=5, help="keys the clients share (default 5: contention)")
    p.add_argument("--shards", type=int, default=1, help="data shards (default 1)")
    p.add_argument("--client-timeout", type=float, default=5.0, help="each call's deadline (default 5 s)")
    p.add_argument("--think", type=float, default=0.0, help="mean pause between a client's calls (s)")
    p.add_argument("--keep", action="store_true", help="keep the cluster's data directory")
    args = p.parse_args(argv)
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        p.error(str(exc))
    cfg = LabConfig(duration=args.duration, faults=faults, seed=args.seed, out=args.out, clients=args.clients,
                    keys=args.keys, shards=args.shards, client_timeout=args.client_timeout, think=args.think,
                    keep=args.keep)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run(cfg)
    except KeyboardInterrupt:
        print(f"lab: interrupted; every node started was stopped; what was recorded is in {args.out}",
              file=sys.stderr)
        return 130
    print(report(result))
    print(f"output in {args.out}")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
