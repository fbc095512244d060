-- 011_spent_attempts: the ledger's `attempts` counts spent attempts only (CONTRACT v2,
-- "Attempts"): a try that reached a relay or a dependency and failed, or the send that
-- succeeded. A claim still adds one while the try is in flight (the status API shows it
-- "sending"); the outcome then writes the count its decision spent (a row's "spent" key), so a
-- deferral (throttling, an open breaker, a paused consumer), a hold until send_at, a failover,
-- or a refusal before any try (expired, cancelled, suppressed, invalid) gives back the claim's
-- one. The callback's `attempts` (004's trigger reads the row in the same statement, after this
-- UPDATE) and the events follow. Absent "spent" keeps the row's count (rolling upgrades).
-- ew_finish_batch2 of 010, and besides the "spent" key; 010's function stays for workers of
-- the previous version during a rolling upgrade.
CREATE FUNCTION ew_finish_batch3(p_batch jsonb, p_grace float8, p_lock_timeout text)
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
            retry_in float8, retry_body text, retry_props jsonb, relay text,
            provider_message_id text, spent integer)
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
            retry_properties = q.retry_props,
            relay = COALESCE(q.relay, r.relay),
            provider_message_id = COALESCE(q.provider_message_id, r.provider_message_id),
            attempts = COALESCE(q.spent, r.attempts)
        WHERE r.request_id = q.request_id AND r.lease_owner = q.lease
          AND r.status IN ('sending', 'unknown');
        CONTINUE WHEN NOT FOUND;
        INSERT INTO email_events (request_id, event, status, attempt, reason, detail)
        VALUES (q.request_id, q.status, q.status, COALESCE(q.spent, q.attempt), q.reason,
                q.detail);
        pos := q.pos;
        outbox_id := ew_enqueue_callback(
            q.webhook_id, q.request_id, q.notification_id, q.correlation_id, q.cb_status,
            q.cb_error, q.url, p_grace);
        RETURN NEXT;
    END LOOP;
END
$$;
