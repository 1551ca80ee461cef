"""Photos in S3-compatible object storage: ``s3://bucket/key`` sources and stores.

    location   parse and confine ``s3://`` URLs (pure; no boto3): buckets and keys are
               checked, roots are compared segment by segment, never as string prefixes
    client     the one boto3 client a process uses: bounded timeouts and retries, the
               standard AWS credentials and environment (``AWS_ENDPOINT_URL`` for an
               S3-compatible server); which errors pass and which do not
    objects    reading one object within the byte limit, and acting on exactly the
               version that was read (conditional delete, conditional put)

Built on it, in the layers that use them: the quarantine and blocked stores in a bucket
(:mod:`photosentry.worker.bucket_store`) and a bucket prefix walked page by page for
rescans (:class:`photosentry.rescan.source.S3PrefixSource`). This package depends only
on :mod:`photosentry.errors`, :mod:`photosentry.defaults` and boto3.

boto3 is imported only when something S3 is configured (``pip install 'photosentry[s3]'``);
producers that enqueue ``s3://`` jobs need only :mod:`.location`.
"""

from __future__ import annotations

from .location import S3Location, S3Prefix, is_s3_url

__all__ = ["S3Location", "S3Prefix", "is_s3_url"]
