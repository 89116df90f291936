"""cdk-nag AwsSolutionsChecks: no unacknowledged finding, and every acknowledgment says why."""

from __future__ import annotations

import pytest

from tests.cdk.conftest import STACKS

pytestmark = pytest.mark.infra

MIN_REASON = 40


def test_no_unacknowledged_aws_solutions_finding(synth) -> None:
    findings = [
        f"{v['ruleName']} at {c['constructPath']}" for v in synth.nag_violations for c in v["violatingConstructs"]
    ]
    assert findings == []


def test_every_acknowledgment_carries_a_written_reason(synth) -> None:
    acknowledged = 0
    for stack in STACKS:
        for logical_id, resource in synth.templates[stack]["Resources"].items():
            for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
                acknowledged += 1
                assert len(rule["reason"].strip()) >= MIN_REASON, (
                    f"{stack}/{logical_id}: {rule['id']} {rule['reason']!r}"
                )
    assert acknowledged > 0, "the acknowledgments did not reach the templates' metadata"
