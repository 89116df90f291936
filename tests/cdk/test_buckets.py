"""EstateBuckets: private, TLS-only, encrypted buckets named by `resource_settings`, with lifecycles."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Capture, Match

from cloudshop.estate import ESTATE, Bucket
from cloudshop.settings import resource_settings

pytestmark = pytest.mark.infra

BLOCK_ALL = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


@pytest.mark.parametrize("bucket", ESTATE.buckets, ids=lambda b: b.name)
def test_declared_bucket_is_private_encrypted_and_named_by_the_settings(synth, bucket: Bucket) -> None:
    name = resource_settings(synth.config.prefix)[bucket.settings_field.upper()]
    synth.template("Data").has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": name,
            "PublicAccessBlockConfiguration": BLOCK_ALL,
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "BucketKeyEnabled": True,
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": Match.any_value(),
                        },
                    }
                ]
            },
            "LoggingConfiguration": {"DestinationBucketName": Match.any_value(), "LogFilePrefix": f"s3/{bucket.name}/"},
        },
    )


@pytest.mark.parametrize("bucket", ESTATE.buckets, ids=lambda b: b.name)
def test_versioning_and_expiry_follow_the_declaration(synth, bucket: Bucket) -> None:
    rules = Capture()
    properties = {"BucketName": f"{synth.config.prefix}{bucket.name}", "LifecycleConfiguration": {"Rules": rules}}
    if bucket.versioned:
        properties["VersioningConfiguration"] = {"Status": "Enabled"}
    else:
        properties["VersioningConfiguration"] = Match.absent()
    synth.template("Data").has_resource_properties("AWS::S3::Bucket", properties)
    by_id = {rule["Id"]: rule for rule in rules.as_array()}
    assert by_id["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    if bucket.expire_after_days is None:
        assert "expire" not in by_id
    else:
        assert by_id["expire"]["ExpirationInDays"] == bucket.expire_after_days
    assert ("expire-old-versions" in by_id) == bucket.versioned


def test_every_bucket_policy_denies_plain_http(synth) -> None:
    policies = synth.resources("Data", "AWS::S3::BucketPolicy").values()
    covered = {p["Properties"]["Bucket"]["Ref"] for p in policies}
    assert covered == set(synth.resources("Data", "AWS::S3::Bucket"))
    synth.template("Data").all_resources_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                ),
                "Version": "2012-10-17",
            }
        },
    )


def test_documents_are_retained_and_rebuildable_objects_are_not(synth) -> None:
    template = synth.template("Data")
    for bucket in ESTATE.buckets:
        template.has_resource(
            "AWS::S3::Bucket",
            {
                "Properties": {"BucketName": f"{synth.config.prefix}{bucket.name}"},
                "DeletionPolicy": "Retain" if bucket.versioned else "Delete",
            },
        )
