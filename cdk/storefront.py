"""The storefront in the cloud: `web/dist` in a private S3 bucket behind CloudFront, which also fronts the
HTTP API under `/api/*`, so the shop and its API share one origin and no CORS is needed.

The headers, the cache rules and what is not uploaded come from `cloudshop.storefront`, the module the
local gateway serves the same build with: one declaration, two realisations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

from aws_cdk import DefaultStackSynthesizer, Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from cdk.nag import (
    CDK_PROVIDER_FUNCTION_SKIPS,
    LAMBDA_BASIC,
    LAMBDA_BASIC_REASON,
    LOG_GROUP_KMS_REASON,
    checkov_skip,
    checkov_skip_all,
    logical_id,
    nag,
)
from cloudshop.storefront import (
    ASSET_CACHE_CONTROL,
    ASSETS_DIR,
    FRAME_OPTIONS,
    HSTS_MAX_AGE_SECONDS,
    NOT_SERVED,
    OPENER_POLICY,
    PAGE_CACHE_CONTROL,
    PERMISSIONS_POLICY,
    REFERRER_POLICY,
    content_security_policy,
)

API_PATH_PATTERN = "/api/*"
# aws-cdk-lib's one provider function per stack behind every BucketDeployment (the id's prefix).
BUCKET_DEPLOYMENT_PROVIDER = "Custom::CDKBucketDeployment"

# CloudFront Function (viewer request, default behaviour only): a path that names no file is one of the
# single-page app's routes, so the bucket is asked for index.html. /api/* never runs it.
SPA_ROUTES_JS = """\
function handler(event) {
  var request = event.request;
  var last = request.uri.split('/').pop();
  if (last.indexOf('.') === -1) {
    request.uri = '/index.html';
  }
  return request;
}
"""

BUCKET_DEPLOYMENT_REASON = (
    "The BucketDeployment provider (aws-cdk-lib) copies the storefront's build from the CDK asset bucket "
    "into the site bucket and invalidates the distribution at deploy time only; CDK scopes its policy to "
    "those two buckets' objects and that distribution."
)


# The distribution's own name is only known once it exists (and lives in the Api stack, after the Data
# stack's buckets): the images bucket admits uploads from any CloudFront name, plus the configured origins.
CLOUDFRONT_ORIGINS = "https://*.cloudfront.net"


def storefront_origins(configured: Sequence[str] = ()) -> list[str]:
    """The browser origins the storefront is served from: CloudFront's, and any custom domain configured."""
    return [CLOUDFRONT_ORIGINS, *configured]


def image_store_origins(bucket_name: str, region: str) -> list[str]:
    """Where a presigned link to the product-images bucket points: boto3 writes either form."""
    return [f"https://{bucket_name}.s3.{region}.amazonaws.com", f"https://{bucket_name}.s3.amazonaws.com"]


