-- The global compaction budget: at most p_budget Compact invocations at once, account-wide.
--
-- Before this, the consumer started one execution per message with no bound: 1,000 datasets at
-- once meant up to 8,000 concurrent Compact invocations (Map concurrency 8), far past an account's
-- Lambda quota; throttles were retried three times, then the run failed into the DLQ for no fault
-- of its data.
--
-- Now the consumer admits a run before it starts its execution. An admission weighs what the run
-- may hold at once: min(the Map's concurrency, the bins its compactable bytes can make). The
-- Compact function's reserved concurrency is the same budget: if a run makes more bins than its
-- weight said (fragments whose schemas cannot be unified bin apart), its extra invocations are
-- throttled and the state machine waits them out. A run is in
-- flight, and holds its weight, from admission until it ends: its run row is terminal, its lease
-- has expired, or (no run row yet: StartExecution failed, or the execution never began) the
-- admission is older than p_stale_seconds. Nothing has to release a slot: it frees itself when the
-- run's own bookkeeping says it ended, so a crashed run frees its slot when its lease expires.
--
-- Priority: `scheduled` runs may fill the budget only up to p_budget - p_reserve; `manual` and
-- `realtime` runs may use all of it, so they start at once while scheduled work waits. What is
-- refused waits in its queue (the consumer re-sends it with a delay, which resets its receive
-- count: waiting never sends a message to the DLQ).

CREATE TABLE compaction_admissions (
  run_id      uuid PRIMARY KEY,
  dataset_id  uuid NOT NULL,
  priority    text NOT NULL CHECK (priority IN ('manual', 'scheduled', 'realtime')),
  weight      integer NOT NULL CHECK (weight >= 1),
  admitted_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE compaction_admissions ENABLE ROW LEVEL SECURITY;

-- The in-flight admissions; the others are deleted by admit_run as it goes.
CREATE FUNCTION _admission_in_flight(a compaction_admissions, p_stale_seconds integer) RETURNS boolean
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT CASE
    WHEN r.id IS NULL THEN a.admitted_at > now() - make_interval(secs => p_stale_seconds)
    WHEN r.status = 'queued' THEN r.created_at > now() - make_interval(secs => p_stale_seconds)
    WHEN r.status = 'running' THEN d.lease_owner = r.id AND d.lease_expires_at > now()
    ELSE false
  END
  FROM (SELECT 1) one
  LEFT JOIN compaction_runs r ON r.id = a.run_id
  LEFT JOIN datasets d ON d.id = a.dataset_id
$$;

-- Admit one run within the budget. Idempotent on the run id (a redelivered message finds its
-- admission). Returns {admitted, weight, in_flight (weight held by others), budget}.
CREATE FUNCTION admit_run(
  p_run_id uuid, p_dataset_id uuid, p_priority text, p_budget integer, p_reserve integer DEFAULT 0,
  p_max_weight integer DEFAULT 1, p_target_bytes bigint DEFAULT 134217728, p_stale_seconds integer DEFAULT 900
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_weight integer;
  v_held bigint;
  v_limit integer;
  v_bytes bigint;
  v_tables integer;
BEGIN
  IF p_budget IS NULL OR p_budget < 1 OR p_reserve IS NULL OR p_reserve < 0 OR p_reserve >= p_budget
     OR p_max_weight IS NULL OR p_max_weight < 1 OR p_target_bytes IS NULL OR p_target_bytes < 1
     OR p_stale_seconds IS NULL OR p_stale_seconds < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422',
      MESSAGE = 'admit_run needs 1 <= budget, 0 <= reserve < budget, 1 <= max_weight, target_bytes and stale_seconds';
  END IF;
  IF p_priority IS NULL OR p_priority NOT IN ('manual', 'scheduled', 'realtime') THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = format('unknown priority %L', p_priority);
  END IF;
  -- One admitter at a time: the budget is checked and taken in one step.
  PERFORM pg_advisory_xact_lock(hashtext('compaction_admissions'));
  SELECT weight INTO v_weight FROM compaction_admissions WHERE run_id = p_run_id;
  IF FOUND THEN
    RETURN jsonb_build_object('admitted', true, 'weight', v_weight, 'in_flight', NULL, 'budget', p_budget);
  END IF;
  DELETE FROM compaction_admissions a WHERE NOT _admission_in_flight(a, p_stale_seconds);
  SELECT coalesce(sum(weight), 0) INTO v_held FROM compaction_admissions;

  -- At most the bins its compactable bytes (fragments, compacted files well below the target)
  -- make: each table is binned on its own, so bytes // target + one partial bin per table.
  SELECT coalesce(sum(size_bytes), 0), count(DISTINCT table_name) INTO v_bytes, v_tables FROM dataset_files
  WHERE dataset_id = p_dataset_id AND removed_at IS NULL AND quarantined_at IS NULL
    AND (kind = 'fragment' OR size_bytes < p_target_bytes / 2);
  v_weight := least(p_max_weight, greatest(1, v_bytes / p_target_bytes + v_tables))::integer;
  v_limit := CASE WHEN p_priority = 'scheduled' THEN p_budget - p_reserve ELSE p_budget END;
  -- A run heavier than its whole limit still runs, alone: its Map waits on Lambda's throttle.
  IF v_held > 0 AND v_held + v_weight > v_limit THEN
    RETURN jsonb_build_object('admitted', false, 'weight', v_weight, 'in_flight', v_held, 'budget', p_budget);
  END IF;
  INSERT INTO compaction_admissions (run_id, dataset_id, priority, weight)
  VALUES (p_run_id, p_dataset_id, p_priority, v_weight);
  RETURN jsonb_build_object('admitted', true, 'weight', v_weight, 'in_flight', v_held, 'budget', p_budget);
END
$$;

-- The run will not start (StartExecution failed): free its weight now rather than when it goes stale.
CREATE FUNCTION release_admission(p_run_id uuid) RETURNS boolean
LANGUAGE sql SET search_path = public, pg_temp AS $$
  WITH gone AS (DELETE FROM compaction_admissions WHERE run_id = p_run_id RETURNING 1)
  SELECT count(*) > 0 FROM gone
$$;

-- What the budget holds now (operators, tests).
CREATE FUNCTION admission_status(p_stale_seconds integer DEFAULT 900) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT jsonb_build_object(
    'runs', count(*),
    'weight', coalesce(sum(a.weight), 0),
    'scheduled_weight', coalesce(sum(a.weight) FILTER (WHERE a.priority = 'scheduled'), 0))
  FROM compaction_admissions a
  WHERE _admission_in_flight(a, p_stale_seconds)
$$;

REVOKE ALL ON TABLE compaction_admissions FROM PUBLIC, anon, authenticated;
GRANT ALL ON TABLE compaction_admissions TO service_role;
REVOKE ALL ON FUNCTION _admission_in_flight(compaction_admissions, integer),
  admit_run(uuid, uuid, text, integer, integer, integer, bigint, integer), release_admission(uuid),
  admission_status(integer)
  FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION _admission_in_flight(compaction_admissions, integer),
  admit_run(uuid, uuid, text, integer, integer, integer, bigint, integer), release_admission(uuid),
  admission_status(integer)
  TO service_role;
