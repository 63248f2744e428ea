-- Fair retries: a dataset whose run failed backs off, and is claimed after datasets that did not fail.
--
-- Before this, a failed run left its dataset pending with its old updated_at, so the claim's
-- "oldest first" put it at the head of every scheduled round: with a limit of 4 and four broken
-- datasets, the same four were claimed round after round and no good dataset ever was.
--
-- The catalog records facts (how many runs failed in a row, when the last one failed); the policy
-- (base delay and cap) is the caller's, passed to claim_pending_datasets from its settings. A
-- trigger keeps the facts, so every path that fails a run counts (the failure path's
-- record_run_status, the DLQ's record_failure, a lease taken over, the expired-lease sweep) and a
-- commit resets them. Manual and realtime messages do not claim: they still run at once.

ALTER TABLE datasets
  ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
  ADD COLUMN last_failed_at timestamptz;

CREATE FUNCTION _count_run_outcome() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
  IF NEW.status = 'failed' THEN
    UPDATE datasets SET consecutive_failures = consecutive_failures + 1, last_failed_at = now()
    WHERE id = NEW.dataset_id;
  ELSE
    UPDATE datasets SET consecutive_failures = 0, last_failed_at = NULL
    WHERE id = NEW.dataset_id AND consecutive_failures > 0;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER compaction_runs_outcome
AFTER UPDATE OF status ON compaction_runs
FOR EACH ROW
WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('failed', 'succeeded'))
EXECUTE FUNCTION _count_run_outcome();

-- When a dataset that failed n times in a row may be claimed again:
-- last failure + min(base * 2^(n-1), cap). Never for a dataset that did not fail.
CREATE FUNCTION _retry_due_at(p_failures integer, p_last_failed_at timestamptz, p_base_seconds integer,
                              p_max_seconds integer) RETURNS timestamptz
LANGUAGE sql IMMUTABLE SET search_path = public, pg_temp AS $$
  SELECT CASE WHEN p_failures < 1 OR p_last_failed_at IS NULL THEN NULL
    ELSE p_last_failed_at + make_interval(secs => least(
      greatest(p_base_seconds, 0)::double precision * power(2, least(p_failures - 1, 40)),
      greatest(p_max_seconds, 0)::double precision))
  END
$$;

-- The dataset as JSON, now with its failure record (every other key as in 0002).
CREATE OR REPLACE FUNCTION _dataset_json(d datasets) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT jsonb_build_object(
    'id', d.id, 'owner_id', d.owner_id, 'name', d.name,
    'compaction_needed', d.compaction_needed,
    'lease_owner', d.lease_owner, 'lease_expires_at', d.lease_expires_at,
    'claimed_by', d.claimed_by, 'claim_expires_at', d.claim_expires_at,
    'last_compacted_at', d.last_compacted_at,
    'live_fragments', d.live_fragments, 'live_compacted', d.live_compacted,
    'live_bytes', d.live_bytes, 'live_rows', d.live_rows, 'compactions', d.compactions,
    'consecutive_failures', d.consecutive_failures, 'last_failed_at', d.last_failed_at,
    'created_at', d.created_at, 'updated_at', d.updated_at)
$$;

-- Replaced (not overloaded: PostgREST resolves rpc() by argument names, and one name must mean one
-- function). The new arguments have defaults, so a caller of 0002's signature keeps working and
-- gets the fair order with the default policy.
DROP FUNCTION claim_pending_datasets(integer, text, integer);

-- Claim up to p_limit datasets that need compaction, are neither leased nor claimed, and are not
-- backing off. Datasets whose last run did not fail come first (oldest first), then those whose
-- backoff is over (longest due first). SKIP LOCKED gives concurrent claimers disjoint sets; the
-- claim itself stops a later, overlapping trigger from taking them again before the run starts.
-- Returns the ids in claim order.
CREATE FUNCTION claim_pending_datasets(
  p_limit integer, p_claimer text, p_claim_seconds integer DEFAULT 3600,
  p_backoff_base_seconds integer DEFAULT 1800, p_backoff_max_seconds integer DEFAULT 604800
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_ids jsonb;
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = 'p_limit must be between 1 and 1000';
  END IF;
  IF p_backoff_base_seconds IS NULL OR p_backoff_base_seconds < 0
     OR p_backoff_max_seconds IS NULL OR p_backoff_max_seconds < p_backoff_base_seconds THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422',
      MESSAGE = 'backoff seconds must satisfy 0 <= base <= max';
  END IF;
  WITH picked AS (
    SELECT d.id, d.updated_at, r.due_at
    FROM datasets d
    CROSS JOIN LATERAL (SELECT _retry_due_at(d.consecutive_failures, d.last_failed_at,
                                             p_backoff_base_seconds, p_backoff_max_seconds) AS due_at) r
    WHERE d.compaction_needed
      AND (d.claim_expires_at IS NULL OR d.claim_expires_at < now())
      AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now())
      AND (r.due_at IS NULL OR r.due_at <= now())
    ORDER BY r.due_at IS NOT NULL, r.due_at, d.updated_at, d.id
    LIMIT p_limit
    FOR UPDATE OF d SKIP LOCKED
  ), claimed AS (
    UPDATE datasets d
    SET claimed_by = p_claimer, claim_expires_at = now() + make_interval(secs => p_claim_seconds)
    FROM picked WHERE d.id = picked.id
    RETURNING d.id, picked.due_at, picked.updated_at
  )
  SELECT coalesce(jsonb_agg(id ORDER BY due_at IS NOT NULL, due_at, updated_at, id), '[]'::jsonb) INTO v_ids
  FROM claimed;
  RETURN v_ids;
END
$$;

REVOKE ALL ON FUNCTION _count_run_outcome(), _retry_due_at(integer, timestamptz, integer, integer),
  _dataset_json(datasets), claim_pending_datasets(integer, text, integer, integer, integer)
  FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION _retry_due_at(integer, timestamptz, integer, integer), _dataset_json(datasets),
  claim_pending_datasets(integer, text, integer, integer, integer) TO service_role;
