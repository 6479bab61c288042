from pathlib import Path

import pytest

from keystile import config
from keystile.core.errors import ConfigError


def test_defaults() -> None:
    settings = config.load({"XDG_DATA_HOME": "/data"})
    assert settings.listen == ("127.0.0.1", 8700)
    assert settings.db == Path("/data/keystile/keystile.db")
    assert settings.key_prefix == "ks"
    assert settings.pepper is None and settings.static_keys == ()


def test_env_wins_over_toml(tmp_path: Path) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text('[server]\nlisten = "0.0.0.0:9000"\n[keys]\nprefix = "acme"\n')
    settings = config.load({"KEYSTILE_CONFIG": str(toml), "KEYSTILE_LISTEN": "127.0.0.1:9100"})
    assert settings.listen == ("127.0.0.1", 9100)
    assert settings.key_prefix == "acme"


def test_all_errors_are_reported_naming_setting_and_value(tmp_path: Path) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text('[server]\nlisten = "nope"\nlistn = 1\n')
    with pytest.raises(ConfigError) as caught:
        config.load({"KEYSTILE_CONFIG": str(toml), "KEYSTILE_KEY_PREFIX": "Bad",
                     "KEYSTILE_DB": "mysql://x"})  # fmt: skip
    message = str(caught.value)
    assert "server.listen='nope'" in message
    assert "unknown setting 'server.listn'" in message
    assert "KEYSTILE_KEY_PREFIX='Bad'" in message
    assert "KEYSTILE_DB='mysql://x'" in message


def test_secrets_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        config.load({"KEYSTILE_PEPPER": "tiny-secret"})
    assert "tiny-secret" not in str(caught.value)
    settings = config.load({"KEYSTILE_PEPPER": "a-long-enough-pepper", "KEYSTILE_ADMIN_KEY": "adm"})
    shown = str(config.describe(settings)) + repr(settings)
    assert "a-long-enough-pepper" not in shown and "adm'" not in shown


def test_pepper_file(tmp_path: Path) -> None:
    pepper = tmp_path / "pepper"
    pepper.write_text("file-pepper-0123456789\n")
    assert config.load({"KEYSTILE_PEPPER_FILE": str(pepper)}).pepper == "file-pepper-0123456789"
    with pytest.raises(ConfigError, match="KEYSTILE_PEPPER_FILE="):
        config.load({"KEYSTILE_PEPPER_FILE": str(tmp_path / "missing")})


def test_bad_toml_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load({"KEYSTILE_CONFIG": str(bad)})
    with pytest.raises(ConfigError, match="cannot read"):
        config.load({"KEYSTILE_CONFIG": str(tmp_path / "none.toml")})


OIDC = {"KEYSTILE_OIDC_ISSUER": "https://accounts.google.com",
        "KEYSTILE_OIDC_CLIENT_ID": "123.apps.googleusercontent.com",
        "KEYSTILE_OIDC_CLIENT_SECRET": "GOCSPX-not-a-real-secret",
        "KEYSTILE_OIDC_EXTERNAL_URL": "https://app.example.com/"}  # fmt: skip


def test_oidc_is_on_only_with_all_four_settings() -> None:
    settings = config.load(OIDC)
    assert settings.oidc_enabled and settings.oidc_external_url == "https://app.example.com"
    partial = config.load({k: v for k, v in OIDC.items() if k != "KEYSTILE_OIDC_CLIENT_SECRET"})
    assert not partial.oidc_enabled
    assert partial.oidc_missing == ["KEYSTILE_OIDC_CLIENT_SECRET"]


def test_oidc_client_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-the-file\n")
    env = {**{k: v for k, v in OIDC.items() if k != "KEYSTILE_OIDC_CLIENT_SECRET"},
           "KEYSTILE_OIDC_CLIENT_SECRET_FILE": str(secret)}  # fmt: skip
    assert config.load(env).oidc_client_secret == "from-the-file"


def test_oidc_settings_refuse_bad_values_naming_them(tmp_path: Path) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text('[oidc]\nexternal_url = "https://app.example.com/app"\nscopes = "email"\n'
                    'key_scopes = ["admin"]\nclock_skew = "1h"\nclient_auth = "jwt"\n'
                    'group_map = "artists"\n')  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        config.load({"KEYSTILE_CONFIG": str(toml), "KEYSTILE_OIDC_ISSUER": "http://idp.example.com",
                     "KEYSTILE_OIDC_CLIENT_SECRET": "s3cret-value"})  # fmt: skip
    message = str(caught.value)
    for name in (
        "KEYSTILE_OIDC_ISSUER",
        "oidc.external_url",
        "oidc.scopes",
        "oidc.key_scopes",
        "oidc.clock_skew",
        "oidc.client_auth",
        "oidc.group_map",
    ):
        assert name in message, name


