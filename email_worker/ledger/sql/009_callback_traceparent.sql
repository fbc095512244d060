-- 009_callback_traceparent: the W3C traceparent of the message span a callback reports on, so
-- the callback's POST continues the message's trace (CONTRACT section 18). NULL when the worker
-- did not trace (tracing off, or rows written before this migration): no header is sent then.
ALTER TABLE callback_outbox ADD COLUMN traceparent text;

-- How it gets there without changing any writer's signature: the worker sets the
-- transaction-local setting `email_worker.traceparents` (a JSON object, request_id ->
-- traceparent) in the statement before its outcomes' ledger call, in the same transaction, and
-- this trigger fills the column of every outbox row inserted for one of those requests
-- (ew_finish_batch of 003 through ew_enqueue_callback of 002, or any later writer of outbox
-- rows). Without the setting (tracing off) it costs one current_setting() per row. The setting
-- is local to the transaction, so it never leaks into another request's statement.
CREATE FUNCTION ew_outbox_traceparent() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    found text := NULLIF(current_setting('email_worker.traceparents', true), '');
BEGIN
    IF NEW.traceparent IS NULL AND found IS NOT NULL THEN
        NEW.traceparent := found::jsonb ->> NEW.request_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER callback_outbox_traceparent BEFORE INSERT ON callback_outbox
    FOR EACH ROW EXECUTE FUNCTION ew_outbox_traceparent();

-- ew_enqueue_callback of 002 with the traceparent given explicitly, for a writer outside an
-- outcome batch (002's eight-argument function is unchanged and keeps its callers).
CREATE FUNCTION ew_enqueue_callback(
    p_webhook_id text, p_request_id text, p_notification_id text, p_correlation_id text,
    p_status text, p_error text, p_url text, p_grace float8, p_traceparent text
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    new_id := ew_enqueue_callback(p_webhook_id, p_request_id, p_notification_id,
                                  p_correlation_id, p_status, p_error, p_url, p_grace);
    IF new_id IS NOT NULL AND p_traceparent IS NOT NULL THEN
        UPDATE callback_outbox SET traceparent = p_traceparent WHERE id = new_id;
    END IF;
    RETURN new_id;
END
$$;
