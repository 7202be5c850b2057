"""The client settings that bound the embedded broker's fetch cost, and the warning before they run out: no services."""

from __future__ import annotations

import math

from coinflow.embedded_broker import EMBEDDED_FETCH_WAIT_MS, EMBEDDED_SOURCE_LINGER_MS, history_warning
from coinflow.services import Broker
from coinflow.settings import Settings
from coinflow.streaming import new_application, outage_config, source_producer_config

EMBEDDED = Broker("127.0.0.1:19092", "abc", embedded=True)
EXTERNAL = Broker("kafka:9092", "external", embedded=False)


def test_sources_producers_batch_longer_only_on_the_embedded_broker_and_the_applications_own_keep_the_default():
    settings = Settings(_env_file=None)
    assert source_producer_config(settings, EMBEDDED, None)["linger.ms"] == EMBEDDED_SOURCE_LINGER_MS
    assert "linger.ms" not in source_producer_config(settings, EXTERNAL, None)
    assert "linger.ms" not in outage_config(settings, EMBEDDED, None)


def test_quix_gives_the_sources_their_producer_settings_and_the_application_its_own(tmp_path):
    settings = Settings(_env_file=None, run_dir=tmp_path)
    app = new_application(settings, EMBEDDED, producer_extra_config={"client.id": "probe"})
    own = app._producer._producer._producer_config  # the producer Quix built for the application in __init__
    source = app._get_internal_producer(transactional=False)._producer._producer_config  # as `add_source` asks for it
    assert "linger.ms" not in own and own["client.id"] == "probe"
    assert source["linger.ms"] == EMBEDDED_SOURCE_LINGER_MS and source["client.id"] == "probe"
    assert source["message.timeout.ms"] == own["message.timeout.ms"] == 0
    assert "batch.num.messages" not in own  # no changelogs on the embedded broker by default


def test_with_changelogs_on_the_embedded_broker_the_application_writes_batches_of_one_and_its_sources_do_not(
    tmp_path,
):
    settings = Settings(_env_file=None, run_dir=tmp_path)
    app = new_application(settings, EMBEDDED, changelogs=True)
    assert app.config.use_changelog_topics
    assert app._producer._producer._producer_config["batch.num.messages"] == 1  # exact ListOffsets answers
    assert "batch.num.messages" not in app._get_internal_producer(transactional=False)._producer._producer_config
    external = new_application(settings, EXTERNAL, changelogs=True)
    assert "batch.num.messages" not in external._producer._producer._producer_config
    assert not new_application(settings, EMBEDDED).config.use_changelog_topics
    assert new_application(settings, EXTERNAL).config.use_changelog_topics


def test_consumers_of_the_embedded_broker_wait_long_enough_for_its_listing_and_others_keep_librdkafkas_default(
    tmp_path,
):
    settings = Settings(_env_file=None, run_dir=tmp_path)
    embedded = new_application(settings, EMBEDDED).config.consumer_extra_config
    external = new_application(settings, EXTERNAL).config.consumer_extra_config
    assert embedded["fetch.wait.max.ms"] == EMBEDDED_FETCH_WAIT_MS
    assert "fetch.wait.max.ms" not in external
    assert "session.timeout.ms" not in external


def test_a_fetch_under_half_the_wait_is_quiet_and_a_slower_or_missing_one_is_named_with_the_way_out():
    assert history_warning("trades", 0, None) is None  # an empty partition
    assert history_warning("trades", 0, EMBEDDED_FETCH_WAIT_MS / 2000 * 0.9) is None
    slow = history_warning("trades", 3, EMBEDDED_FETCH_WAIT_MS / 1000)
    assert slow is not None
    assert "trades[3]" in slow and f"{EMBEDDED_FETCH_WAIT_MS} ms" in slow and "KAFKA_BROKER_ADDRESS" in slow
    stalled = history_warning("trades", 0, math.inf)
    assert stalled is not None and "no record" in stalled
