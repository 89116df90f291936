"""S3 buckets, built from the estate declarations (`cloudshop.estate.BUCKETS`), plus the log bucket."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.nag import checkov_skip, nag
from cdk.tables import construct_id
from cloudshop.estate import Bucket

NONCURRENT_VERSION_DAYS = 90
INCOMPLETE_UPLOAD_DAYS = 7
ACCESS_LOG_DAYS = 365


class EstateBuckets(Construct):
    """Private, TLS-only, KMS-encrypted buckets with server access logs and lifecycle rules.

    A bucket declared `browser_uploads` admits cross-origin POSTs from `browser_origins` (the storefront's
    admin console posts product images straight to it with a presigned POST; the signature is what
    authorises an upload, CORS only lets the page read the answer).

    Names are `<prefix><name>` like every estate resource. Bucket names are global: choose a prefix
    nobody else uses (`CLOUDSHOP_RESOURCE_PREFIX`) if `cloudshop-<env>-` is taken. Versioned buckets
    hold documents (invoices) and are retained with the stack; the others are destroyed with it once
    emptied.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id_: str,
        *,
        buckets: Iterable[Bucket],
        encryption_key: kms.IKey,
        prefix: str,
        browser_origins: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, construct_id_)
        self.prefix = prefix
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            # Log delivery (S3 server access logs, ALB logs) only writes to SSE-S3 buckets.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs",
                    expiration=Duration.days(ACCESS_LOG_DAYS),
                    noncurrent_version_expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(INCOMPLETE_UPLOAD_DAYS),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        nag(self.access_logs, {"AwsSolutions-S1": "This is the access-log bucket; logging it into itself loops."})
        checkov_skip(
            self.access_logs,
            {
                "CKV_AWS_18": "This is the access-log bucket; logging it into itself loops.",
                "CKV_AWS_145": "S3 server access logs and ALB logs can only be delivered to SSE-S3 buckets.",
            },
        )
        self.declarations: dict[str, Bucket] = {}
        self.buckets: dict[str, s3.Bucket] = {}
        for declaration in buckets:
            rules = [
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(INCOMPLETE_UPLOAD_DAYS),
                )
            ]
            if declaration.expire_after_days is not None:
                rules.append(s3.LifecycleRule(id="expire", expiration=Duration.days(declaration.expire_after_days)))
            if declaration.versioned:
                rules.append(
                    s3.LifecycleRule(
                        id="expire-old-versions",
                        noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_DAYS),
                    )
                )
            bucket = s3.Bucket(
                self,
                construct_id(declaration.name),
                bucket_name=self.bucket_name(declaration.name),
                encryption=s3.BucketEncryption.KMS,
                encryption_key=encryption_key,
                bucket_key_enabled=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                versioned=declaration.versioned,
                lifecycle_rules=rules,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix=f"s3/{declaration.name}/",
                removal_policy=RemovalPolicy.RETAIN if declaration.versioned else RemovalPolicy.DESTROY,
                cors=[
                    s3.CorsRule(
                        allowed_methods=[s3.HttpMethods.POST],
                        allowed_origins=list(browser_origins),
                        allowed_headers=["*"],
                        max_age=3000,
                    )
                ]
                if declaration.browser_uploads and browser_origins
                else None,
            )
            if not declaration.versioned:
                checkov_skip(
                    bucket,
                    {
                        "CKV_AWS_21": (
                            "The estate declares this bucket unversioned: its objects are re-creatable "
                            "(product images re-uploaded by admins, analytics output recomputed by the job)."
                        )
                    },
                )
            self.declarations[declaration.name] = declaration
            self.buckets[declaration.name] = bucket

    def __getitem__(self, name: str) -> s3.Bucket:
        return self.buckets[name]

    def bucket_name(self, name: str) -> str:
        """`<prefix><name>`, as `cloudshop.settings.resource_settings(prefix)` says: computable in any
        stack without a cross-stack reference (grants, settings and the Kubernetes overlays use it)."""
        return f"{self.prefix}{name}"

    def objects_arn(self, name: str) -> str:
        return f"arn:{Aws.PARTITION}:s3:::{self.bucket_name(name)}/*"

    def bucket_arn(self, name: str) -> str:
        return f"arn:{Aws.PARTITION}:s3:::{self.bucket_name(name)}"
