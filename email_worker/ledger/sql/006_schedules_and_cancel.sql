-- 006_schedules_and_cancel: scheduled sends held in the ledger, their release, and cancels
-- (CONTRACT section 14).
--
-- A request whose send_at is ahead is claimed, then recorded 'scheduled' with its message kept
-- in the retry-copy columns of 003 (retry_due_at = when it is due, retry_body, retry_properties)
-- and acked: it occupies no consumer while it waits. Each `email-worker run` releases the due
-- ones (ew_take_due_schedules, then ew_mark_released once the broker confirmed each copy);
-- the copy's claim sends it. A cancel marks a request not sent yet 'failed' with reason
-- 'cancelled' and enqueues its callback in the same transaction; a claim never takes such a
-- request again, so its message is acked as cancelled whenever it arrives.

-- The statuses of every version-2 feature, widened once here: 'scheduled' (this migration),
-- 'bounced' and 'complained' (suppression, CONTRACT section 15). NOT VALID skips the scan of
-- the existing rows, which satisfy the narrower constraint of 001 and so this one by
-- construction; every row written from now on is checked as before.
ALTER TABLE email_requests DROP CONSTRAINT email_requests_status_check;
ALTER TABLE email_requests ADD CONSTRAINT email_requests_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'unknown', 'scheduled',
                      'bounced', 'complained')) NOT VALID;

-- The release's question "which held requests are due?" reads this small index only.
CREATE INDEX email_requests_scheduled_due_idx ON email_requests (retry_due_at)
    WHERE status = 'scheduled';

-- ew_claim_batch of 003, and besides:
-- * a 'scheduled' row is claimed (its released copy came back, or the gateway published the
--   request again): the claim of a held request spends no attempt, so its count is kept;
-- * a cancelled request ('failed' with reason 'cancelled') is never claimed: the caller reads
--   why and acks the message as cancelled.
-- 003's function stays for workers of the previous version during a rolling upgrade.
CREATE FUNCTION ew_claim_batch2(p_batch jsonb, p_lease_seconds float8, p_lock_timeout text)
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
            attempts = CASE WHEN r.status = 'scheduled' THEN r.attempts ELSE r.attempts + 1 END,
            notification_id = EXCLUDED.notification_id,
            correlation_id = EXCLUDED.correlation_id, template_code = EXCLUDED.template_code,
            batch_id = EXCLUDED.batch_id,
            first_attempt_at = COALESCE(r.first_attempt_at, now()), updated_at = now(),
            -- r.* is the row before this claim: an owner still set means its claim died.
            deliveries = CASE WHEN r.lease_owner IS NULL THEN 1 ELSE r.deliveries + 1 END,
            retry_due_at = NULL, retry_body = NULL, retry_properties = NULL
        WHERE (r.payload_hash = EXCLUDED.payload_hash OR r.payload_hash = '')
          AND (r.status IN ('pending', 'failed', 'unknown', 'scheduled')
               OR (r.status = 'sending' AND r.lease_expires_at < now()))
          AND NOT (r.status = 'failed' AND r.failure_reason IS NOT DISTINCT FROM 'cancelled')
        RETURNING r.attempts, r.claimed_from, r.deliveries
        INTO ew_claim_batch2.attempts, ew_claim_batch2.claimed_from, ew_claim_batch2.deliveries;
        CONTINUE WHEN NOT FOUND;
        INSERT INTO email_events (request_id, event, status, attempt)
        VALUES (q.request_id,
                CASE WHEN ew_claim_batch2.claimed_from = 'sending' THEN 'taken_over'
                     ELSE 'claimed' END,
                'sending', ew_claim_batch2.attempts);
        pos := q.pos;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Up to p_limit held requests that are due (database clock), oldest first, locked with SKIP
-- LOCKED: another replica's release, or a claim in progress, is skipped, never waited for. The
-- caller publishes each copy and marks it (ew_mark_released) in this same transaction, so no
-- two replicas publish the same copy; a crash between a confirm and the commit publishes it
-- again later (the ledger keeps that to one email).
CREATE FUNCTION ew_take_due_schedules(p_limit integer)
RETURNS TABLE (request_id text, retry_body bytea, retry_properties jsonb,
               first_attempt_at timestamptz)
