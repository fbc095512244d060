"""Client of the template service (CONTRACT section 5): httpx, a circuit breaker, a short cache
and a last-known-good copy served while the service is down."""
