"""The Postgres side: the connection pool, the ledger of requests (claim, finish, reject) with
its statements and group commit, the migrations and their ``sql/`` files, and the upkeep run by
beat. The only package that imports psycopg2 (with the callback outbox's SQL, which lives beside
the callbacks)."""
