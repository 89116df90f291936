"""StorefrontSite: the storefront's bucket and the CloudFront distribution in front of it and of the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk.assertions import Capture, Match

from cloudshop import build
from cloudshop.storefront import (
    ASSET_CACHE_CONTROL,
    HSTS_MAX_AGE_SECONDS,
    PAGE_CACHE_CONTROL,
    PERMISSIONS_POLICY,
    content_security_policy,
)

pytestmark = pytest.mark.infra

# The managed policies the /api/* behaviour must use: no caching, every viewer header but Host.
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST_HEADER = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"


def distribution(synth) -> dict:
    (resource,) = synth.resources("Api", "AWS::CloudFront::Distribution").values()
    return resource["Properties"]["DistributionConfig"]


def site_bucket(synth) -> tuple[str, dict]:
    buckets = {k: v for k, v in synth.resources("Api", "AWS::S3::Bucket").items() if k.startswith("StorefrontSite")}
    ((logical_id, resource),) = buckets.items()
    return logical_id, resource


def test_the_site_bucket_is_private_encrypted_and_tls_only(synth) -> None:
    logical_id, bucket = site_bucket(synth)
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "s3/storefront/"
    assert "WebsiteConfiguration" not in props
    (policy,) = [
        p
        for p in synth.resources("Api", "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": logical_id}
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    deny_plain_http = [s for s in statements if s["Effect"] == "Deny"]
    assert deny_plain_http and deny_plain_http[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # Read by CloudFront alone, and only for this distribution (origin access control).
    (read,) = [s for s in statements if s["Effect"] == "Allow" and s["Action"] == "s3:GetObject"]
    assert read["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert "AWS:SourceArn" in read["Condition"]["StringEquals"]
    assert all(s.get("Principal") not in ("*", {"AWS": "*"}) for s in statements if s["Effect"] == "Allow")


def test_the_bucket_is_read_through_origin_access_control(synth) -> None:
    (oac,) = synth.resources("Api", "AWS::CloudFront::OriginAccessControl").values()
    assert oac["Properties"]["OriginAccessControlConfig"]["OriginAccessControlOriginType"] == "s3"
    assert oac["Properties"]["OriginAccessControlConfig"]["SigningBehavior"] == "always"
    logical_id, _ = site_bucket(synth)
    (s3_origin,) = [o for o in distribution(synth)["Origins"] if "S3OriginConfig" in o]
    assert s3_origin["DomainName"] == {"Fn::GetAtt": [logical_id, "RegionalDomainName"]}
    assert "OriginAccessControlId" in s3_origin
    assert s3_origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}


def test_api_paths_go_uncached_to_the_http_api_with_every_viewer_header_but_host(synth) -> None:
    config = distribution(synth)
    (api,) = config["CacheBehaviors"]
    assert api["PathPattern"] == "/api/*"
    assert api["CachePolicyId"] == CACHING_DISABLED
    assert api["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST_HEADER
    assert set(api["AllowedMethods"]) == {"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"}
    assert api["ViewerProtocolPolicy"] == "https-only"
    (origin,) = [o for o in config["Origins"] if o["Id"] == api["TargetOriginId"]]
    assert origin["CustomOriginConfig"] == {"OriginProtocolPolicy": "https-only", "OriginSSLProtocols": ["TLSv1.2"]}
    api_ids = set(synth.resources("Api", "AWS::ApiGatewayV2::Api"))
    (reference,) = [part for part in origin["DomainName"]["Fn::Join"][1] if isinstance(part, dict) and "Ref" in part][
        :1
    ]
    assert reference["Ref"] in api_ids
    assert ".execute-api." in "".join(p for p in origin["DomainName"]["Fn::Join"][1] if isinstance(p, str))


def test_everything_else_is_the_site_with_its_routes_sent_to_index_html(synth) -> None:
    default = distribution(synth)["DefaultCacheBehavior"]
    assert default["CachePolicyId"] == CACHING_OPTIMIZED
    assert default["ViewerProtocolPolicy"] == "redirect-to-https"
    assert default["AllowedMethods"] == ["GET", "HEAD"]
    (function,) = synth.resources("Api", "AWS::CloudFront::Function").values()
    assert [a["EventType"] for a in default["FunctionAssociations"]] == ["viewer-request"]
    code = function["Properties"]["FunctionCode"]
    assert "'/index.html'" in code and "indexOf('.')" in code
    assert distribution(synth)["DefaultRootObject"] == "index.html"
    # Errors are not rewritten distribution-wide: an API 404 stays the API's problem+json answer.
    assert "CustomErrorResponses" not in distribution(synth)


def test_cloudfront_sets_the_security_headers_the_local_gateway_sends(synth) -> None:
    policy = Capture()
    synth.template("Api").has_resource_properties(
        "AWS::CloudFront::ResponseHeadersPolicy", {"ResponseHeadersPolicyConfig": policy}
    )
    config = policy.as_object()
    headers = config["SecurityHeadersConfig"]
    bucket = f"{synth.config.prefix}product-images"
    stores = [f"https://{bucket}.s3.{synth.config.region}.amazonaws.com", f"https://{bucket}.s3.amazonaws.com"]
    assert headers["ContentSecurityPolicy"] == {
        "ContentSecurityPolicy": content_security_policy(
            image_sources=stores, connect_sources=stores, upgrade_insecure=True
        ),
        "Override": True,
    }
    csp = headers["ContentSecurityPolicy"]["ContentSecurityPolicy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert headers["StrictTransportSecurity"] == {
        "AccessControlMaxAgeSec": HSTS_MAX_AGE_SECONDS,
        "IncludeSubdomains": True,
        "Override": True,
    }
    assert headers["FrameOptions"] == {"FrameOption": "DENY", "Override": True}
    assert headers["ContentTypeOptions"] == {"Override": True}
    assert headers["ReferrerPolicy"] == {"ReferrerPolicy": "strict-origin-when-cross-origin", "Override": True}
    custom = {h["Header"]: h["Value"] for h in config["CustomHeadersConfig"]["Items"]}
    assert custom == {"Permissions-Policy": PERMISSIONS_POLICY, "Cross-Origin-Opener-Policy": "same-origin"}
    # On the site and on the API alike.
    config_ = distribution(synth)
    behaviours = [config_["DefaultCacheBehavior"], *config_["CacheBehaviors"]]
    assert {b["ResponseHeadersPolicyId"]["Ref"] for b in behaviours} == set(
        synth.resources("Api", "AWS::CloudFront::ResponseHeadersPolicy")
    )


def test_the_distribution_logs_and_speaks_http2_and_3(synth) -> None:
    config = distribution(synth)
    assert config["Logging"]["Prefix"] == "cloudfront/storefront/"
    assert "AccessLogs" in str(config["Logging"]["Bucket"])
    assert config["HttpVersion"] == "http2and3"


def test_the_build_is_uploaded_hashed_assets_for_a_year_and_pages_revalidated(synth) -> None:
    deployments = synth.resources("Api", "Custom::CDKBucketDeployment")
    by_id = {k.split("CustomResource")[0]: v["Properties"] for k, v in deployments.items()}
    assets, pages = by_id["StorefrontUploadAssets"], by_id["StorefrontUploadPages"]
    assert assets["SystemMetadata"]["cache-control"] == ASSET_CACHE_CONTROL
    assert assets["Include"] == ["assets/*"] and assets["Exclude"] == ["*"]
    assert assets["Prune"] is False
    assert pages["SystemMetadata"]["cache-control"] == PAGE_CACHE_CONTROL
    assert set(pages["Exclude"]) == {"assets/*", ".vite/*", "size-report.json"}
    assert "Prune" not in pages or pages["Prune"] is True
    assert pages["DistributionPaths"] == ["/*"]
    assert "DistributionId" in pages


def test_the_images_bucket_admits_presigned_uploads_from_the_storefront(synth) -> None:
    synth.template("Data").has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": f"{synth.config.prefix}product-images",
            "CorsConfiguration": {
                "CorsRules": [
                    Match.object_like(
                        {"AllowedMethods": ["POST"], "AllowedOrigins": Match.array_with(["https://*.cloudfront.net"])}
                    )
                ]
            },
        },
    )
    others = [
        b
        for b in synth.resources("Data", "AWS::S3::Bucket").values()
        if b["Properties"].get("BucketName") != f"{synth.config.prefix}product-images"
    ]
    assert all("CorsConfiguration" not in b["Properties"] for b in others)


def test_the_storefront_url_is_an_output(synth) -> None:
    output = synth.templates["Api"]["Outputs"]["StorefrontUrl"]["Value"]
    assert "DomainName" in str(output) and "https://" in str(output)


def test_synth_refuses_a_missing_storefront_build_unless_told_to_use_a_placeholder(tmp_path: Path) -> None:
    with pytest.raises(build.BuildError, match="make web"):
        build.prepare_storefront(tmp_path, dist=tmp_path / "no-dist")
    placeholder = build.prepare_storefront(tmp_path, dist=tmp_path / "no-dist", allow_placeholder=True)
    assert placeholder.ready is False
    assert "make web" in (placeholder.site / "index.html").read_text()
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html>")
    assert build.prepare_storefront(tmp_path, dist=dist) == build.StorefrontBuild(site=dist, ready=True)