def test_oidc_secret_is_never_echoed() -> None:
    rows = {name: value for name, value, _ in config.describe(config.load(OIDC))}
    assert rows["KEYSTILE_OIDC_CLIENT_SECRET"] == "(set)"
    assert "GOCSPX" not in str(rows)


def test_redis_settings_default_to_per_process_limits() -> None:
    settings = config.load({})
    assert settings.redis_url is None and settings.redis_prefix == "keystile:"
    assert settings.redis_unavailable == "deny"


def test_redis_settings_from_toml_and_env(tmp_path: Path) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text('[redis]\nurl = "redis://10.0.0.5:6379/2"\nprefix = "ks1:"\n'
                    'unavailable = "local"\n')  # fmt: skip
    settings = config.load({"KEYSTILE_CONFIG": str(toml)})
    assert (settings.redis_url, settings.redis_prefix) == ("redis://10.0.0.5:6379/2", "ks1:")
    assert settings.redis_unavailable == "local"
    env = {"KEYSTILE_CONFIG": str(toml), "KEYSTILE_REDIS_UNAVAILABLE": "deny"}
    assert config.load(env).redis_unavailable == "deny"


def test_a_redis_password_is_never_echoed_or_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        config.load({"KEYSTILE_REDIS_URL": "http://:pw-in-a-bad-url@cache:6379",
                     "KEYSTILE_REDIS_UNAVAILABLE": "maybe"})  # fmt: skip
    message = str(caught.value)
    assert "KEYSTILE_REDIS_URL=(secret): use redis://" in message
    assert "KEYSTILE_REDIS_UNAVAILABLE='maybe': use 'deny' or 'local'" in message
    assert "pw-in-a-bad-url" not in message
    settings = config.load({"KEYSTILE_REDIS_URL": "redis://app:pw-good@cache:6379/0"})
    shown = dict((name, value) for name, value, _ in config.describe(settings))
    assert shown["KEYSTILE_REDIS_URL"] == "redis://app:***@cache:6379/0"
    assert "pw-good" not in str(config.describe(settings)) + repr(settings)


def test_each_default_is_declared_once_in_the_settings_table() -> None:
    """The Settings dataclass carries no defaults of its own (they disagreed with the
    table once: trusted_proxies, credential_headers, credential_params, db)."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(config.Settings)}
    assert set(fields) == {s.name for s in config.SETTINGS} | {"routes"}
    with_defaults = [name for name, f in fields.items()
                     if f.default is not dataclasses.MISSING
                     or f.default_factory is not dataclasses.MISSING]  # fmt: skip
    assert with_defaults == ["routes"]


@pytest.mark.parametrize(("name", "value"), [
    ("KEYSTILE_WORKERS", "٢"), ("KEYSTILE_WORKERS", "²"), ("KEYSTILE_INVALID_KEY_LIMIT", "١٢"),
    ("KEYSTILE_LISTEN", "127.0.0.1:\uff18\uff17\uff10\uff10"),
    ("KEYSTILE_TOKEN_ESTIMATE", "\uff15"),
    ("KEYSTILE_OIDC_EMAIL_DOMAINS", "\u212aexample.com"),
])  # fmt: skip
def test_other_scripts_digits_and_look_alikes_are_refused_naming_the_setting(
    name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load({name: value})
    assert name in str(caught.value)


@pytest.mark.parametrize(("toml", "hint"), [
    ('[[route]]\nname = "x"\npath = "/x"\n', "did you mean 'routes'?"),
    ('[server]\nlisten = "127.0.0.1:1"\nworker = 2\n', "did you mean 'server.workers'?"),
    ('[server]\ndb = "/tmp/k.db"\n', "did you mean 'store.db'?"),
    ('[sesions]\nidle_timeout = "1h"\n', "did you mean 'sessions'?"),
])  # fmt: skip
def test_an_unknown_setting_gets_the_nearest_known_name(
    tmp_path: Path, toml: str, hint: str
) -> None:
    path = tmp_path / "k.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        config.load({"KEYSTILE_CONFIG": str(path)})
    assert "unknown setting" in str(caught.value)
    assert hint in str(caught.value)
