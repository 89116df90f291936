"""The local runner's secrets (issue 10): one service-token secret per calling pair, in a file only
its owner may read, like the private key beside it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cloudshop.auth import internal_tokens_for
from cloudshop.estate import ESTATE
from cloudshop.local.runner import Platform, settings_from_env


def test_the_runner_keeps_a_secret_per_calling_pair_readable_by_its_owner_alone(tmp_path: Path) -> None:
    # Given a state dir from before, with the one shared secret world-readable,
    keys = tmp_path / "keys"
    keys.mkdir()
    shared = keys / "internal-token-secret"
    shared.write_text("s" * 64)
    shared.chmod(0o644)
    platform = Platform(profile="embedded", state_dir=tmp_path, base_port=18000)

    env = platform.settings_env({})

    path = keys / "internal-token-secrets.json"
    secrets = json.loads(env["INTERNAL_TOKEN_SECRETS"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((keys / "jwt-private.pem").stat().st_mode) == 0o600
    assert sorted(secrets) == list(ESTATE.token_pairs)
    assert len(set(secrets.values())) == len(secrets) and all(len(s) >= 32 for s in secrets.values())
    assert not shared.exists()
    # The same secrets on the next start, and each service takes only the pairs it is a party to.
    assert platform.settings_env({})["INTERNAL_TOKEN_SECRETS"] == env["INTERNAL_TOKEN_SECRETS"]
    settings = settings_from_env(env)
    assert internal_tokens_for(settings, service="payment").pairs == ("order-payment",)
    assert internal_tokens_for(settings, service="gateway").pairs == ("order-product",)
    assert internal_tokens_for(settings, service="order").pairs == ("order-payment", "order-product")


def test_a_secrets_file_left_readable_is_made_private_again(tmp_path: Path) -> None:
    platform = Platform(profile="embedded", state_dir=tmp_path, base_port=18000)
    first = platform.settings_env({})["INTERNAL_TOKEN_SECRETS"]
    path = tmp_path / "keys" / "internal-token-secrets.json"
    path.chmod(0o644)

    assert platform.settings_env({})["INTERNAL_TOKEN_SECRETS"] == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
