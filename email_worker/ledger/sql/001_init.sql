-- 001_init: the idempotency ledger, its audit trail, the callback outbox and worker secrets.
-- Applied once by `email-worker migrate` inside one transaction under an advisory lock.
-- All timestamps are timestamptz and written from the database clock (now()).

CREATE TABLE email_requests (
    request_id        text PRIMARY KEY,
    -- sha256 of the canonical request; '' when the payload was never accepted (reject()).
    payload_hash      text NOT NULL,
    status            text NOT NULL
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'unknown')),
    lease_owner       text,
    lease_expires_at  timestamptz,
    -- the status the latest claim took the row from (NULL when the claim created it).
    claimed_from      text,
    attempts          integer NOT NULL DEFAULT 0,
    notification_id   text NOT NULL,
    correlation_id    text NOT NULL,
    template_code     text,
    template_version  text,
    batch_id          text,
    recipient         text,
    message_id        text,
    subject           text,
    text_body         text,
    html_body         text,
    smtp_reply        text,
    failure_reason    text,
    failure_detail    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    first_attempt_at  timestamptz,
    sent_at           timestamptz
);

CREATE INDEX email_requests_status_idx ON email_requests (status, updated_at);
CREATE INDEX email_requests_batch_idx ON email_requests (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX email_requests_lease_idx ON email_requests (lease_expires_at)
    WHERE status = 'sending';

-- The audit trail: one row per thing that happened to a request. Append-only.
CREATE TABLE email_events (
    id          bigserial PRIMARY KEY,
    request_id  text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    event       text NOT NULL,
    status      text,
    attempt     integer,
    reason      text,
    detail      text
);

CREATE INDEX email_events_request_idx ON email_events (request_id, id);

CREATE FUNCTION email_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'email_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

-- UPDATE and TRUNCATE are refused; DELETE stays allowed for retention pruning.
CREATE TRIGGER email_events_no_update BEFORE UPDATE ON email_events
    FOR EACH ROW EXECUTE FUNCTION email_events_append_only();
CREATE TRIGGER email_events_no_truncate BEFORE TRUNCATE ON email_events
    FOR EACH STATEMENT EXECUTE FUNCTION email_events_append_only();

-- Status callbacks, written in the same transaction as the status they report.
CREATE TABLE callback_outbox (
    id               bigserial PRIMARY KEY,
    webhook_id       text NOT NULL UNIQUE,
    request_id       text NOT NULL,
    notification_id  text NOT NULL,
    correlation_id   text NOT NULL,
    status           text NOT NULL CHECK (status IN ('delivered', 'pending', 'failed')),
    error            text,
    event_at         timestamptz NOT NULL,
    callback_url     text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'superseded', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- set while a dispatcher holds the row (its POST may be on the wire).
    in_flight_until  timestamptz,
    -- when beat last re-drove the row, so it is not re-enqueued on every tick.
    redriven_at      timestamptz,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX callback_outbox_due_idx ON callback_outbox (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX callback_outbox_request_idx ON callback_outbox (request_id, id);

CREATE TABLE worker_secrets (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
