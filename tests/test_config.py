"""Settings: defaults, then environment, then CLI options."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard.config import DEFAULT_ENDPOINT, Settings, normalize_endpoint
from dashboard.errors import ConfigError


def test_defaults():
    settings = Settings.from_env({})
    assert settings.endpoint == DEFAULT_ENDPOINT == "https://s3.echo.stfc.ac.uk"
    assert settings.max_objects == 5000
    assert settings.credentials_path is None and settings.profile is None


def test_env_overrides_defaults():
    env = {"ECHO_S3_ENDPOINT": "http://127.0.0.1:9000", "ECHO_S3_CREDENTIALS": "~/keys.json",
           "ECHO_S3_MAX_OBJECTS": "250", "AWS_PROFILE": "beamline"}
    settings = Settings.from_env(env)
    assert settings.endpoint == "http://127.0.0.1:9000"
    assert settings.credentials_path == Path("~/keys.json").expanduser()
    assert settings.max_objects == 250
    assert settings.profile == "beamline"


def test_cli_overrides_env():
    env = {"ECHO_S3_ENDPOINT": "http://127.0.0.1:9000", "ECHO_S3_MAX_OBJECTS": "250"}
    settings = Settings.from_env(env, endpoint="https://other.example.org/", max_objects=10,
                                 credentials_path=None)
    assert settings.endpoint == "https://other.example.org"
    assert settings.max_objects == 10


@pytest.mark.parametrize("value", ["0", "-3", "many", "1.5"])
def test_bad_object_limit_is_a_clear_error(value):
    with pytest.raises(ConfigError, match="ECHO_S3_MAX_OBJECTS"):
        Settings.from_env({"ECHO_S3_MAX_OBJECTS": value})


@pytest.mark.parametrize("url", ["s3.echo.stfc.ac.uk", "ftp://x", "http://", ""])
def test_bad_endpoint_is_a_clear_error(url):
    with pytest.raises(ConfigError, match="Endpoint must be"):
        normalize_endpoint(url)