LANGUAGE sql AS $$
    SELECT r.request_id, r.retry_body, r.retry_properties, r.first_attempt_at
    FROM email_requests r
    WHERE r.status = 'scheduled' AND r.retry_due_at <= now() AND r.retry_body IS NOT NULL
    ORDER BY r.retry_due_at
    LIMIT p_limit
    FOR UPDATE SKIP LOCKED
$$;

-- The copies of p_ids are on the broker: each row becomes 'pending' with its retry mark at
-- now, and keeps its copy, so that beat's re-drive of overdue retries (RETRY_OVERDUE_SECONDS)
-- publishes it again if the broker loses this one. The claim of the hold counted an attempt
-- that was never made: it is given back (the claim of the copy counts the real one).
CREATE FUNCTION ew_mark_released(p_ids text[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH released AS (
        UPDATE email_requests r SET status = 'pending', retry_due_at = now(),
            attempts = GREATEST(r.attempts - 1, 0), updated_at = now()
        WHERE r.request_id = ANY(p_ids) AND r.status = 'scheduled'
        RETURNING r.request_id, r.attempts)
    INSERT INTO email_events (request_id, event, status, attempt, detail)
    SELECT request_id, 'released', 'pending', attempts, 'send_at reached: copy published'
    FROM released;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Cancel one request (CONTRACT section 14), atomically with its callback. Outcomes:
-- 'cancelled'         it was not sent yet (held, waiting for a retry, or, with p_unseen, not
--                     seen at all: its message may still be queued); now 'failed' with reason
--                     'cancelled', its kept copy dropped, a 'failed' callback enqueued;
-- 'already_cancelled' nothing changes, no second callback;
-- 'unknown'           no such request_id (and not p_unseen);
-- 'refused'           sent, in flight, maybe delivered, or already failed: `previous` and
--                     `reason` say which.
-- The callback goes to the URL of the request's latest callback, else p_url (CALLBACK_URL).
-- For a request not seen yet, notification and correlation ids are the request_id, and the
-- row's payload hash stays '' (its message, when it arrives, is acked as cancelled).
CREATE FUNCTION ew_cancel(
    p_request_id text, p_detail text, p_url text, p_webhook_id text, p_grace float8,
    p_unseen boolean
) RETURNS TABLE (outcome text, previous text, reason text, outbox_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    url text;
BEGIN
    IF p_unseen THEN
        INSERT INTO email_requests (request_id, payload_hash, status, notification_id,
                                    correlation_id, failure_reason, failure_detail)
        VALUES (p_request_id, '', 'failed', p_request_id, p_request_id, 'cancelled', p_detail)
        ON CONFLICT (request_id) DO NOTHING;
        IF FOUND THEN
            INSERT INTO email_events (request_id, event, status, reason, detail)
            VALUES (p_request_id, 'cancelled', 'failed', 'cancelled', p_detail);
            outcome := 'cancelled';
            outbox_id := ew_enqueue_callback(
                p_webhook_id, p_request_id, p_request_id, p_request_id, 'failed',
                'cancelled: ' || p_detail, p_url, p_grace);
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    SELECT x.status, x.failure_reason, x.notification_id, x.correlation_id, x.attempts INTO r
    FROM email_requests x WHERE x.request_id = p_request_id FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'unknown';
    ELSIF r.status = 'failed' AND r.failure_reason = 'cancelled' THEN
        outcome := 'already_cancelled';
    ELSIF r.status NOT IN ('scheduled', 'pending') THEN
        outcome := 'refused';
    END IF;
    previous := r.status;
    reason := r.failure_reason;
    IF outcome IS NOT NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    UPDATE email_requests SET status = 'failed', failure_reason = 'cancelled',
        failure_detail = p_detail, lease_owner = NULL, lease_expires_at = NULL,
        retry_due_at = NULL, retry_body = NULL, retry_properties = NULL, updated_at = now()
    WHERE request_id = p_request_id;
    INSERT INTO email_events (request_id, event, status, attempt, reason, detail)
    VALUES (p_request_id, 'cancelled', 'failed', r.attempts, 'cancelled', p_detail);
    SELECT o.callback_url INTO url FROM callback_outbox o
    WHERE o.request_id = p_request_id ORDER BY o.id DESC LIMIT 1;
    outcome := 'cancelled';
    reason := NULL;
    outbox_id := ew_enqueue_callback(
        p_webhook_id, p_request_id, r.notification_id, r.correlation_id, 'failed',
        'cancelled: ' || p_detail, COALESCE(url, p_url), p_grace);
    RETURN NEXT;
END
$$;
