"""PostgreSQL on RDS: encrypted, optionally Multi-AZ, rotated credentials, and RDS Proxy for the Lambdas."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct, IConstruct

from cdk.nag import checkov_skip, managed_policy, nag
from cloudshop.estate import ServiceName, SqlSchema

ENGINE = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_16_9)
PORT = 5432
MASTER_USER = "cloudshop_admin"


class Database(Construct):
    """`secret` holds the master credentials (JSON: username, password, host, port, dbname), used only
    by the migration step (`cdk/schema.py`). Each service that owns SQL tables (`schemas`) connects as
    its own login role, whose password is in `role_secrets[service]`; the migration step creates the
    roles with those passwords. Every secret is rotated by a single-user Secrets Manager rotation
    function; `proxy` pools connections for the Lambdas and knows every secret, so a rotation needs no
    redeploy, and the services re-read their secret when a new connection is refused
    (`cloudshop.sql.SecretCredentials`). A pod that needed SQL would connect to `instance` directly.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        data_subnets: ec2.SubnetSelection,
        app_subnets: ec2.SubnetSelection,
        encryption_key: kms.IKey,
        instance_class: str,
        multi_az: bool,
        allocated_storage_gib: int,
        max_allocated_storage_gib: int,
        backup_retention_days: int,
        database_name: str,
        rotation_days: int,
        schemas: tuple[SqlSchema, ...],
        secret_name_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.database_name = database_name
        self._vpc = vpc
        self._app_subnets = app_subnets
        self._rotation_days = rotation_days
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description="cloudshop PostgreSQL", allow_all_outbound=False
        )
        parameters = rds.ParameterGroup(
            self,
            "Parameters",
            engine=ENGINE,
            parameters={
                "rds.force_ssl": "1",
                "log_min_duration_statement": "1000",
                "log_connections": "1",
                "log_disconnections": "1",
            },
        )
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            engine=ENGINE,
            instance_type=ec2.InstanceType(instance_class),
            vpc=vpc,
            vpc_subnets=data_subnets,
            security_groups=[self.security_group],
            port=PORT,
            database_name=database_name,
            credentials=rds.Credentials.from_generated_secret(MASTER_USER, encryption_key=encryption_key),
            parameter_group=parameters,
            multi_az=multi_az,
            allocated_storage=allocated_storage_gib,
            max_allocated_storage=max_allocated_storage_gib,
            storage_type=rds.StorageType.GP3,
            storage_encrypted=True,
            storage_encryption_key=encryption_key,
            backup_retention=Duration.days(backup_retention_days),
            deletion_protection=True,
            delete_automated_backups=False,
            removal_policy=RemovalPolicy.SNAPSHOT,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            iam_authentication=True,
            cloudwatch_logs_exports=["postgresql", "upgrade"],
            monitoring_interval=Duration.seconds(60),
            enable_performance_insights=True,
            performance_insight_encryption_key=encryption_key,
        )
        self.secret = self.instance.secret
        assert self.secret is not None  # from_generated_secret always makes one
        self.rotation = self.instance.add_rotation_single_user(
            automatically_after=Duration.days(rotation_days), vpc_subnets=app_subnets
        )
        self.schemas = schemas
        self.role_secrets: dict[ServiceName, rds.DatabaseSecret] = {}
        for schema in schemas:
            role_secret = rds.DatabaseSecret(
                self,
                f"{schema.service.capitalize()}RoleSecret",
                username=schema.role,
                dbname=database_name,
                secret_name=f"{secret_name_prefix}db-{schema.service}",
                encryption_key=encryption_key,
            )
            # host, port, engine: what the single-user rotation function needs to log in as the role.
            role_secret.attach(self.instance)
            self.role_secrets[schema.service] = role_secret
        self.proxy_security_group = ec2.SecurityGroup(
            self, "ProxySecurityGroup", vpc=vpc, description="cloudshop RDS Proxy"
        )
        self.proxy = self.instance.add_proxy(
            "Proxy",
            vpc=vpc,
            vpc_subnets=app_subnets,
            secrets=[self.secret, *self.role_secrets.values()],
            security_groups=[self.proxy_security_group],
            require_tls=True,
            iam_auth=False,
            debug_logging=False,
            idle_client_timeout=Duration.minutes(30),
            max_connections_percent=70,
        )
        self.instance.connections.allow_default_port_from(self.proxy_security_group, "RDS Proxy")

        nag(
            self.instance,
            {
                "AwsSolutions-RDS11": (
                    "The standard port is kept: clients reach the instance only through its security "
                    "group (proxy, rotation function, EKS nodes) in isolated subnets; a custom port "
                    "would hide nothing from a host that can already reach it."
                ),
                managed_policy("AmazonRDSEnhancedMonitoringRole", service_role=True): (
                    "The enhanced-monitoring role uses AmazonRDSEnhancedMonitoringRole, the AWS policy "
                    "scoped to publishing RDS OS metrics."
                ),
            },
        )
        if not multi_az:
            reason = "Multi-AZ is a deployment option (db_multi_az, on for prod); dev/staging run single-AZ."
            nag(self.instance, {"AwsSolutions-RDS3": reason})
            checkov_skip(self.instance, {"CKV_AWS_157": reason})

    def rotate_roles_after(self, migration: IConstruct) -> list[secretsmanager.SecretRotation]:
        """Schedule the role secrets' rotation once `migration` (which creates the roles) has run: the
        first rotation starts at once, and logs in with the password the migration step set."""
        rotations = []
        for service, role_secret in self.role_secrets.items():
            rotation = secretsmanager.SecretRotation(
                self,
                f"{service.capitalize()}RoleRotation",
                application=secretsmanager.SecretRotationApplication.POSTGRES_ROTATION_SINGLE_USER,
                secret=role_secret,
                target=self.instance,
                vpc=self._vpc,
                vpc_subnets=self._app_subnets,
                automatically_after=Duration.days(self._rotation_days),
            )
            rotation.node.add_dependency(migration)
            rotations.append(rotation)
        return rotations

    @property
    def proxy_url(self) -> str:
        """`DATABASE_URL` for clients of the proxy; the user name and password come from `secret`."""
        return f"postgresql://{self.proxy.endpoint}:{PORT}/{self.database_name}?sslmode=require"

    @property
    def instance_url(self) -> str:
        """`DATABASE_URL` for clients inside the VPC that bypass the proxy (EKS pods)."""
        return f"postgresql://{self.instance.db_instance_endpoint_address}:{PORT}/{self.database_name}?sslmode=require"
