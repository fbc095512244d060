-- 012_report_batches: the reports of one webhook POST recorded in a bounded number of round
-- trips (SendGrid batches thousands of events per POST and retries the whole POST when the
-- answer is slow). The caller (email_worker/ledger/reports.py) runs these in one transaction,
-- a chunk of reports per call.
--
-- Every report has exactly the effect it had alone, in the order the provider sent them.
-- Ties loop over the batch applying 008's ew_record_report itself: reports about one request
-- see each other's effects (a complaint after a bounce is kept as an audit event), which one
-- set-based statement could not give. Suppression entries are one set-based statement (see
-- ew_suppression_add_many). The older functions stay, for workers of the previous version
-- during a rolling upgrade.

-- p_reports: [{pos, message_ids, provider_ids, status, detail, error, webhook_id}, ...].
-- One row per report that ties to a request, with its pos.
CREATE FUNCTION ew_record_reports(p_reports jsonb, p_grace float8)
RETURNS TABLE (pos integer, request_id text, recipient text, changed boolean, outbox_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    q record;
    t record;
BEGIN
    FOR q IN
        SELECT * FROM jsonb_to_recordset(p_reports) AS x(
            pos integer, message_ids text[], provider_ids text[], status text, detail text,
            error text, webhook_id text)
        ORDER BY x.pos
    LOOP
        SELECT * INTO t FROM ew_record_report(
            COALESCE(q.message_ids, '{}'), COALESCE(q.provider_ids, '{}'), q.status, q.detail,
            q.error, q.webhook_id, p_grace);
        CONTINUE WHEN NOT FOUND;
        pos := q.pos;
        request_id := t.request_id;
        recipient := t.recipient;
        changed := t.changed;
        outbox_id := t.outbox_id;
        RETURN NEXT;
    END LOOP;
END
$$;

-- p_entries: [{pos, hash (hex), address, reason, source, detail}, ...], each already checked
-- and normalised by email_worker/ledger/suppressions.py, none expiring. One statement: the
-- entries of one address are folded first to the one that a series of ew_suppression_add
-- calls would leave in effect (the strongest reason, and of those the last: its source and
-- detail win), then upserted with 007's rules. Folding is exact here because every entry is
-- "never expiring" and now() is one instant in a transaction (last_seen, first_seen come out
-- the same). The DO UPDATE below must stay in step with ew_suppression_add (007).
-- Returns how many addresses were written.
CREATE FUNCTION ew_suppression_add_many(p_entries jsonb) RETURNS integer
LANGUAGE sql AS $$
    WITH written AS (
        INSERT INTO suppressions AS s
            (address_hash, address, reason, source, detail, expires_at)
        SELECT DISTINCT ON (x.hash)
            decode(x.hash, 'hex'), x.address, x.reason, x.source, x.detail, NULL::timestamptz
        FROM jsonb_to_recordset(p_entries) AS x(
            pos integer, hash text, address text, reason text, source text, detail text)
        ORDER BY x.hash, ew_suppression_rank(x.reason) DESC, x.pos DESC
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
        RETURNING 1
    )
    SELECT count(*)::integer FROM written
$$;
