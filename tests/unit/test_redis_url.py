"""REDIS_URL names one Redis or a Redis Cluster (COINFLOW_REDIS_TYPE); Feast's connection string and redis_type
follow from it, and a URL that does not fit the type is refused at start-up with a clear error."""

import pytest
from pydantic import ValidationError

from coinflow.feature_store import feast_redis_connection, repo_config
from coinflow.redis_store import RedisAddress, RedisUrlError, parse_redis_url
from coinflow.settings import Settings


def test_one_server_with_its_database_credentials_and_tls():
    assert parse_redis_url("redis://127.0.0.1:6379/0") == RedisAddress((("127.0.0.1", 6379),))
    assert parse_redis_url("rediss://app:p%40ss@cache:6380/3") == RedisAddress(
        (("cache", 6380),), db=3, username="app", password="p@ss", ssl=True
    )
    assert parse_redis_url("redis://") == RedisAddress((("127.0.0.1", 6379),))
    assert parse_redis_url("redis://cache") == RedisAddress((("cache", 6379),))


def test_a_cluster_by_several_seed_nodes_or_one():
    cluster = parse_redis_url("redis://:secret@10.0.0.1:7000, 10.0.0.2:7001,10.0.0.3:7002", "redis_cluster")
    assert cluster == RedisAddress(
        (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 7002)), password="secret", cluster=True
    )
    assert parse_redis_url("redis://10.0.0.1:7000/0", "redis_cluster").nodes == (("10.0.0.1", 7000),)


def test_feast_connection_strings_of_a_server_and_of_a_cluster():
    assert feast_redis_connection("redis://127.0.0.1:6379/0") == "127.0.0.1:6379,db=0"
    assert feast_redis_connection("rediss://u:pw@h:1/2") == "h:1,db=2,username=u,password=pw,ssl=true"
    assert feast_redis_connection("redis://:pw@a:7000,b:7001", "redis_cluster") == "a:7000,b:7001,password=pw"


@pytest.mark.parametrize(
    ("url", "redis_type", "problem"),
    [
        ("redis://a:7000,b:7001", "redis", "set COINFLOW_REDIS_TYPE=redis_cluster"),
        ("redis://a:7000,b:7001/2", "redis_cluster", "only database 0"),
        ("redis://a:7000,,b:7001", "redis_cluster", "empty node"),
        ("redis://a:70x0", "redis", "no valid port"),
        ("redis://a:70000", "redis", "no valid port"),
        ("redis://a:7000/db", "redis", "is not a number"),
        ("redis://a:7000/0?timeout=1", "redis", "query options"),
        ("http://a:7000", "redis", "is not a Redis URL"),
        ("a:7000,b:7001", "redis_cluster", "is not a Redis URL"),
    ],
)
def test_a_url_that_does_not_fit_is_refused_naming_the_syntax(url, redis_type, problem):
    with pytest.raises(RedisUrlError, match=problem) as refused:
        parse_redis_url(url, redis_type)
    assert "redis://" in str(refused.value)


def test_a_password_is_not_in_the_error():
    with pytest.raises(RedisUrlError) as refused:
        parse_redis_url("redis://:hunter2@a:1,b:2")
    assert "hunter2" not in str(refused.value)


def test_settings_refuse_a_url_that_does_not_fit_their_type():
    with pytest.raises(ValidationError, match="COINFLOW_REDIS_TYPE=redis_cluster"):
        Settings(_env_file=None, redis_url="redis://a:7000,b:7001")


def test_the_feast_config_of_a_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("COINFLOW_REDIS_TYPE", "redis_cluster")
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.1:7000,10.0.0.2:7001")
    settings = Settings(_env_file=None, feast_registry_path=tmp_path / "r.db")
    config = repo_config(settings)
    assert config.online_store.redis_type == "redis_cluster"
    assert config.online_store.connection_string == "10.0.0.1:7000,10.0.0.2:7001"
    assert repo_config(settings.override(redis_type="redis", redis_url="redis://h:1/3")).online_store.redis_type == (
        "redis"
    )
