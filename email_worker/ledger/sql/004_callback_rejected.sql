-- 004_callback_rejected: callbacks the gateway refused for good, and the attempts of the
-- status event a callback reports.

-- 'rejected': the gateway answered a 4xx other than 408, 425 and 429 (CONTRACT section 7);
-- the row is final after that one try and never retried. The CHECK of 001 is replaced.
ALTER TABLE callback_outbox DROP CONSTRAINT callback_outbox_state_check;
ALTER TABLE callback_outbox ADD CONSTRAINT callback_outbox_state_check
    CHECK (state IN ('pending', 'delivered', 'superseded', 'dead', 'rejected'));

-- The request's attempt count when its status was recorded, for the opt-in `attempts` field
-- of the callback body. Kept in the row so that every retry of one webhook-id reports the
-- same number; NULL in rows written before this migration.
ALTER TABLE callback_outbox ADD COLUMN request_attempts integer;

-- Filled from the ledger row inside the INSERT itself (the ledger writes the status first, in
-- the same statement): no extra round trip, and every writer of outbox rows gets it.
CREATE FUNCTION ew_outbox_request_attempts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.request_attempts IS NULL THEN
        SELECT r.attempts INTO NEW.request_attempts
        FROM email_requests r WHERE r.request_id = NEW.request_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER callback_outbox_request_attempts BEFORE INSERT ON callback_outbox
    FOR EACH ROW EXECUTE FUNCTION ew_outbox_request_attempts();
