-- One lock order for every function that writes a run and its dataset: the dataset's row first.
--
-- commit_compaction, acquire_lease, quarantine_file and sweep_expired_leases lock the dataset row
-- and then the run row. record_run_status and record_failure took them the other way round: the
-- run row (FOR UPDATE, or the UPDATE itself), then the dataset row (the lease released on a failed
-- or skipped run, and the failure counter that _count_run_outcome's trigger keeps). A failure
-- recorded for a run while that run committed therefore deadlocked: PostgreSQL aborted one of the
-- two after deadlock_timeout (40P01), and Step Functions retried. Nothing wrong was committed, but a
-- commit could be the victim of its own run's late failure report, after a second's wait.
--
-- Now both lock the dataset row before they touch the run row, when the status they record can
-- write the dataset (failed, skipped). A run's dataset_id never changes, so reading it before the
-- locks is safe. The functions' bodies are otherwise those of 0002.

CREATE OR REPLACE FUNCTION record_run_status(p_run_id uuid, p_status text, p_details jsonb DEFAULT '{}'::jsonb)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  r compaction_runs;
  v_dataset uuid;
  v_terminal constant text[] := ARRAY['succeeded', 'skipped', 'failed'];
BEGIN
  IF p_status NOT IN ('queued', 'running', 'succeeded', 'skipped', 'failed') THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = format('unknown status %L', p_status);
  END IF;
  IF p_status = 'succeeded' THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = 'a run succeeds only through commit_compaction';
  END IF;
  SELECT dataset_id INTO v_dataset FROM compaction_runs WHERE id = p_run_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown run %s', p_run_id);
  END IF;
  IF p_status IN ('failed', 'skipped') THEN
    PERFORM 1 FROM datasets WHERE id = v_dataset FOR UPDATE;
  END IF;
  SELECT * INTO r FROM compaction_runs WHERE id = p_run_id FOR UPDATE;
  IF r.status = ANY (v_terminal) OR (p_status = 'queued' AND r.status <> 'queued') THEN
    RETURN _run_json(r) || jsonb_build_object('changed', false);
  END IF;

  UPDATE compaction_runs SET
    status        = p_status,
    status_reason = coalesce(p_details ->> 'status_reason', status_reason),
    execution_id  = coalesce(p_details ->> 'execution_id', execution_id),
    step_timings  = step_timings || coalesce(p_details -> 'step_timings', '{}'::jsonb),
    files_in      = coalesce((p_details ->> 'files_in')::integer, files_in),
    bytes_in      = coalesce((p_details ->> 'bytes_in')::bigint, bytes_in),
    rows_in       = coalesce((p_details ->> 'rows_in')::bigint, rows_in),
    error_step    = coalesce(p_details ->> 'error_step', error_step),
    error         = coalesce(left(p_details ->> 'error', 4000), error),
    started_at    = CASE WHEN p_status = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
    finished_at   = CASE WHEN p_status = ANY (v_terminal) THEN now() ELSE finished_at END,
    updated_at    = now()
  WHERE id = p_run_id
  RETURNING * INTO r;

  IF p_status IN ('failed', 'skipped') THEN
    UPDATE datasets SET lease_owner = NULL, lease_expires_at = NULL
    WHERE id = r.dataset_id AND lease_owner = p_run_id;
  END IF;
  RETURN _run_json(r) || jsonb_build_object('changed', true);
END
$$;

CREATE OR REPLACE FUNCTION record_failure(
  p_source text, p_error text, p_message_id text DEFAULT NULL, p_dataset_id uuid DEFAULT NULL,
  p_run_id uuid DEFAULT NULL, p_error_step text DEFAULT NULL, p_body text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_id bigint;
BEGIN
  IF p_source NOT IN ('dlq', 'workflow') THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = format('unknown failure source %L', p_source);
  END IF;
  IF p_run_id IS NOT NULL THEN
    PERFORM 1 FROM datasets WHERE id = (SELECT dataset_id FROM compaction_runs WHERE id = p_run_id) FOR UPDATE;
  END IF;
  INSERT INTO compaction_failures (source, message_id, dataset_id, run_id, error_step, error, body)
  VALUES (p_source, p_message_id, p_dataset_id, p_run_id, p_error_step,
          left(coalesce(p_error, 'unknown error'), 4000), left(p_body, 262144))
  ON CONFLICT (source, message_id) WHERE message_id IS NOT NULL DO NOTHING
  RETURNING id INTO v_id;

  IF p_run_id IS NOT NULL THEN
    UPDATE compaction_runs SET status = 'failed', error_step = coalesce(p_error_step, error_step),
      error = left(coalesce(p_error, error), 4000), finished_at = now(), updated_at = now()
    WHERE id = p_run_id AND status IN ('queued', 'running');
    UPDATE datasets SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = p_run_id;
  END IF;
  RETURN jsonb_build_object('recorded', v_id IS NOT NULL, 'failure_id', v_id);
END
$$;
