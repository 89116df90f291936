"""EKS core: the cluster, its nodes, add-ons, Pod Identity roles, ECR, ArgoCD and its root Application."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from aws_cdk import CfnCondition, CfnResource, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk.lambda_layer_kubectl_v36 import KubectlV36Layer
from constructs import Construct

from cdk.nag import (
    LAMBDA_BASIC,
    LAMBDA_BASIC_REASON,
    LAMBDA_VPC,
    LAMBDA_VPC_REASON,
    checkov_skip_all,
    logical_id,
    managed_policy,
    nag,
)
from cloudshop.estate import Workload

# The cluster's default StorageClass (EBS gp3 through the EBS CSI driver). Every volume the ArgoCD
# Applications claim names it (kube-prometheus-stack, Loki); tests/cdk/test_eks.py holds them to it.
STORAGE_CLASS = "gp3"
EBS_CSI_CONTROLLER_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
# The VPC CNI enforces NetworkPolicies (eks_services/k8s/base/network-policies.yaml) with its network
# policy agent; the controller that resolves them runs in the EKS control plane. Standard mode: a new
# pod is reachable for the moment it takes the agent to apply its policies (strict mode would also
# deny all traffic of pods no policy selects, i.e. kube-system, monitoring and argocd).
VPC_CNI_CONFIGURATION = {"enableNetworkPolicy": "true"}
# Requests of the charts CDK installs (the charts set none). The node group is sized from every pod's
# requests (tests/cdk/test_eks_capacity.py), so a pod without them would be free to the scheduler.
ARGOCD_REQUESTS = {
    "controller": {"cpu": "250m", "memory": "512Mi"},
    "repoServer": {"cpu": "100m", "memory": "256Mi"},
    "server": {"cpu": "50m", "memory": "128Mi"},
    "redis": {"cpu": "50m", "memory": "64Mi"},
    "applicationSet": {"cpu": "25m", "memory": "64Mi"},
    "notifications": {"cpu": "25m", "memory": "64Mi"},
}
ALB_CONTROLLER_REQUESTS = {"cpu": "50m", "memory": "128Mi"}

ALB_CONTROLLER_RESOURCES = (
    "*",
    "arn:<AWS::Partition>:ec2:*:*:security-group/*",
    "arn:<AWS::Partition>:elasticloadbalancing:*:*:targetgroup/*/*",
    "arn:<AWS::Partition>:elasticloadbalancing:*:*:loadbalancer/net/*/*",
    "arn:<AWS::Partition>:elasticloadbalancing:*:*:loadbalancer/app/*/*",
    "arn:<AWS::Partition>:elasticloadbalancing:*:*:listener/net/*/*/*",
    "arn:<AWS::Partition>:elasticloadbalancing:*:*:listener/app/*/*/*",
    "arn:<AWS::Partition>:elasticloadbalancing:*:*:listener-rule/net/*/*/*",
    "arn:<AWS::Partition>:elasticloadbalancing:*:*:listener-rule/app/*/*/*",
)
ARGOCD_NAMESPACE = "argocd"
ARGOCD_BOOTSTRAP_DIR = Path(__file__).resolve().parent.parent / "eks_services" / "argocd" / "bootstrap"
ECR_IMAGES_KEPT = 30
AWS_SETTINGS_CONFIGMAP = "cloudshop-aws"


def workload_settings_configmap(workload: str) -> str:
    """The ConfigMap of one workload's own deploy-time settings (`cloudshop-aws-order`)."""
    return f"{AWS_SETTINGS_CONFIGMAP}-{workload}"


def argocd_bootstrap(name: str) -> list[dict[str, Any]]:
    """The documents of `eks_services/argocd/bootstrap/<name>.yaml` (AppProject + root Application),
    applied as committed. The repository and revision live in git only: the child Applications the
    root syncs name them too, so a deploy-time override of the root alone would split the two."""
    path = ARGOCD_BOOTSTRAP_DIR / f"{name}.yaml"
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def pod_identity_role(
    scope: Construct,
    name: str,
    *,
    cluster: eks.Cluster,
    pod_identity_agent: Construct,
    namespace: str,
    service_account: str,
) -> iam.Role:
    """A role only pods of `namespace/service_account` assume, through an EKS Pod Identity association
    (`<name>PodRole`, `<name>PodIdentity`); the association waits for the agent that serves it."""
    role = iam.Role(
        scope,
        f"{name}PodRole",
        assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
        description=f"Pod Identity role of {namespace}/{service_account}",
    )
    association = eks.CfnPodIdentityAssociation(
        scope,
        f"{name}PodIdentity",
        cluster_name=cluster.cluster_name,
        namespace=namespace,
        service_account=service_account,
        role_arn=role.role_arn,
    )
    association.node.add_dependency(pod_identity_agent)
    return role


