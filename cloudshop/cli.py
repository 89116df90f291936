"""The `cloudshop` command: run the platform locally, operate a deployed one, and the project's chores."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudshop", description="cloudshop: run the platform locally, and operate a deployed one"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the whole platform on 127.0.0.1 (Ctrl-C stops it)")
    up.add_argument(
        "--profile",
        choices=["embedded", "full"],
        default="embedded",
        help="embedded: moto + SQLite + file log; full: PostgreSQL + Kafka + dynalite (DynamoDB) + ElasticMQ (SQS)",
    )
    up.add_argument("--state-dir", type=Path, default=Path(".cloudshop"), help="where data, keys and logs live")
    up.add_argument(
        "--base-port",
        type=int,
        default=8000,
        help="gateway port; services use the next ports (default 8000 → 8001-8010)",
    )
    up.add_argument(
        "--observability",
        action="store_true",
        help="also run Prometheus (Debian's /usr/bin/prometheus) on base port + 11, scraping every service "
        "with the cluster's alerting rules",
    )

    commands.add_parser("schemas", help="write the event JSON Schemas and every service's openapi.json")

    trace = commands.add_parser("trace", help="print the span trees of an order's traces (local, `cloudshop up`)")
    trace.add_argument("order_id", help="the order whose traces to show")
    trace.add_argument("--state-dir", type=Path, default=Path(".cloudshop"), help="the state dir of `cloudshop up`")

    from cloudshop.remote import add_commands

    add_commands(commands)

    # Its own options are parsed by `cloudshop.analytics_cli` (see `cloudshop analytics --help`).
    commands.add_parser("analytics", help="run the Spark job against the running platform", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "analytics":
        parser.error("unrecognized arguments: " + " ".join(rest))
    if args.command == "up":
        from cloudshop.local.runner import up as run_up

        return run_up(
            profile=args.profile,
            state_dir=args.state_dir,
            base_port=args.base_port,
            observability=args.observability,
        )
    if args.command == "trace":
        from cloudshop.local.runner import TRACE_FILE
        from cloudshop.local.traces import show_order

        text, status = show_order(args.state_dir / TRACE_FILE, args.order_id)
        print(text)
        return status
    if args.command == "schemas":
        from cloudshop.contracts import write_contracts

        for path in write_contracts():
            print(path)
        return 0
    if args.command in ("admin", "catalog"):
        from cloudshop.remote import run

        return run(args)
    if args.command == "analytics":
        from cloudshop.analytics_cli import main as analytics_main

        return analytics_main(rest)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
