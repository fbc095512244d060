"""``email-worker dlq list|show|replay|export|purge``: reading, finding, replaying, exporting and
purging the records of the dead-letter queue for SREs."""
