"""`cloudshop analytics`: the Spark job against the platform `cloudshop up` is running.

It reads the running platform's settings from the state directory and picks the source from the
profile: the embedded file log, or Kafka when the platform runs on the full profile. Windows go to
the console and to what `GET /api/v1/analytics/windows` serves: on the embedded profile straight into
the `analytics-results` bucket; on the full profile to the `analytics-results` topic, from which the
platform's windows consumer (`analytics.results_consumer`) stores them, as the consumer Lambda does
for the job on Dataproc.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cloudshop.local.runner import read_runtime_env


def job_arguments(env: dict[str, str], *, state_dir: Path, once: bool, watermark: str) -> list[str]:
    kafka = env.get("KAFKA_BOOTSTRAP_SERVERS")
    arguments = ["--source", "kafka" if kafka else "files", "--sink", "console", "--watermark", watermark]
    if kafka:
        arguments += ["--sink", "kafka", "--kafka-bootstrap-servers", kafka]
    else:
        arguments += ["--sink", "windows"]
    if once:
        arguments.append("--once")
    else:
        arguments += ["--checkpoint-location", str(state_dir / "analytics" / ("kafka" if kafka else "files"))]
    return arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cloudshop analytics", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="batch over every event so far: write every window (open ones final=false) and exit",
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".cloudshop"))
    parser.add_argument("--watermark", default="2 minutes")
    args = parser.parse_args(argv)
    env = read_runtime_env(args.state_dir)
    os.environ.update({k: v for k, v in env.items() if k not in ("JWT_PRIVATE_KEY",)})
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from analytics.job import main as job_main

    return job_main(job_arguments(env, state_dir=args.state_dir.resolve(), once=args.once, watermark=args.watermark))
