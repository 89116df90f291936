"""The deploy rehearsal: the synthesised templates and the rendered dev overlay, run on one machine.

A deployment is rehearsed the way CloudFormation and the cluster would carry it out, onto local
servers instead of AWS:

- `cloudformation`: the templates' resources in deploy order, their intrinsic functions evaluated to
  values (`Ref`, `Fn::GetAtt`, `Fn::Join`, `Fn::Sub`, `Fn::Select`, `Fn::Split`, `Fn::ImportValue`
  through the exporting stack's outputs, pseudo parameters, dynamic references to secrets);
- `estate`: what each resource type becomes locally, created from its template properties: tables on
  dynalite; queues, buckets and secrets on moto; the database instance a PostgreSQL cluster with the
  master secret's credentials and TLS; topics on the Kafka broker; custom resources run by their own
  handlers (CloudFormation's protocol, or the CDK Provider framework's), but the storefront's
  BucketDeployment, whose copy is made here (its handler runs an AWS CLI layer that is not here), and
  the Kafka ACLs (`Custom::KafkaAcls`: the broker here has no authorizer; the rehearsal of the
  analytics link, tests/analytics/test_cloud_link.py, runs the same code against one that has);
  CloudFront is not emulated (the local gateway serves the same build, `cloudshop.storefront`);
- `network`: the one place that maps cloud addresses (RDS Proxy, MSK brokers, the HTTP API, the
  Kubernetes Service names) to loopback ports, plus the one override that is not an address (Kafka's
  SASL_SSL/IAM sign-in, which the local broker does not speak);
- `lambdas` and `lambda_host`: every Python function in its own process, with exactly its template
  environment plus what the Lambda runtime itself sets, importing its handler from its own code asset,
  behind the Lambda Invoke API (`AWS_ENDPOINT_URL_LAMBDA` works for plain boto3);
- `gateway`: the HTTP API from its routes, integrations and Lambda REQUEST authorizers;
- `event_sources`: the SQS event source mapping (batch size, partial batch responses) and the MSK one
  (topics, consumer group, starting position, batches grouped by topic-partition, base64);
- `cluster` and `container_entry`: the Deployments of the overlay ArgoCD syncs, each container with its
  image's entrypoint, only what its image ships importable, and the environment Kubernetes would give
  it (image ENV, `envFrom`, `env`), CDK's `cloudshop-aws` ConfigMap included;
- `harness`: starts all of it in order and stops every process it started.
"""
