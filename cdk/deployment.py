"""The whole deployment: every stack of one environment, wired with explicit dependencies.

`app.py` and the tests both call `build_deployment`, so the tests synthesise exactly what ships.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Environment, Tags

from cdk.assets import LambdaPackages
from cdk.config import DeploymentConfig
from cdk.nag import skip_cdk_providers
from cdk.stacks import ApiStack, DataStack, EksStack, MonitoringStack, NetworkStack, StreamingStack
from cloudshop.build import LambdaBuild, StorefrontBuild


@dataclass(frozen=True)
class Deployment:
    network: NetworkStack
    data: DataStack
    streaming: StreamingStack
    api: ApiStack
    eks: EksStack
    monitoring: MonitoringStack

    @property
    def stacks(self) -> tuple[NetworkStack, DataStack, StreamingStack, ApiStack, EksStack, MonitoringStack]:
        return (self.network, self.data, self.streaming, self.api, self.eks, self.monitoring)


def build_deployment(
    app: App, *, config: DeploymentConfig, build: LambdaBuild, storefront: StorefrontBuild
) -> Deployment:
    env = Environment(account=config.account, region=config.region)
    prefix = config.stack_prefix
    packages = LambdaPackages(build)

    network = NetworkStack(app, f"{prefix}-Network", config=config, env=env)
    data = DataStack(app, f"{prefix}-Data", config=config, network=network.network, packages=packages, env=env)
    streaming = StreamingStack(
        app,
        f"{prefix}-Streaming",
        config=config,
        network=network.network,
        data=data.resources,
        packages=packages,
        env=env,
    )
    api = ApiStack(
        app,
        f"{prefix}-Api",
        config=config,
        network=network.network,
        data=data.resources,
        packages=packages,
        storefront=storefront,
        env=env,
    )
    eks = EksStack(
        app,
        f"{prefix}-Eks",
        config=config,
        network=network.network,
        data=data.resources,
        access_log_bucket=data.buckets.access_logs,
        stream=streaming.stream,
        gateway=api.gateway,
        env=env,
    )
    monitoring = MonitoringStack(app, f"{prefix}-Monitoring", config=config, api=api, data=data, env=env)

    data.add_stack_dependency(network)
    streaming.add_stack_dependency(data)
    api.add_stack_dependency(data)
    api.add_stack_dependency(streaming)
    eks.add_stack_dependency(api)
    eks.add_stack_dependency(streaming)
    monitoring.add_stack_dependency(api)
    monitoring.add_stack_dependency(eks)

    deployment = Deployment(network=network, data=data, streaming=streaming, api=api, eks=eks, monitoring=monitoring)
    for stack in deployment.stacks:
        skip_cdk_providers(stack)
    tags = {"project": "cloudshop", "environment": config.environment, **config.tags}
    for stack in deployment.stacks:
        for key, value in tags.items():
            # The proxy target group's schema has no Tags property (CloudFormation rejects them).
            Tags.of(stack).add(key, value, exclude_resource_types=["AWS::RDS::DBProxyTargetGroup"])
    return deployment
