"""JSON Lines objects in S3-compatible storage: one object per batch, one record per line.

Options: `bucket`, `prefix` (default `jitportal/audit/`), `endpoint_url`
(for storage other than AWS), `region`, `access_key_id` and
`secret_access_key` (or `secret_access_key_file`; default boto3's own
credential chain), `timeout` (seconds, default 10).

Objects are named `<prefix><first id>-<last id>.jsonl` with ids padded to 12
digits, so listing them in name order lists the trail in order; a batch sent
again after a crash writes the same records again (perhaps in another
object): `audit verify --from` accepts the repeats.
"""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .base import Sink, SinkError, dumps


class S3Sink(Sink):
    options = (
        "bucket",
        "prefix",
        "endpoint_url",
        "region",
        "access_key_id",
        "secret_access_key",
        "secret_access_key_file",
        "timeout",
    )
    batch_size = 1000

    def __init__(self, name, config):
        super().__init__(name, config)
        self.bucket = self.require("bucket")
        self.prefix = config.get("prefix", "jitportal/audit/")
        timeout = float(config.get("timeout", 10))
        self.client_args = {
            "endpoint_url": config.get("endpoint_url") or None,
            "region_name": config.get("region") or None,
            "aws_access_key_id": config.get("access_key_id") or None,
            "aws_secret_access_key": self.secret("secret_access_key") or None,
            "config": Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 3}),
        }

    def key(self, records) -> str:
        return f"{self.prefix}{records[0]['id']:012d}-{records[-1]['id']:012d}.jsonl"

    def send(self, records):
        body = "".join(dumps(r) + "\n" for r in records).encode()
        try:
            boto3.client("s3", **self.client_args).put_object(
                Bucket=self.bucket, Key=self.key(records), Body=body, ContentType="application/x-ndjson"
            )
        except (BotoCoreError, ClientError) as exc:
            raise SinkError(f"putting s3://{self.bucket}/{self.key(records)} failed: {exc}") from None
