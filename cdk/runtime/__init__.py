"""Lambda code that belongs to the infrastructure, not to a service: the gateway authorizer and the
JWT key generator. Packaged by `cloudshop.build` into the `platform` asset; it must not import aws_cdk."""
