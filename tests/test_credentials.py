"""Credentials: JSON key file, environment variables, AWS profiles; never leaking the keys."""

from __future__ import annotations

import json
import logging
import os
import pickle

import pytest
from conftest import ACCESS_KEY, SECRET_KEY

from dashboard.errors import EchoError
from dashboard.storage.credentials import (
    Credentials,
    CredentialsError,
    from_json_file,
    from_json_text,
    load_credentials,
    mask,
)
from dashboard.storage.s3 import S3

GOOD = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY}


def write_keys(path, content, mode=0o600):
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    path.chmod(mode)
    return path


def assert_no_secret(text: str) -> None:
    assert SECRET_KEY not in text
    assert ACCESS_KEY not in text


# -- JSON key file -----------------------------------------------------------------------


def test_json_file_ok(tmp_path, caplog):
    path = write_keys(tmp_path / "keys.json", GOOD)
    with caplog.at_level(logging.WARNING):
        creds = from_json_file(path)
    assert (creds.access_key, creds.secret_key) == (ACCESS_KEY, SECRET_KEY)
    assert creds.endpoint is None and creds.session_token is None and creds.profile is None
    assert creds.source == str(path)
    assert caplog.records == []  # mode 600: no warning


def test_json_file_strips_blanks_and_accepts_a_session_token(tmp_path):
    path = write_keys(tmp_path / "k.json", {"access_key": f" {ACCESS_KEY}\n",
                                            "secret_key": f"\t{SECRET_KEY} ",
                                            "session_token": "tok"})
    creds = from_json_file(path)
    assert (creds.access_key, creds.secret_key, creds.session_token) == (ACCESS_KEY, SECRET_KEY, "tok")


def test_optional_endpoint_is_honoured(tmp_path, moto_server):
    path = write_keys(tmp_path / "k.json", {**GOOD, "endpoint": moto_server.endpoint + "/"})
    creds = from_json_file(path)
    assert creds.endpoint == moto_server.endpoint
    s3 = S3(credentials=creds)  # no endpoint given: the file's is used ...
    assert s3.endpoint == moto_server.endpoint
    assert isinstance(s3.list_buckets(), list)  # ... and really reached
    assert S3("https://other.example.org", creds).endpoint == "https://other.example.org"


def test_missing_file(tmp_path):
    with pytest.raises(CredentialsError) as info:
        from_json_file(tmp_path / "nope.json")
    assert str(info.value) == f"Credentials file not found: {tmp_path / 'nope.json'}"
    assert isinstance(info.value, EchoError)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(CredentialsError, match="is a folder, not a file"):
        from_json_file(tmp_path)


def test_not_utf8(tmp_path):
    path = tmp_path / "k.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    path.chmod(0o600)
    with pytest.raises(CredentialsError, match="not a UTF-8 text file"):
        from_json_file(path)


@pytest.mark.parametrize(
    "text",
    [
        f'{{"access_key": "{ACCESS_KEY}", "secret_key": "{SECRET_KEY}"',  # unclosed
        f"access_key={ACCESS_KEY}\nsecret_key={SECRET_KEY}\n",  # INI-ish
        f"{{'access_key': '{ACCESS_KEY}', 'secret_key': '{SECRET_KEY}'}}",  # Python quotes
        "",
    ],
)
def test_not_json_does_not_quote_the_content(tmp_path, text):
    path = write_keys(tmp_path / "k.json", text)
    with pytest.raises(CredentialsError) as info:
        from_json_file(path)
    message = str(info.value)
    assert message.startswith(f"Credentials in {path} are not valid JSON; expected ")
    assert_no_secret(message)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("data", [[ACCESS_KEY, SECRET_KEY], SECRET_KEY, 42, None])
