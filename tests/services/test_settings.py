"""Settings: the environment contract, and secrets that the cloud hands over by ARN."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloudshop.settings import SecretUnavailable, Settings, load_secrets


def test_postgres_urls_mean_psycopg3() -> None:
    assert Settings(database_url="postgresql://u@db:5432/shop").database_url == "postgresql+psycopg://u@db:5432/shop"


def test_secrets_named_by_arn_are_read_once_and_fill_the_settings() -> None:
    store = {"arn:jwt": "-----BEGIN PRIVATE KEY-----...", "arn:internal": "i" * 64}
    asked: list[str] = []

    def fetch(arn: str) -> str:
        asked.append(arn)
        return store[arn]

    settings = load_secrets(
        Settings(
            database_url="postgresql://proxy.internal:5432/cloudshop",
            database_secret_arn="arn:db",
            jwt_private_key_secret_arn="arn:jwt",
            internal_token_secret_arns={"order-product": "arn:internal"},
        ),
        fetch=fetch,
    )

    assert settings.jwt_private_key is not None and settings.jwt_private_key.get_secret_value().startswith("-----")
    assert {pair: s.get_secret_value() for pair, s in settings.internal_token_secrets.items()} == {
        "order-product": "i" * 64
    }
    # The database's credentials rotate under a running process: the engine reads them, not this.
    assert settings.database_url == "postgresql+psycopg://proxy.internal:5432/cloudshop"
    assert sorted(asked) == ["arn:internal", "arn:jwt"]


def test_a_missing_secret_stops_start_up_naming_the_setting_and_the_secret(aws_endpoint: str) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cloudshop-dev-internal-token-order-product-AbCdEf"
    settings = Settings(aws_endpoint_url=aws_endpoint, internal_token_secret_arns={"order-product": arn})

    with pytest.raises(SecretUnavailable) as caught:
        load_secrets(settings)

    assert "INTERNAL_TOKEN_SECRET_ARNS[ORDER-PRODUCT]" in str(caught.value)
    assert arn in str(caught.value)
    assert "ResourceNotFoundException" in str(caught.value)


def test_values_set_directly_win_over_arns() -> None:
    settings = load_secrets(
        Settings(
            internal_token_secrets={"order-product": "local-" + "x" * 32},
            internal_token_secret_arns={"order-product": "arn:never"},
        ),
        fetch=lambda arn: pytest.fail(f"fetched {arn}"),
    )
    assert settings.internal_token_secrets["order-product"].get_secret_value().startswith("local-")


def test_service_token_secrets_come_as_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERNAL_TOKEN_SECRETS", '{"order-product": "' + "p" * 40 + '"}')
    monkeypatch.setenv("INTERNAL_TOKEN_SECRET_ARNS", '{"order-payment": "arn:payment"}')

    settings = Settings()

    assert settings.internal_token_secrets["order-product"].get_secret_value() == "p" * 40
    assert settings.internal_token_secret_arns == {"order-payment": "arn:payment"}
    assert "p" * 40 not in repr(settings)


@pytest.mark.parametrize("field", [{"currency": "inr"}, {"db_pool_size": 0}, {"kafka_security_protocol": "NONE"}])
def test_bad_settings_fail_at_start_up(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**field)  # type: ignore[arg-type]
