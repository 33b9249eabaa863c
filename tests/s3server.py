"""A real S3-compatible server on loopback for the lake's tests: moto in server mode.

The tests start it themselves (fixture ``s3_server`` in ``conftest.py``), on
127.0.0.1 and a free port; mpexport reaches it as it would MinIO or R2,
through ``AWS_ENDPOINT_URL``. Nothing here mocks the client library: requests
go over HTTP to a server that implements S3's API.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

# Distinctive, so a test can look for them anywhere they must not be.
ACCESS_KEY = "AKIAMPEXPORTTESTKEY1"
SECRET_KEY = "mpexport-test-secret-0123456789abcdef"
BUCKET = "lake"


@dataclass
class S3Server:
    """A running moto server with one bucket, and ways to look at what it holds."""

    endpoint: str
    bucket: str = BUCKET

    def env(self) -> dict[str, str]:
        """The variables a client needs to use this server (as for MinIO)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def url(self, prefix: str = "events") -> str:
        """The ``s3://`` URL of a prefix of the bucket."""
        return f"s3://{self.bucket}/{prefix}"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def objects(self, prefix: str = "events/") -> dict[str, bytes]:
        """Every object under ``prefix``: key (without the prefix) to content."""
        client = self.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=prefix):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                found[item["Key"][len(prefix):]] = body
        return found

    def download(self, target: Path, prefix: str = "events/") -> dict[str, bytes]:
        """Copy every object under ``prefix`` into the folder ``target``; return them."""
        objects = self.objects(prefix)
        for key, body in objects.items():
            path = target.joinpath(*key.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        return objects


@contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start moto on 127.0.0.1 (a free port) with an empty bucket; stop it on the way out."""
    from moto.server import ThreadedMotoServer

    # One access-log line per request on stderr would bury a failing test's output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(f"http://{host}:{port}")
        # Moto's servers in one process share their state: start from none.
        requests.post(f"{s3.endpoint}/moto-api/reset", timeout=30).raise_for_status()
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        server.stop()


def day_partitions(objects: dict[str, bytes]) -> list[str]:
    """The ``date=`` folders among the keys, in order."""
    return sorted({key.split("/")[0] for key in objects if key.startswith("date=")})


def dates(first: dt.date, last: dt.date) -> list[str]:
    """``date=YYYY-MM-DD`` for every day from ``first`` to ``last``."""
    return [f"date={(first + dt.timedelta(days=n)).isoformat()}"
            for n in range((last - first).days + 1)]