class EksCore(Construct):
    """The cluster (`aws_eks_v2`), one managed node group of a fixed `node_count`, the VPC CNI with
    NetworkPolicy enforcement, the Pod Identity agent, the EBS CSI driver and the default StorageClass,
    metrics-server (for the HPAs), the AWS Load Balancer Controller (it binds the services to the private
    ingress's target groups), ECR repositories, ArgoCD and its root Application.

    Kubernetes objects the services run as (Deployments, Services, ServiceAccounts, HPAs) are ArgoCD's,
    from `eks_services/`. CDK owns only what needs AWS identifiers: Pod Identity associations, the
    per-service settings ConfigMaps and the TargetGroupBindings.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        kubernetes_version: str,
        workloads: tuple[Workload, ...],
        node_instance_type: str,
        node_count: int,
        argocd_bootstrap: list[dict[str, Any]],
        argocd_chart_version: str,
        admin_role_arns: Iterable[str] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.workloads = workloads
        self.secrets_key = kms.Key(
            self,
            "SecretsKey",
            description=f"{cluster_name} Kubernetes secrets envelope encryption",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.cluster = eks.Cluster(
            self,
            "Cluster",
            cluster_name=cluster_name,
            version=eks.KubernetesVersion.of(kubernetes_version),
            vpc=vpc,
            vpc_subnets=[subnets],
            default_capacity_type=eks.DefaultCapacityType.NODEGROUP,
            default_capacity=0,
            endpoint_access=eks.EndpointAccess.PUBLIC_AND_PRIVATE,
            secrets_encryption_key=self.secrets_key,
            cluster_logging=[
                eks.ClusterLoggingTypes.API,
                eks.ClusterLoggingTypes.AUDIT,
                eks.ClusterLoggingTypes.AUTHENTICATOR,
                eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
                eks.ClusterLoggingTypes.SCHEDULER,
            ],
            kubectl_provider_options=eks.KubectlProviderOptions(kubectl_layer=KubectlV36Layer(self, "KubectlLayer")),
            alb_controller=eks.AlbControllerOptions(
                version=eks.AlbControllerVersion.V2_17_1,
                additional_helm_chart_values={"resources": {"requests": ALB_CONTROLLER_REQUESTS}},
            ),
        )
        for index, arn in enumerate(admin_role_arns):
            self.cluster.grant_cluster_admin(f"Admin{index}", arn)

        # CfnAddon, not the L2 `eks.Addon`, here and for the EBS CSI driver: the L2 sets neither
        # ResolveConflicts nor Pod Identity associations. EKS installs a self-managed aws-node with a
        # new cluster; OVERWRITE lets the managed add-on take it over.
        self.vpc_cni = eks.CfnAddon(
            self,
            "VpcCni",
            cluster_name=self.cluster.cluster_name,
            addon_name="vpc-cni",
            configuration_values=json.dumps(VPC_CNI_CONFIGURATION),
            resolve_conflicts="OVERWRITE",
            # Removing the add-on from the template must not take the pod network off running nodes.
            preserve_on_delete=True,
        )
        # No cluster autoscaler: the group is fixed at what every pod needs with each workload at its
        # HPA maximum, plus a spare node (`node_count`, per environment in cdk/config.py; computed and
        # checked by tests/cdk/test_eks_capacity.py). The HPA then never waits minutes for a node.
        self.nodegroup = self.cluster.add_nodegroup_capacity(
            "Workers",
            instance_types=[ec2.InstanceType(node_instance_type)],
            ami_type=eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
            min_size=node_count,
            desired_size=node_count,
            max_size=node_count,
            subnets=subnets,
            disk_size=50,
        )
        # Nodes join with the network policy agent already running.
        self.nodegroup.node.add_dependency(self.vpc_cni)

        self.pod_identity_agent = self.cluster.eks_pod_identity_agent
        self.metrics_server = eks.Addon(
            self,
            "MetricsServer",
            cluster=self.cluster,  # type: ignore[arg-type]  # jsii's ICluster protocol lags Cluster
            addon_name="metrics-server",
        )
        self.metrics_server.node.add_dependency(self.nodegroup)
        self._add_block_storage()

        self.repositories: dict[str, ecr.Repository] = {}
        for workload in workloads:
            self.repositories[workload.name] = ecr.Repository(
                self,
                f"{workload.name.capitalize()}Repository",
                repository_name=f"cloudshop/{workload.name}",
                image_scan_on_push=True,
                image_tag_mutability=ecr.TagMutability.IMMUTABLE,
                encryption=ecr.RepositoryEncryption.KMS,
                lifecycle_rules=[ecr.LifecycleRule(max_image_count=ECR_IMAGES_KEPT)],
                removal_policy=RemovalPolicy.RETAIN,
            )

        self.roles: dict[str, iam.Role] = {}
        for workload in workloads:
            self.roles[workload.name] = pod_identity_role(
                self,
                workload.name.capitalize(),
                cluster=self.cluster,
                pod_identity_agent=self.pod_identity_agent,
                namespace=workload.namespace,
                service_account=workload.service_account,
            )

        namespaces = sorted({w.namespace for w in workloads})
        self.namespace_manifest = self.cluster.add_manifest(
            "Namespaces",
            *[{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in namespaces],
        )

        argocd_values: dict[str, Any] = {
            # The UI is reached with `kubectl port-forward`; nothing of ArgoCD is exposed.
            "server": {"service": {"type": "ClusterIP"}},
            "dex": {"enabled": False},
            "configs": {"params": {"server.insecure": True}},
        }
        for component, needs in ARGOCD_REQUESTS.items():
            argocd_values.setdefault(component, {})["resources"] = {"requests": needs}
        self.argocd = self.cluster.add_helm_chart(
            "ArgoCd",
            chart="argo-cd",
            repository="https://argoproj.github.io/argo-helm",
            version=argocd_chart_version,
            namespace=ARGOCD_NAMESPACE,
            create_namespace=True,
            release="argocd",
            values=argocd_values,
        )
        self.argocd.node.add_dependency(self.nodegroup)
        # The committed root (eks_services/argocd/bootstrap/<env>.yaml): nobody applies it by hand.
        self.root_application = self.cluster.add_manifest("ArgoRootApplication", *argocd_bootstrap)
        self.root_application.node.add_dependency(self.argocd)
        self._acknowledge_cdk_managed_findings()

    def _add_block_storage(self) -> None:
        """The EBS CSI driver add-on, its controller's role (EKS Pod Identity) and the default gp3
        StorageClass that Prometheus' and Loki's volume claims name."""
        self.ebs_csi_role = iam.Role(
            self,
            "EbsCsiControllerRole",
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
            description=f"Pod Identity role of kube-system/{EBS_CSI_CONTROLLER_SERVICE_ACCOUNT}",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AmazonEBSCSIDriverPolicy")],
        )
        nag(
            self.ebs_csi_role,
            {
                managed_policy("AmazonEBSCSIDriverPolicy", service_role=True): (
                    "The EBS CSI controller's AWS-maintained policy: it creates, attaches, snapshots and "
                    "deletes the volumes of PersistentVolumeClaims, which have no names before they exist; "
                    "its mutations are scoped to volumes tagged by the driver."
                ),
            },
        )
        # The add-on owns the association, so the controller's first pods already get credentials.
        self.ebs_csi_driver = eks.CfnAddon(
            self,
            "EbsCsiDriver",
            cluster_name=self.cluster.cluster_name,
            addon_name="aws-ebs-csi-driver",
            pod_identity_associations=[
                eks.CfnAddon.PodIdentityAssociationProperty(
                    role_arn=self.ebs_csi_role.role_arn, service_account=EBS_CSI_CONTROLLER_SERVICE_ACCOUNT
                )
            ],
        )
        # The add-on is ACTIVE only once its controller runs: it needs nodes and the Pod Identity agent.
        self.ebs_csi_driver.node.add_dependency(self.nodegroup, self.pod_identity_agent)
        self.storage_class = self.cluster.add_manifest(
            "DefaultStorageClass",
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "ebs.csi.aws.com",
                # Encrypted with the account's EBS key (aws/ebs): the volumes hold metrics and service
                # logs, which carry no secrets or card data (the same judgement as for the log groups).
                "parameters": {"type": "gp3", "encrypted": "true", "csi.storage.k8s.io/fstype": "ext4"},
                # Bound where the pod is scheduled: an EBS volume lives in one zone.
                "volumeBindingMode": "WaitForFirstConsumer",
                "allowVolumeExpansion": True,
                "reclaimPolicy": "Delete",
            },
        )
        self.storage_class.node.add_dependency(self.ebs_csi_driver)

    def _acknowledge_cdk_managed_findings(self) -> None:
        """Findings on the IAM that aws_eks_v2 creates for the cluster, its nodes and its providers."""
        nag(
            self.cluster.role,
            {managed_policy("AmazonEKSClusterPolicy"): "The EKS service role policy the control plane requires."},
        )
        nag(
            self.nodegroup.role,
            {
                managed_policy("AmazonEKSWorkerNodePolicy"): "Required by EKS for nodes to join the cluster.",
                managed_policy("AmazonEKS_CNI_Policy"): (
                    "The VPC CNI assigns pod IPs from the node's ENIs; this is its AWS-maintained policy."
                ),
                managed_policy("AmazonEC2ContainerRegistryReadOnly"): (
                    "Nodes pull the service images from ECR; read-only, AWS-maintained."
                ),
            },
        )
        provider = self.cluster.node.find_child("KubectlProvider")
        handler = provider.node.find_child("Handler")
        handler_resource = handler.node.default_child
        assert isinstance(handler_resource, CfnResource)
        ecr_public = next(c for c in handler.node.find_all() if isinstance(c, CfnCondition))
        kubectl_reason = (
            "The kubectl/helm provider functions are created and pinned by aws_eks_v2; they run only "
            "during deployments and act on this cluster."
        )
        nag(
            provider,
            {
                LAMBDA_BASIC: LAMBDA_BASIC_REASON,
                LAMBDA_VPC: LAMBDA_VPC_REASON,
                managed_policy("AmazonEC2ContainerRegistryReadOnly"): (
                    "The kubectl provider pulls Helm charts stored as OCI artifacts in ECR."
                ),
                (
                    'AwsSolutions-IAM4[Policy::{"Fn::If":["' + logical_id(ecr_public) + '",{"Fn::Join":'
                    '["",["arn:",{"Ref":"AWS::Partition"},":iam::aws:policy/'
                    'AmazonElasticContainerRegistryPublicReadOnly"]]},{"Ref":"AWS::NoValue"}]}]'
                ): "Only attached when charts come from ECR Public; read-only.",
                "AwsSolutions-L1": kubectl_reason,
                f"AwsSolutions-IAM5[Resource::<{logical_id(handler_resource)}.Arn>:*]": (
                    "The provider framework invokes every version of its own handler function."
                ),
            },
        )
        controller = self.cluster.alb_controller
        if controller is not None:
            reason = (
                "The AWS Load Balancer Controller's published IAM policy (installed by aws_eks_v2): it "
                "manages load balancers, target groups and security groups it creates, which have no "
                "names before it runs; its mutations are scoped by the elbv2.k8s.aws/cluster tag."
            )
            nag(controller, {f"AwsSolutions-IAM5[Resource::{arn}]": reason for arn in ALB_CONTROLLER_RESOURCES})
            checkov_skip_all(controller, {"CKV_AWS_111": reason}, resource_type="AWS::IAM::Policy")

    def add_settings(
        self, namespace: str, settings: Mapping[str, str], *, workload: str | None = None
    ) -> eks.KubernetesManifest:
        """ConfigMap `cloudshop-aws`: the settings only a deployment knows (queue URL, MSK brokers, secret
        ARNs, the JWT public key, the API URL, the physical names), read by the Deployments with an
        `envFrom` after the git-managed `cloudshop-config`, so these values win. With `workload`, that
        workload's own ConfigMap (`cloudshop-aws-<workload>`, read last by its pods alone): the
        settings no other workload of the namespace may see (its service-token secret ARNs)."""
        name = workload_settings_configmap(workload) if workload else AWS_SETTINGS_CONFIGMAP
        manifest = self.cluster.add_manifest(
            f"{namespace.capitalize()}{(workload or '').capitalize()}AwsSettings",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": dict(settings),
            },
        )
        manifest.node.add_dependency(self.namespace_manifest)
        return manifest
