"""The object-storage tests' S3 server (moto_server, started once per session), shared here."""

from tests.storage.conftest import bucket, s3_server  # noqa: F401 - fixtures re-exported