class StorefrontSite(Construct):
    """The site bucket (private, SSE-S3, TLS only, access-logged), the distribution (OAC to the bucket;
    `/api/*` to the HTTP API, uncached, every viewer header but Host forwarded), the security headers
    policy on both, and the upload of the build.

    `site` is the directory of the build (`cloudshop.build.prepare_storefront`). Hashed files under
    `assets/` are uploaded with a year's cache and kept across deploys (a page still open in a browser
    may load them); the rest is revalidated on each load, replaced on each deploy and invalidated.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        site: Path,
        api: apigw.IHttpApi,
        access_logs: s3.IBucket,
        image_origins: Sequence[str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Site",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            # SSE-S3: the files are public by purpose (CloudFront serves them to anyone), and OAC reads
            # SSE-S3 objects without a key policy naming the distribution.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="s3/storefront/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(7)
                )
            ],
            removal_policy=RemovalPolicy.DESTROY,
        )
        checkov_skip(
            self.bucket,
            {
                "CKV_AWS_21": "The site is rebuilt from git on each deploy (make web): versions would keep nothing.",
                "CKV_AWS_145": (
                    "Public static files (CloudFront serves them to anyone): SSE-S3 encrypts them at rest, and a "
                    "customer key would only add a key policy naming the distribution."
                ),
            },
        )
        self.content_security_policy = content_security_policy(
            image_sources=image_origins, connect_sources=image_origins, upgrade_insecure=True
        )
        self.headers = cloudfront.ResponseHeadersPolicy(
            self,
            "SecurityHeaders",
            comment="cloudshop storefront and API: CSP, HSTS, no framing, no sniffing (cloudshop.storefront)",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=self.content_security_policy, override=True
                ),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=Duration.seconds(HSTS_MAX_AGE_SECONDS),
                    include_subdomains=True,
                    override=True,
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption[FRAME_OPTIONS], override=True
                ),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy[REFERRER_POLICY.upper().replace("-", "_")],
                    override=True,
                ),
            ),
            custom_headers_behavior=cloudfront.ResponseCustomHeadersBehavior(
                custom_headers=[
                    cloudfront.ResponseCustomHeader(
                        header="Permissions-Policy", value=PERMISSIONS_POLICY, override=True
                    ),
                    cloudfront.ResponseCustomHeader(
                        header="Cross-Origin-Opener-Policy", value=OPENER_POLICY, override=True
                    ),
                ]
            ),
        )
        self.spa_routes = cloudfront.Function(
            self,
            "SpaRoutes",
            code=cloudfront.FunctionCode.from_inline(SPA_ROUTES_JS),
            runtime=cloudfront.FunctionRuntime.JS_2_0,
            comment="Paths without a file name are the storefront's own routes: serve index.html",
        )
        self.api_origin = origins.HttpOrigin(
            f"{api.api_id}.execute-api.{Stack.of(self).region}.{Stack.of(self).url_suffix}",
            protocol_policy=cloudfront.OriginProtocolPolicy.HTTPS_ONLY,
            origin_ssl_protocols=[cloudfront.OriginSslPolicy.TLS_V1_2],
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment="cloudshop: the storefront and, under /api/*, the HTTP API",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=self.headers,
                function_associations=[
                    cloudfront.FunctionAssociation(
                        function=self.spa_routes, event_type=cloudfront.FunctionEventType.VIEWER_REQUEST
                    )
                ],
                compress=True,
            ),
            additional_behaviors={
                API_PATH_PATTERN: cloudfront.BehaviorOptions(
                    origin=self.api_origin,
                    # A redirect would turn a POST into a GET: plain HTTP is refused instead.
                    viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                    allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
                    cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
                    origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
                    response_headers_policy=self.headers,
                    compress=True,
                )
            },
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            enable_logging=True,
            log_bucket=access_logs,
            log_file_prefix="cloudfront/storefront/",
        )
        nag(
            self.distribution,
            {
                "AwsSolutions-CFR1": (
                    "The shop sells to every country it ships to; the API checks who may do what, so a geo "
                    "restriction would only turn buyers away."
                ),
                "AwsSolutions-CFR2": (
                    "No WAF web ACL: the HTTP API behind /api/* throttles per stage and checks every token, and the "
                    "rest is static files; a CloudFront web ACL lives in us-east-1 and is an account-level choice."
                ),
                "AwsSolutions-CFR4": (
                    "Served on the distribution's own *.cloudfront.net name, whose certificate CloudFront "
                    "manages; the minimum TLS version is set with a custom domain's certificate, not this one."
                ),
            },
        )
        checkov_skip(
            self.distribution,
            {
                "CKV_AWS_68": (
                    "No WAF web ACL: the HTTP API behind /api/* throttles per stage and checks every token; "
                    "the rest is static files."
                ),
                "CKV_AWS_174": (
                    "The distribution's own *.cloudfront.net certificate: a minimum TLS version needs a custom "
                    "domain's certificate."
                ),
                "CKV_AWS_310": "One origin per behaviour by design: /api/* is the API, the rest the site bucket.",
            },
        )
        source = s3deploy.Source.asset(str(site))
        assets = s3deploy.BucketDeployment(
            self,
            "UploadAssets",
            sources=[source],
            destination_bucket=self.bucket,
            exclude=["*"],
            include=[f"{ASSETS_DIR}/*"],
            cache_control=[s3deploy.CacheControl.from_string(ASSET_CACHE_CONTROL)],
            prune=False,
            memory_limit=256,
        )
        self.upload = s3deploy.BucketDeployment(
            self,
            "UploadPages",
            sources=[source],
            destination_bucket=self.bucket,
            exclude=[f"{ASSETS_DIR}/*", *NOT_SERVED],
            cache_control=[s3deploy.CacheControl.from_string(PAGE_CACHE_CONTROL)],
            prune=True,
            memory_limit=256,
            distribution=self.distribution,
            distribution_paths=["/*"],
        )
        # Pages name assets: the assets are there before any page that names them.
        self.upload.node.add_dependency(assets)
        self._acknowledge_provider(assets)

    def _acknowledge_provider(self, deployment: s3deploy.BucketDeployment) -> None:
        """The provider function and role aws-cdk-lib creates once per stack for every BucketDeployment."""
        stack = Stack.of(self)
        account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
        unresolved_region = Token.is_unresolved(stack.region)
        partition = "<AWS::Partition>" if unresolved_region else stack.partition
        region = "<AWS::Region>" if unresolved_region else stack.region
        synthesizer = stack.synthesizer
        qualifier = getattr(synthesizer, "qualifier", None) or DefaultStackSynthesizer.DEFAULT_QUALIFIER
        site = logical_id(cast(s3.CfnBucket, self.bucket.node.default_child))
        granted = [
            *(f"Action::s3:{action}" for action in ("GetBucket*", "GetObject*", "List*", "Abort*", "DeleteObject*")),
            f"Resource::arn:{partition}:s3:::cdk-{qualifier}-assets-{account}-{region}/*",
            f"Resource::<{site}.Arn>/*",
            # cloudfront:CreateInvalidation and GetInvalidation take no resource narrower than `*`.
            "Resource::*",
        ]
        findings = {
            LAMBDA_BASIC: LAMBDA_BASIC_REASON,
            **{f"AwsSolutions-IAM5[{finding}]": BUCKET_DEPLOYMENT_REASON for finding in granted},
            "AwsSolutions-L1": (
                "aws-cdk-lib pins the BucketDeployment provider's runtime together with the AWS CLI layer it "
                "ships; it runs at deploy time only."
            ),
        }
        for child in stack.node.children:
            if child.node.id.startswith(BUCKET_DEPLOYMENT_PROVIDER):
                nag(child, findings)
                checkov_skip_all(child, CDK_PROVIDER_FUNCTION_SKIPS, resource_type="AWS::Lambda::Function")
                checkov_skip_all(child, {"CKV_AWS_158": LOG_GROUP_KMS_REASON}, resource_type="AWS::Logs::LogGroup")
                checkov_skip_all(child, {"CKV_AWS_111": BUCKET_DEPLOYMENT_REASON}, resource_type="AWS::IAM::Policy")
        nag(deployment.handler_role, findings)

    @property
    def url(self) -> str:
        return f"https://{self.distribution.distribution_domain_name}"