def test_not_an_object(data):
    with pytest.raises(CredentialsError) as info:
        from_json_text(json.dumps(data), origin="test.json")
    assert str(info.value) == (
        "Credentials in test.json must be a JSON object with access_key and secret_key.")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"secret_key": SECRET_KEY}, "Credentials in f.json are missing 'access_key'."),
        ({"access_key": ACCESS_KEY}, "Credentials in f.json are missing 'secret_key'."),
        ({"access_key": ACCESS_KEY, "secret_key": None},
         "Credentials in f.json are missing 'secret_key'."),
        ({"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY},
         "Credentials in f.json are missing 'access_key'."),
        ({}, "Credentials in f.json are missing 'access_key'."),
    ],
)
def test_keys_missing(data, message):
    with pytest.raises(CredentialsError) as info:
        from_json_text(json.dumps(data), origin="f.json")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"access_key": "", "secret_key": SECRET_KEY}, "Credentials in f.json: 'access_key' is empty."),
        ({"access_key": ACCESS_KEY, "secret_key": "   "}, "Credentials in f.json: 'secret_key' is empty."),
        ({**GOOD, "endpoint": ""}, "Credentials in f.json: 'endpoint' must be a non-empty string."),
    ],
)
def test_empty_values(data, message):
    with pytest.raises(CredentialsError) as info:
        from_json_text(json.dumps(data), origin="f.json")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"access_key": 12345, "secret_key": SECRET_KEY},
         "Credentials in f.json: 'access_key' must be a string, not int."),
        ({"access_key": ACCESS_KEY, "secret_key": [SECRET_KEY]},
         "Credentials in f.json: 'secret_key' must be a string, not list."),
        ({"access_key": ACCESS_KEY, "secret_key": {"v": SECRET_KEY}},
         "Credentials in f.json: 'secret_key' must be a string, not dict."),
        ({"access_key": True, "secret_key": SECRET_KEY},
         "Credentials in f.json: 'access_key' must be a string, not bool."),
        ({**GOOD, "endpoint": 8080}, "Credentials in f.json: 'endpoint' must be a non-empty string."),
        ({**GOOD, "session_token": 1}, "Credentials in f.json: 'session_token' must be a string."),
    ],
)
def test_wrong_types_never_echo_the_values(data, message):
    with pytest.raises(CredentialsError) as info:
        from_json_text(json.dumps(data), origin="f.json")
    assert str(info.value) == message
    assert_no_secret(str(info.value))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_world_or_group_readable_file_warns(tmp_path, caplog, mode):
    path = write_keys(tmp_path / "keys.json", GOOD, mode=mode)
    with caplog.at_level(logging.WARNING, logger="dashboard.storage.credentials"):
        creds = from_json_file(path)
    assert creds.secret_key == SECRET_KEY  # still loaded
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage() == (
        f"Credentials file {path} is readable by other users; restrict it with: chmod 600 {path}")
    assert_no_secret(caplog.text)


# -- lookup order: file, environment, profile, default chain -----------------------------


def test_explicit_path_beats_env_file_and_env_keys(tmp_path):
    explicit = write_keys(tmp_path / "a.json", GOOD)
    other = write_keys(tmp_path / "b.json", {"access_key": "AKIAOTHER000", "secret_key": "x" * 20})
    env = {"ECHO_S3_CREDENTIALS": str(other), "AWS_ACCESS_KEY_ID": "AKIAENV0000",
           "AWS_SECRET_ACCESS_KEY": "env-secret"}
    assert load_credentials(explicit, env=env).access_key == ACCESS_KEY
    assert load_credentials(env=env).access_key == "AKIAOTHER000"


def test_echo_s3_credentials_from_the_real_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHO_S3_CREDENTIALS", str(write_keys(tmp_path / "k.json", GOOD)))
    creds = load_credentials()
    assert (creds.access_key, creds.source) == (ACCESS_KEY, str(tmp_path / "k.json"))


def test_env_file_missing_is_an_error(tmp_path):
    with pytest.raises(CredentialsError, match="Credentials file not found"):
        load_credentials(env={"ECHO_S3_CREDENTIALS": str(tmp_path / "gone.json")})


