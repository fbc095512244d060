-- 003_redeliveries_and_retry_copies: the ledger counts deliveries that died without an outcome
-- (the crash-loop guard MAX_DELIVERIES, whatever the queue type) and keeps what it needs to
-- rebuild a retry copy the broker lost (re-driven by `email-worker beat` once it is overdue by
-- RETRY_OVERDUE_SECONDS). Adding columns with constant defaults rewrites no table (PG 11+).

ALTER TABLE email_requests
    -- Claims in a row that recorded no outcome, the latest included: a claim sets 1 when the
    -- previous claim recorded one (every outcome clears lease_owner) and adds 1 when it takes
    -- over a lease that was never released (its holder died holding the message). 0 in rows
    -- no claim has touched since this migration. The worker dead-letters a request whose
    -- count exceeds MAX_DELIVERIES + 1 (more than MAX_DELIVERIES redeliveries) with reason
    -- `redelivery_limit`.
    ADD COLUMN deliveries integer NOT NULL DEFAULT 0,
    -- Set only when an outcome schedules a retry (status 'pending', or 'unknown' after an
    -- ambiguous send): when the retry copy is due back from its delay queue (database clock).
    -- Every claim clears it (the copy, or any copy, came back). Beat re-publishes a request
    -- whose mark is overdue by RETRY_OVERDUE_SECONDS and moves the mark to the time of that
    -- re-drive, so one lost copy is re-driven once per overdue period.
    ADD COLUMN retry_due_at timestamptz,
    -- The message body exactly as received, kept with retry_due_at and cleared with it; never
    -- read for anything but the re-drive. Retention pruning deletes it with its row.
    ADD COLUMN retry_body bytea,
    -- The AMQP properties and headers the re-driven copy needs (email_worker/retry_copies.py):
    -- content type and encoding, correlation and message ids, priority, timestamp, type,
    -- app id, reply-to, and the scalar headers (our attempt/deferral headers, traceparent,
    -- tracestate, ...), without the broker's own x-death family. Kept and cleared with it.
    ADD COLUMN retry_properties jsonb;

-- Beat's question "which retries are overdue?" reads this small index, never the table.
CREATE INDEX email_requests_retry_due_idx ON email_requests (retry_due_at)
    WHERE retry_due_at IS NOT NULL;

-- ew_claim_many of 002, and besides: counts the delivery and clears the retry mark and copy.
-- Returns the delivery count with each claim. 002's functions stay for workers of the previous
-- version during a rolling upgrade (they neither count nor keep copies).
CREATE FUNCTION ew_claim_batch(p_batch jsonb, p_lease_seconds float8, p_lock_timeout text)
RETURNS TABLE (pos integer, attempts integer, claimed_from text, deliveries integer)
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
            first_attempt_at, deliveries)
        VALUES (q.request_id, q.payload_hash, 'sending', q.lease,
                now() + make_interval(secs => p_lease_seconds), 1, q.notification_id,
                q.correlation_id, q.template_code, q.batch_id, q.recipient, now(), 1)
        ON CONFLICT (request_id) DO UPDATE SET
            status = 'sending', claimed_from = r.status, payload_hash = EXCLUDED.payload_hash,
            lease_owner = EXCLUDED.lease_owner, lease_expires_at = EXCLUDED.lease_expires_at,
            attempts = r.attempts + 1, notification_id = EXCLUDED.notification_id,
            correlation_id = EXCLUDED.correlation_id, template_code = EXCLUDED.template_code,
            batch_id = EXCLUDED.batch_id,
            first_attempt_at = COALESCE(r.first_attempt_at, now()), updated_at = now(),
            -- r.* is the row before this claim: an owner still set means its claim died.
            deliveries = CASE WHEN r.lease_owner IS NULL THEN 1 ELSE r.deliveries + 1 END,
            retry_due_at = NULL, retry_body = NULL, retry_properties = NULL
        WHERE (r.payload_hash = EXCLUDED.payload_hash OR r.payload_hash = '')
          AND (r.status IN ('pending', 'failed', 'unknown')
               OR (r.status = 'sending' AND r.lease_expires_at < now()))
        RETURNING r.attempts, r.claimed_from, r.deliveries
        INTO ew_claim_batch.attempts, ew_claim_batch.claimed_from, ew_claim_batch.deliveries;
        CONTINUE WHEN NOT FOUND;
        INSERT INTO email_events (request_id, event, status, attempt)
        VALUES (q.request_id,
                CASE WHEN ew_claim_batch.claimed_from = 'sending' THEN 'taken_over'
                     ELSE 'claimed' END,
                'sending', ew_claim_batch.attempts);
        pos := q.pos;
        RETURN NEXT;
    END LOOP;
END
$$;

-- ew_finish_many of 002, and besides: an outcome that schedules a retry carries "retry_in"
-- (seconds until the copy is due), "retry_body" (base64) and "retry_props" (an object); they
-- set retry_due_at, retry_body and retry_properties. Any other outcome leaves them NULL (the
-- claim cleared them). Only retries carry the keys: the common batch is as small as before.
CREATE FUNCTION ew_finish_batch(p_batch jsonb, p_grace float8, p_lock_timeout text)
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
            notification_id text, correlation_id text, cb_status text, cb_error text, url text,
            retry_in float8, retry_body text, retry_props jsonb)
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
            sent_at = CASE WHEN q.status = 'sent' THEN now() ELSE r.sent_at END,
            retry_due_at = now() + make_interval(secs => q.retry_in),  -- NULL without retry_in
            retry_body = decode(q.retry_body, 'base64'),
            retry_properties = q.retry_props
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
