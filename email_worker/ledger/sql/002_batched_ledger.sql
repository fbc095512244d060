-- 002_batched_ledger: claims and outcomes of many requests in one call (group commit).
-- One call is one statement: atomic, one round trip and one commit for the whole batch. Each
-- request gets its own single-row statements inside, so every plan is a primary-key lookup
-- whatever the table's size when the plan was made (a join against the batch was planned as a
-- sequential scan on a young table and kept that plan). A batch is a JSON array of objects
-- (one parameter: the client formats one value, not one per field); each carries "pos", which
-- the results name. The caller orders a batch by request_id, so concurrent batches lock
-- shared rows in one order. p_lock_timeout bounds the wait for a row lock another transaction
-- holds (NULL keeps the session's setting): a shared batch gives up and its requests are
-- retried one by one, so one blocked request holds up no other.

-- A callback row for a request, unless it would move the gateway's view backwards (nothing
-- after 'delivered', no 'pending' after 'failed'). Older rows still waiting are superseded; a
-- row in flight is left alone: the dispatcher will not send the newer row until it lands.
-- Returns the new row's id, or NULL when there is no URL or it would move backwards.
CREATE FUNCTION ew_enqueue_callback(
    p_webhook_id text, p_request_id text, p_notification_id text, p_correlation_id text,
    p_status text, p_error text, p_url text, p_grace float8
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    IF p_url IS NULL OR EXISTS (
        SELECT 1 FROM callback_outbox o
        WHERE o.request_id = p_request_id
          AND (o.status = 'delivered' OR (p_status = 'pending' AND o.status = 'failed'))
    ) THEN
        RETURN NULL;
    END IF;
    INSERT INTO callback_outbox (webhook_id, request_id, notification_id, correlation_id,
                                 status, error, event_at, callback_url, next_attempt_at)
    VALUES (p_webhook_id, p_request_id, p_notification_id, p_correlation_id, p_status,
            p_error, now(), p_url, now() + make_interval(secs => p_grace))
    RETURNING id INTO new_id;
    UPDATE callback_outbox o SET state = 'superseded'
    WHERE o.request_id = p_request_id AND o.id < new_id AND o.state = 'pending'
      AND (o.in_flight_until IS NULL OR o.in_flight_until <= now());
    RETURN new_id;
END
$$;

-- Claim each request: a new one, or a known one with the same payload (or none recorded)
-- whose status is retryable or whose lease expired. A request that cannot be claimed returns
-- no row (the caller reads why). A repeated request_id in one batch is claimed once.
CREATE FUNCTION ew_claim_many(p_batch jsonb, p_lease_seconds float8, p_lock_timeout text)
RETURNS TABLE (pos integer, attempts integer, claimed_from text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q record;
BEGIN
    IF p_lock_timeout IS NOT NULL THEN  -- for this statement only
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
    END IF;
    FOR q IN
        SELECT * FROM jsonb_to_recordset(p_batch) AS x(
            pos integer, request_id text, payload_hash text, lease text, notification_id text,
            correlation_id text, template_code text, batch_id text, recipient text)
        ORDER BY x.pos
    LOOP
        INSERT INTO email_requests AS r (
            request_id, payload_hash, status, lease_owner, lease_expires_at, attempts,
            notification_id, correlation_id, template_code, batch_id, recipient,
            first_attempt_at)
        VALUES (q.request_id, q.payload_hash, 'sending', q.lease,
                now() + make_interval(secs => p_lease_seconds), 1, q.notification_id,
                q.correlation_id, q.template_code, q.batch_id, q.recipient, now())
        ON CONFLICT (request_id) DO UPDATE SET
            status = 'sending', claimed_from = r.status, payload_hash = EXCLUDED.payload_hash,
            lease_owner = EXCLUDED.lease_owner, lease_expires_at = EXCLUDED.lease_expires_at,
            attempts = r.attempts + 1, notification_id = EXCLUDED.notification_id,
            correlation_id = EXCLUDED.correlation_id, template_code = EXCLUDED.template_code,
            batch_id = EXCLUDED.batch_id,
            first_attempt_at = COALESCE(r.first_attempt_at, now()), updated_at = now()
        WHERE (r.payload_hash = EXCLUDED.payload_hash OR r.payload_hash = '')
          AND (r.status IN ('pending', 'failed', 'unknown')
               OR (r.status = 'sending' AND r.lease_expires_at < now()))
        RETURNING r.attempts, r.claimed_from
        INTO ew_claim_many.attempts, ew_claim_many.claimed_from;
        CONTINUE WHEN NOT FOUND;
        INSERT INTO email_events (request_id, event, status, attempt)
        VALUES (q.request_id,
                CASE WHEN ew_claim_many.claimed_from = 'sending' THEN 'taken_over'
                     ELSE 'claimed' END,
                'sending', ew_claim_many.attempts);
        pos := q.pos;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Record each outcome, fenced by its lease: a request whose lease was taken over is not
-- written at all (no row returned). 'unknown' is accepted because expire_leases() marks a
-- silent lease unknown but keeps its owner: that owner may still record what really happened,
-- until another worker claims the request (which replaces the token). Writes the status, the
-- rendered content, the event and the callback row; returns the callback row's id, if any.
CREATE FUNCTION ew_finish_many(p_batch jsonb, p_grace float8, p_lock_timeout text)
RETURNS TABLE (pos integer, outbox_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    q record;
BEGIN
    IF p_lock_timeout IS NOT NULL THEN  -- for this statement only
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
    END IF;
    FOR q IN
        SELECT * FROM jsonb_to_recordset(p_batch) AS x(
            pos integer, request_id text, lease text, attempt integer, status text,
            recipient text, subject text, message_id text, html_body text, text_body text,
            reply text, version text, reason text, detail text, webhook_id text,
            notification_id text, correlation_id text, cb_status text, cb_error text, url text)
        ORDER BY x.pos
    LOOP
        UPDATE email_requests r SET
            status = q.status, lease_owner = NULL, lease_expires_at = NULL,
            updated_at = now(), recipient = COALESCE(q.recipient, r.recipient),
            subject = COALESCE(q.subject, r.subject),
            message_id = COALESCE(q.message_id, r.message_id),
            html_body = COALESCE(q.html_body, r.html_body),
            text_body = COALESCE(q.text_body, r.text_body),
            smtp_reply = COALESCE(q.reply, r.smtp_reply),
            template_version = COALESCE(q.version, r.template_version),
            failure_reason = q.reason, failure_detail = q.detail,
            sent_at = CASE WHEN q.status = 'sent' THEN now() ELSE r.sent_at END
        WHERE r.request_id = q.request_id AND r.lease_owner = q.lease
          AND r.status IN ('sending', 'unknown');
        CONTINUE WHEN NOT FOUND;
        INSERT INTO email_events (request_id, event, status, attempt, reason, detail)
        VALUES (q.request_id, q.status, q.status, q.attempt, q.reason, q.detail);
        pos := q.pos;
        outbox_id := ew_enqueue_callback(
            q.webhook_id, q.request_id, q.notification_id, q.correlation_id, q.cb_status,
            q.cb_error, q.url, p_grace);
        RETURN NEXT;
    END LOOP;
END
$$;
