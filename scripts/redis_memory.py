"""Bound the Redis that REDIS_URL names (`make up` runs this before the processes start):
`maxmemory` REDIS_MAXMEMORY (default 512mb) with `maxmemory-policy volatile-lru`.

volatile-lru evicts only keys that carry a TTL. Every response-cache key does (app/core/caching.py); the
Celery broker's queues and the revocation set do not, so a full cache never costs a task or a
revocation (docs/DEPLOY.md, "Redis"). A server that refuses CONFIG (a managed Redis) is left as it is,
with a warning: set the two values in its own configuration.
"""

import os
import sys

import redis


def main():
    url = os.environ.get("REDIS_URL")
    if not url:
        sys.exit("redis_memory: REDIS_URL is not set")
    maxmemory = os.environ.get("REDIS_MAXMEMORY", "512mb")
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.config_set("maxmemory", maxmemory)
        client.config_set("maxmemory-policy", "volatile-lru")
    except redis.RedisError as exc:
        print(f"redis_memory: could not configure {url} ({exc}); set maxmemory {maxmemory} and "
              "maxmemory-policy volatile-lru in its configuration", file=sys.stderr)  # fmt: skip
        return
    got = client.config_get("maxmemory*")
    print(f"redis: maxmemory {got['maxmemory']} bytes, policy {got['maxmemory-policy']}")


if __name__ == "__main__":
    main()
