-- 005_rate_routes: rate limits shared by every replica, and throttled routes (CONTRACT
-- section 12). One row per route ('relay', 'relay:<name>', 'domain:<domain>'); every time is
-- epoch seconds of the database clock (clock_timestamp(), read after the row lock is held),
-- so replicas never compare their own clocks. email_worker/pacing/ owns the arithmetic;
-- email_worker/pacing/adaptive.py and store.py hold its Python twin, tests hold them equal.

CREATE TABLE rate_routes (
    route         text PRIMARY KEY,
    -- GCRA: the next free slot. A reservation of k slots moves it k spacings ahead.
    tat           double precision NOT NULL DEFAULT 0,
    -- Adaptive throttling: the rate set by the last halving and when (NULL: never throttled),
    -- and a pause the relay advised (Retry-After).
    base_rate     double precision,
    throttled_at  double precision,
    paused_until  double precision NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);  -- room for HOT updates: a busy route is updated a few times a second

-- The rate in force: the ceiling (NULL: unlimited) until a throttle, then the halved base
-- growing by p_growth a second up to the ceiling; a route without a ceiling is unlimited
-- again p_unlimited_after seconds after its last throttle. least() ignores a NULL ceiling.
CREATE FUNCTION ew_route_rate(
    p_ceiling double precision, p_base double precision, p_throttled_at double precision,
    p_now double precision, p_growth double precision, p_unlimited_after double precision
) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_base IS NULL OR p_throttled_at IS NULL THEN p_ceiling
        WHEN p_ceiling IS NULL AND p_now - p_throttled_at >= p_unlimited_after THEN NULL
        ELSE least(p_ceiling,
                   p_base * power(p_growth, least(greatest(p_now - p_throttled_at, 0), 600)))
    END
$$;

-- The route's row, locked, created when missing.
CREATE FUNCTION ew_rate_route_locked(p_route text) RETURNS rate_routes
LANGUAGE plpgsql AS $$
DECLARE
    found_row rate_routes;
BEGIN
    SELECT * INTO found_row FROM rate_routes WHERE route = p_route FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO rate_routes (route) VALUES (p_route) ON CONFLICT (route) DO NOTHING;
        SELECT * INTO found_row FROM rate_routes WHERE route = p_route FOR UPDATE;
    END IF;
    RETURN found_row;
END
$$;

-- Reserve up to p_count consecutive slots, none starting more than p_horizon seconds ahead:
-- slot i is slot_start + i * spacing, i < granted. rate NULL: unlimited, nothing reserved.
CREATE FUNCTION ew_reserve_slots(
    p_route text, p_ceiling double precision, p_count integer, p_horizon double precision,
    p_margin double precision, p_growth double precision, p_unlimited_after double precision
) RETURNS TABLE (slot_start double precision, spacing double precision, granted integer,
                 db_now double precision, rate double precision)
LANGUAGE plpgsql AS $$
DECLARE
    r rate_routes;
BEGIN
    r := ew_rate_route_locked(p_route);
    db_now := extract(epoch FROM clock_timestamp());
    rate := ew_route_rate(p_ceiling, r.base_rate, r.throttled_at, db_now, p_growth,
                          p_unlimited_after);
    IF rate IS NULL THEN
        slot_start := db_now; spacing := 0; granted := 0;
        RETURN NEXT;
        RETURN;
    END IF;
    spacing := (1 + p_margin) / rate;
    slot_start := greatest(r.tat, db_now, r.paused_until);
    granted := 0;
    IF slot_start - db_now <= p_horizon THEN
        granted := least(p_count, floor((db_now + p_horizon - slot_start) / spacing)::integer + 1);
        UPDATE rate_routes SET tat = slot_start + granted * spacing, updated_at = now()
        WHERE route = p_route;
    END IF;
    RETURN NEXT;
END
$$;

-- A send later than the margin allows (a thread woke late, a slow SMTP exchange): the next
-- free slot moves by its excess, so the send `rate` slots later still comes a second after it.
CREATE FUNCTION ew_push_slots(
    p_route text, p_after double precision, p_excess double precision
) RETURNS void
LANGUAGE sql AS $$
    UPDATE rate_routes SET tat = greatest(tat, p_after) + p_excess, updated_at = now()
    WHERE route = p_route
$$;

-- A throttling answer: halve the rate in force (from the observed rate, at least
-- p_first_floor, when the route had none), at most once per p_debounce seconds whoever
-- reports it, and pause the route p_retry_after seconds when given. Rows untouched for a day
-- are pruned here (a throttle is rare; the row comes back on its next use).
CREATE FUNCTION ew_throttle_route(
    p_route text, p_ceiling double precision, p_observed double precision,
    p_retry_after double precision, p_debounce double precision, p_min_rate double precision,
    p_first_floor double precision, p_growth double precision, p_unlimited_after double precision
) RETURNS TABLE (new_base double precision, since double precision, pause_until double precision,
                 db_now double precision, halved boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r rate_routes;
    current_rate double precision;
BEGIN
    r := ew_rate_route_locked(p_route);
    db_now := extract(epoch FROM clock_timestamp());
    pause_until := greatest(r.paused_until, db_now + coalesce(p_retry_after, 0));
    halved := r.throttled_at IS NULL OR db_now - r.throttled_at >= p_debounce;
    new_base := r.base_rate;
    since := r.throttled_at;
    IF halved THEN
        current_rate := coalesce(
            ew_route_rate(p_ceiling, r.base_rate, r.throttled_at, db_now, p_growth,
                          p_unlimited_after),
            greatest(p_observed, p_first_floor));
        new_base := greatest(p_min_rate, current_rate / 2);
        since := db_now;
    END IF;
    UPDATE rate_routes
    SET base_rate = new_base, throttled_at = since, paused_until = pause_until, updated_at = now()
    WHERE route = p_route;
    DELETE FROM rate_routes WHERE updated_at < now() - interval '1 day';
    RETURN NEXT;
END
$$;
