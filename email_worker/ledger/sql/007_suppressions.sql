-- 007_suppressions: the suppression list (CONTRACT section 15).
--
-- One row per suppressed address, keyed by SHA-256 of the normalised address (computed by
-- email_worker/suppression/entries.py: lower case, Unicode domain), so the check every message
-- makes is one primary-key probe. The address is kept (normalised) for `suppression list`
-- and for people; it never reaches a log line.

CREATE TABLE suppressions (
    address_hash bytea       PRIMARY KEY CHECK (length(address_hash) = 32),
    address      text        NOT NULL CHECK (length(address) BETWEEN 3 AND 254),
    reason       text        NOT NULL
        CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'manual')),
    source       text        NOT NULL CHECK (source ~ '^[a-z][a-z0-9_.-]{0,31}$'),
    detail       text        NOT NULL DEFAULT '' CHECK (length(detail) <= 200),
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz
);

-- `suppression list` pages newest first.
CREATE INDEX suppressions_last_seen ON suppressions (last_seen DESC, address_hash);

-- The rank of a reason: a stronger one is never replaced by a weaker one.
CREATE FUNCTION ew_suppression_rank(reason text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE reason
        WHEN 'complaint' THEN 4 WHEN 'hard_bounce' THEN 3
        WHEN 'manual' THEN 2 WHEN 'unsubscribe' THEN 1 ELSE 0 END
$$;

-- Add or refresh an entry in one statement (safe under concurrent adds of one address):
-- last_seen always moves; an expired entry is replaced as if it were new; a stronger reason
-- replaces a weaker one (with its source, detail and expiry); the same reason keeps the later
-- expiry (NULL, never, wins) and takes the newest source and detail; a weaker one changes
-- nothing else.
CREATE FUNCTION ew_suppression_add(
    p_hash bytea, p_address text, p_reason text, p_source text, p_detail text,
    p_expires_at timestamptz
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO suppressions AS s
        (address_hash, address, reason, source, detail, expires_at)
    VALUES (p_hash, p_address, p_reason, p_source, p_detail, p_expires_at)
    ON CONFLICT (address_hash) DO UPDATE SET
        last_seen = now(),
        first_seen = CASE WHEN s.expires_at <= now() THEN now() ELSE s.first_seen END,
        reason = CASE
            WHEN s.expires_at <= now()
              OR ew_suppression_rank(EXCLUDED.reason) > ew_suppression_rank(s.reason)
            THEN EXCLUDED.reason ELSE s.reason END,
        source = CASE
            WHEN s.expires_at <= now()
              OR ew_suppression_rank(EXCLUDED.reason) >= ew_suppression_rank(s.reason)
            THEN EXCLUDED.source ELSE s.source END,
        detail = CASE
            WHEN s.expires_at <= now()
              OR ew_suppression_rank(EXCLUDED.reason) >= ew_suppression_rank(s.reason)
            THEN EXCLUDED.detail ELSE s.detail END,
        expires_at = CASE
            WHEN s.expires_at <= now()
              OR ew_suppression_rank(EXCLUDED.reason) > ew_suppression_rank(s.reason)
            THEN EXCLUDED.expires_at
            WHEN ew_suppression_rank(EXCLUDED.reason) = ew_suppression_rank(s.reason)
            THEN CASE WHEN s.expires_at IS NULL OR EXCLUDED.expires_at IS NULL THEN NULL
                      ELSE greatest(s.expires_at, EXCLUDED.expires_at) END
            ELSE s.expires_at END
$$;