def test_env_vars_both(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-tok")
    creds = load_credentials()
    assert (creds.access_key, creds.secret_key, creds.session_token, creds.source) == (
        ACCESS_KEY, SECRET_KEY, "session-tok", "environment")


@pytest.mark.parametrize(
    ("env", "missing"),
    [({"AWS_ACCESS_KEY_ID": ACCESS_KEY}, "AWS_SECRET_ACCESS_KEY"),
     ({"AWS_SECRET_ACCESS_KEY": SECRET_KEY}, "AWS_ACCESS_KEY_ID"),
     ({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": ""}, "AWS_SECRET_ACCESS_KEY")],
)
def test_env_vars_one_missing(env, missing):
    with pytest.raises(CredentialsError) as info:
        load_credentials(env=env)
    assert str(info.value) == f"{missing} is not set (both AWS key variables are needed)."
    assert_no_secret(str(info.value))


@pytest.fixture
def aws_profile_files(tmp_path, monkeypatch):
    """A shared-credentials file with profile 'science' and a config file with 'beamline'."""
    shared = tmp_path / "credentials"
    shared.write_text(f"[science]\naws_access_key_id = {ACCESS_KEY}\n"
                      f"aws_secret_access_key = {SECRET_KEY}\n")
    config = tmp_path / "config"
    config.write_text("[profile beamline]\naws_access_key_id = AKIABEAMLINE0001\n"
                      "aws_secret_access_key = beamline-secret-0001\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))


def test_profile_from_the_shared_credentials_file(aws_profile_files, moto_server):
    creds = load_credentials(profile="science")
    assert (creds.profile, creds.access_key, creds.source) == ("science", None, "AWS profile 'science'")
    keys = creds.boto3_session().get_credentials()
    assert (keys.access_key, keys.secret_key) == (ACCESS_KEY, SECRET_KEY)
    s3 = S3(moto_server.endpoint, creds)
    assert isinstance(s3.list_buckets(), list)  # the profile's keys sign real requests
    assert_no_secret(repr(creds) + repr(s3))


def test_profile_from_aws_profile_env_and_config_file(aws_profile_files, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "beamline")
    creds = load_credentials()
    assert creds.profile == "beamline"
    keys = creds.boto3_session().get_credentials()
    assert (keys.access_key, keys.secret_key) == ("AKIABEAMLINE0001", "beamline-secret-0001")


def test_env_keys_beat_the_profile(aws_profile_files):
    env = {"AWS_ACCESS_KEY_ID": "AKIAENV0000", "AWS_SECRET_ACCESS_KEY": "s", "AWS_PROFILE": "science"}
    assert load_credentials(env=env).access_key == "AKIAENV0000"


def test_unknown_profile_is_a_clear_error(aws_profile_files):
    creds = load_credentials(profile="nobody")
    with pytest.raises(CredentialsError) as info:
        creds.boto3_session()
    assert str(info.value).startswith("AWS profile 'nobody' not found")


def test_nothing_configured_falls_back_to_the_default_chain():
    creds = load_credentials(env={})
    assert creds.source == "default AWS chain"
    assert creds.secrets() == ()
    assert repr(creds) == "Credentials(source='default AWS chain')"


def test_anonymous_credentials_say_so():
    assert "anonymous=True" in repr(Credentials(anonymous=True))


# -- never leaking ------------------------------------------------------------------------


def test_repr_and_str_never_show_the_keys(credentials):
    creds = Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY, session_token="tok-123456789",
                        endpoint="https://s3.example.org", source="test")
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds]),
                 repr({"c": creds}), repr(S3("https://s3.example.org", creds))):
        assert_no_secret(text)
        assert "tok-123456789" not in text
    assert repr(creds) == (
        "Credentials(source='test', access_key='AKIA…', endpoint='https://s3.example.org')")


def test_mask_and_scrub():
    assert mask(ACCESS_KEY) == "AKIA…"
    assert mask("short") == "…" and mask(None) == "…" and mask("") == "…"
    creds = Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    assert creds.scrub(f"id {ACCESS_KEY} and {SECRET_KEY}!") == "id *** and ***!"
    assert creds.secrets() == (ACCESS_KEY, SECRET_KEY)


def test_pickling_keeps_the_keys_for_workers_but_not_in_the_repr():
    creds = Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint="http://x", source="t")
    clone = pickle.loads(pickle.dumps(creds))
    assert (clone.access_key, clone.secret_key, clone.endpoint, clone.source) == (
        ACCESS_KEY, SECRET_KEY, "http://x", "t")
    assert_no_secret(repr(clone))


def test_keys_never_reach_os_environ(tmp_path, moto_server):
    creds = load_credentials(write_keys(tmp_path / "k.json", GOOD))
    s3 = S3(moto_server.endpoint, creds)
    s3.list_buckets()
    for name, value in os.environ.items():
        assert SECRET_KEY not in value and ACCESS_KEY not in value, name
    assert "AWS_ACCESS_KEY_ID" not in os.environ and "AWS_SECRET_ACCESS_KEY" not in os.environ
