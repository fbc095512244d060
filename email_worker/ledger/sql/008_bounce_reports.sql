-- 008_bounce_reports: bounce and complaint reports tied back to the requests we sent
-- (CONTRACT section 15), and the replay guard of signed webhooks.
--
-- A report names our Message-ID (recorded on send in email_requests.message_id) or the id a
-- provider gave the message. provider_message_id is the hook for HTTP API relays: the helper
-- that sends through them records the provider's id there; until then it stays NULL.
-- Building the two indexes reads the table once, inside the migration's transaction (writes
-- to email_requests wait for it): run `email-worker migrate` when traffic is low on a large
-- ledger.

ALTER TABLE email_requests ADD COLUMN provider_message_id text;

CREATE INDEX email_requests_message_id_idx ON email_requests (message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX email_requests_provider_message_id_idx ON email_requests (provider_message_id)
    WHERE provider_message_id IS NOT NULL;

-- Tokens and signatures of signed webhooks already acted on, kept until their timestamp could
-- no longer pass the freshness check (expires_at): a replay inside that window is refused, and
-- one outside it is refused as stale. The key is a SHA-256 of the token, never the token.
CREATE TABLE webhook_replays (
    provider    text        NOT NULL,
    key         bytea       NOT NULL CHECK (length(key) = 32),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (provider, key)
);
CREATE INDEX webhook_replays_expiry_idx ON webhook_replays (expires_at);

-- Tie one report to its request and record it, under the row's lock, in one transaction.
-- p_message_ids are our Message-IDs as the report quotes them, p_provider_ids the provider's
-- ids (either may be empty). A request that was sent ('sent') or may have been ('unknown')
-- moves to p_status ('bounced' or 'complained') with an event and, when the request ever had
-- a callback URL, a 'failed' callback carrying p_error.
--
-- That callback comes after 'delivered' on purpose (CONTRACT section 15): a bounce or a
-- complaint is news about a delivered message, not a step back. ew_enqueue_callback refuses
-- every row once 'delivered' exists, so this function inserts its row itself, the same way:
-- it supersedes older rows still waiting (unless one is in flight, then the dispatcher holds
-- this one until that one lands), so the gateway sees 'delivered' then 'failed', or only the
-- 'failed' when the report overtook an unsent 'delivered'. Nothing moves the request again
-- afterwards (a claim never takes 'bounced' or 'complained'), so this row is the last.
--
-- Returns one row (request_id, recipient, changed, outbox_id) when a request matches, none
-- otherwise. A report of the status the request already has changes nothing and records no
-- second event (providers retry; SES may report one bounce twice).
CREATE FUNCTION ew_record_report(
    p_message_ids text[], p_provider_ids text[], p_status text, p_detail text, p_error text,
    p_webhook_id text, p_grace float8
) RETURNS TABLE (request_id text, recipient text, changed boolean, outbox_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
    url text;
BEGIN
    IF p_status NOT IN ('bounced', 'complained') THEN
        RAISE EXCEPTION 'ew_record_report: status % is not a report status', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM email_requests e
    WHERE e.message_id = ANY(p_message_ids) ORDER BY e.created_at DESC LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN
        SELECT * INTO r FROM email_requests e
        WHERE e.provider_message_id = ANY(p_provider_ids)
        ORDER BY e.created_at DESC LIMIT 1 FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    request_id := r.request_id;
    recipient := r.recipient;
    changed := r.status IN ('sent', 'unknown');
    IF NOT changed THEN
        IF r.status <> p_status THEN  -- e.g. a complaint about a bounced request: audit only
            INSERT INTO email_events (request_id, event, status, reason, detail)
            VALUES (r.request_id, p_status, NULL, p_status, p_detail);
        END IF;
        RETURN NEXT;
        RETURN;
    END IF;
    -- The lease, the retry mark and copy go too: an 'unknown' send's owner may still try to
    -- record an outcome (its fence then updates nothing), and beat must not re-drive a copy.
    UPDATE email_requests e SET
        status = p_status, failure_reason = p_status, failure_detail = p_detail,
        lease_owner = NULL, lease_expires_at = NULL, retry_due_at = NULL, retry_body = NULL,
        retry_properties = NULL, updated_at = now()
    WHERE e.request_id = r.request_id;
    INSERT INTO email_events (request_id, event, status, reason, detail)
    VALUES (r.request_id, p_status, p_status, p_status, p_detail);
    SELECT o.callback_url INTO url FROM callback_outbox o
    WHERE o.request_id = r.request_id ORDER BY o.id DESC LIMIT 1;
    IF url IS NOT NULL THEN
        INSERT INTO callback_outbox (webhook_id, request_id, notification_id, correlation_id,
                                     status, error, event_at, callback_url, next_attempt_at)
        VALUES (p_webhook_id, r.request_id, r.notification_id, r.correlation_id, 'failed',
                p_error, now(), url, now() + make_interval(secs => p_grace))
        RETURNING id INTO outbox_id;
        UPDATE callback_outbox o SET state = 'superseded'
        WHERE o.request_id = r.request_id AND o.id < outbox_id AND o.state = 'pending'
          AND (o.in_flight_until IS NULL OR o.in_flight_until <= now());
    END IF;
    RETURN NEXT;
END
$$;
