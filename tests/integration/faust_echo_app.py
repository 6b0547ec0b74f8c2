"""A tiny faust app for the integration tests: copies every value of a topic into a Redis list.

Run as a real worker process: `python faust_echo_app.py worker`. Configured by environment:
ECHO_BROKER, ECHO_APP_ID (consumer group), ECHO_TOPIC, ECHO_REDIS_URL, ECHO_REDIS_KEY, ECHO_DATADIR.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import faust
import redis.asyncio as aioredis

app = faust.App(
    os.environ["ECHO_APP_ID"],
    broker=f"kafka://{os.environ['ECHO_BROKER']}",
    store="memory://",
    datadir=os.environ["ECHO_DATADIR"],
    web_enabled=False,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    broker_commit_every=1,
    broker_commit_interval=0.2,
)
source = app.topic(os.environ["ECHO_TOPIC"], value_serializer="raw", internal=False)
sink = aioredis.Redis.from_url(os.environ["ECHO_REDIS_URL"])


@app.agent(source)
async def echo(values: AsyncIterator[bytes]) -> None:
    async for value in values:
        await sink.rpush(os.environ["ECHO_REDIS_KEY"], value)


if __name__ == "__main__":
    app.main()
