"""README's architecture diagram is the one `cloudshop.diagram` generates from the estate."""

from __future__ import annotations

import dataclasses

import pytest

from cloudshop import diagram
from cloudshop.estate import ESTATE, LAMBDA_SERVICES, Queue
from tests.infra import REPO


def test_the_readme_diagram_is_generated_from_the_estate():
    block = diagram.readme_block((REPO / "README.md").read_text())
    assert block is not None, "README.md lost its generated architecture block"
    assert block == diagram.mermaid(), "run `python -m cloudshop.diagram --write`"


def test_every_store_and_service_of_the_estate_is_in_the_diagram():
    text = diagram.mermaid()
    names = (
        [t.name for t in ESTATE.tables]
        + [b.name for b in ESTATE.buckets]
        + [q.name for q in ESTATE.queues]
        + [t.name for t in ESTATE.topics]
        + [s.role for s in ESTATE.sql_schemas]
        + [w.name for w in ESTATE.workloads]
        + list(LAMBDA_SERVICES)
    )
    for name in names:
        assert f"[({name})]" in text or f"[/{name}/]" in text or f"{name}[" in text, name


def test_a_store_nobody_is_said_to_use_fails_the_generation():
    estate = dataclasses.replace(ESTATE, queues=(*ESTATE.queues, Queue("returns", dead_letter_queue="returns-dlq")))
    with pytest.raises(ValueError, match="queue:returns"):
        diagram.mermaid(estate)
