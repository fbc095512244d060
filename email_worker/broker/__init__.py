"""The RabbitMQ side: the consumer and its acks, the conversion of a pika delivery into the neutral
one the handler reads, settling a decision (retry copy, dead letter, ack, pause), the confirmed
publisher, the topology with its survey, probe, report and start-up, and the retry copies the
ledger keeps. The only package that imports pika."""
