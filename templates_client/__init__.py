"""Clients of the services the worker reads from (CONTRACT sections 5 and 6): the template
service client with its circuit breaker, cache and last-known-good copy; the classified GET and
the field reading (envelopes, dotted paths) that the user service client shares."""
