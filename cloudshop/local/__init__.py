"""Local tooling: the real servers behind the `full` profile and the test fixtures.

See `cloudshop.local.servers` for what each server is and why it is started the way it is.
"""
