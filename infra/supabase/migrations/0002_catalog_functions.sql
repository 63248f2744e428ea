-- The catalog's atomic operations. Every function takes named p_* arguments and returns jsonb,
-- so PostgREST (`supabase.rpc(name, params)`) and a direct connection call them the same way.
--
-- Errors use SQLSTATEs of our own class "FC"; the Python transports map them to exceptions:
--   FC403 dataset belongs to another owner     FC404 unknown dataset or run
--   FC409 lease not held / run not running     FC410 an input is no longer live
--   FC422 invalid argument (keys, counts, transitions)

CREATE FUNCTION _dataset_json(d datasets) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT jsonb_build_object(
    'id', d.id, 'owner_id', d.owner_id, 'name', d.name,
    'compaction_needed', d.compaction_needed,
    'lease_owner', d.lease_owner, 'lease_expires_at', d.lease_expires_at,
    'claimed_by', d.claimed_by, 'claim_expires_at', d.claim_expires_at,
    'last_compacted_at', d.last_compacted_at,
    'live_fragments', d.live_fragments, 'live_compacted', d.live_compacted,
    'live_bytes', d.live_bytes, 'live_rows', d.live_rows, 'compactions', d.compactions,
    'created_at', d.created_at, 'updated_at', d.updated_at)
$$;

CREATE FUNCTION _file_json(f dataset_files) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT jsonb_build_object(
    'id', f.id, 'dataset_id', f.dataset_id, 'table_name', f.table_name, 'kind', f.kind,
    'object_key', f.object_key, 'size_bytes', f.size_bytes, 'row_count', f.row_count,
    'sha256', f.sha256, 'schema_fingerprint', f.schema_fingerprint, 'seq', f.seq,
    'added_at', f.added_at, 'removed_at', f.removed_at)
$$;

CREATE FUNCTION _run_json(r compaction_runs) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT jsonb_build_object(
    'id', r.id, 'dataset_id', r.dataset_id, 'trigger', r.trigger, 'execution_id', r.execution_id,
    'status', r.status, 'status_reason', r.status_reason, 'step_timings', r.step_timings,
    'files_in', r.files_in, 'files_out', r.files_out, 'bytes_in', r.bytes_in,
    'bytes_out', r.bytes_out, 'rows_in', r.rows_in, 'rows_out', r.rows_out,
    'error_step', r.error_step, 'error', r.error, 'created_at', r.created_at,
    'started_at', r.started_at, 'finished_at', r.finished_at, 'committed_at', r.committed_at)
$$;

-- Keep the dataset's counters exact: recomputed from the live rows inside the same transaction.
CREATE FUNCTION _refresh_dataset_counters(p_dataset_id uuid) RETURNS void
LANGUAGE sql SET search_path = public, pg_temp AS $$
  UPDATE datasets d SET
    live_fragments = s.fragments, live_compacted = s.compacted,
    live_bytes = s.bytes, live_rows = s.rows_,
    compaction_needed = s.fragments > 0,
    updated_at = now()
  FROM (
    SELECT count(*) FILTER (WHERE kind = 'fragment') AS fragments,
           count(*) FILTER (WHERE kind = 'compacted') AS compacted,
           coalesce(sum(size_bytes), 0) AS bytes, coalesce(sum(row_count), 0) AS rows_
    FROM dataset_files WHERE dataset_id = p_dataset_id AND removed_at IS NULL
  ) s
  WHERE d.id = p_dataset_id
$$;

-- Register one uploaded fragment (the object is already stored under p_object_key).
CREATE FUNCTION register_fragment(
  p_dataset_id uuid, p_owner_id uuid, p_table text, p_object_key text,
  p_size_bytes bigint, p_row_count bigint, p_sha256 text, p_schema_fingerprint text,
  p_dataset_name text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_owner uuid;
  v_created boolean;
  v_file dataset_files;
BEGIN
  IF p_table IS NULL OR p_table !~ '^[a-z][a-z0-9_]{0,62}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = format('invalid table name %L', p_table);
  END IF;
  -- The key is derived from dataset and table; refusing anything else means nobody can
  -- register (and later compact or delete) an object under another dataset's prefix.
  IF p_object_key IS NULL OR left(p_object_key, length(format('datasets/%s/%s/fragments/', p_dataset_id, p_table)))
       <> format('datasets/%s/%s/fragments/', p_dataset_id, p_table) THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422',
      MESSAGE = format('object key %L is not under datasets/%s/%s/fragments/', p_object_key, p_dataset_id, p_table);
  END IF;

  INSERT INTO datasets (id, owner_id, name) VALUES (p_dataset_id, p_owner_id, p_dataset_name)
  ON CONFLICT (id) DO NOTHING;
  v_created := FOUND;

  -- Row lock: registrations and commits of one dataset serialize here.
  SELECT owner_id INTO v_owner FROM datasets WHERE id = p_dataset_id FOR UPDATE;
  IF v_owner <> p_owner_id THEN
    RAISE EXCEPTION USING ERRCODE = 'FC403',
      MESSAGE = format('dataset %s belongs to another user', p_dataset_id);
  END IF;

  SELECT * INTO v_file FROM dataset_files
  WHERE dataset_id = p_dataset_id AND table_name = p_table AND kind = 'fragment' AND sha256 = p_sha256;
  IF FOUND THEN
    RETURN _file_json(v_file) || jsonb_build_object('duplicate', true, 'dataset_created', false);
  END IF;

  INSERT INTO dataset_files (dataset_id, table_name, kind, object_key, size_bytes, row_count, sha256, schema_fingerprint)
  VALUES (p_dataset_id, p_table, 'fragment', p_object_key, p_size_bytes, p_row_count, p_sha256, p_schema_fingerprint)
  RETURNING * INTO v_file;

  PERFORM _refresh_dataset_counters(p_dataset_id);
  RETURN _file_json(v_file) || jsonb_build_object('duplicate', false, 'dataset_created', v_created);
EXCEPTION
  WHEN check_violation THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = SQLERRM;
END
$$;

CREATE FUNCTION get_dataset(p_dataset_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
  d datasets;
BEGIN
  SELECT * INTO d FROM datasets WHERE id = p_dataset_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown dataset %s', p_dataset_id);
  END IF;
  RETURN _dataset_json(d);
END
$$;

-- Claim up to p_limit datasets that need compaction and are neither leased nor claimed.
-- SKIP LOCKED gives concurrent claimers disjoint sets; the claim itself stops a later,
-- overlapping trigger from taking them again before the run starts.
CREATE FUNCTION claim_pending_datasets(p_limit integer, p_claimer text, p_claim_seconds integer DEFAULT 3600)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_ids jsonb;
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = 'p_limit must be between 1 and 1000';
  END IF;
  WITH picked AS (
    SELECT id, updated_at FROM datasets
    WHERE compaction_needed
      AND (claim_expires_at IS NULL OR claim_expires_at < now())
      AND (lease_expires_at IS NULL OR lease_expires_at < now())
    ORDER BY updated_at, id
    LIMIT p_limit
    FOR UPDATE SKIP LOCKED
  ), claimed AS (
    UPDATE datasets d
    SET claimed_by = p_claimer, claim_expires_at = now() + make_interval(secs => p_claim_seconds)
    FROM picked WHERE d.id = picked.id
    RETURNING d.id, picked.updated_at
  )
  SELECT coalesce(jsonb_agg(id ORDER BY updated_at, id), '[]'::jsonb) INTO v_ids FROM claimed;
  RETURN v_ids;
END
$$;

-- Give back claims whose message could not be sent, so the next trigger retries them.
CREATE FUNCTION release_claims(p_dataset_ids uuid[], p_claimer text) RETURNS integer
LANGUAGE sql SET search_path = public, pg_temp AS $$
  WITH released AS (
    UPDATE datasets SET claimed_by = NULL, claim_expires_at = NULL
    WHERE id = ANY (p_dataset_ids) AND claimed_by = p_claimer
    RETURNING 1
  )
  SELECT count(*)::integer FROM released
$$;

-- Create the run row (idempotent on the run id: a redelivered message finds its run).
CREATE FUNCTION begin_run(
  p_run_id uuid, p_dataset_id uuid, p_trigger text, p_execution_id text DEFAULT NULL,
  p_message jsonb DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  r compaction_runs;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM datasets WHERE id = p_dataset_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown dataset %s', p_dataset_id);
  END IF;
  INSERT INTO compaction_runs (id, dataset_id, trigger, execution_id, status, message)
  VALUES (p_run_id, p_dataset_id, p_trigger, p_execution_id, 'queued', p_message)
  ON CONFLICT (id) DO NOTHING;
  SELECT * INTO r FROM compaction_runs WHERE id = p_run_id;
  IF r.dataset_id <> p_dataset_id THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = format('run %s belongs to another dataset', p_run_id);
  END IF;
  RETURN _run_json(r);
EXCEPTION
  WHEN check_violation THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = SQLERRM;
END
$$;

-- Take (or renew) the dataset's lease for a run. Returns acquired=false when another live run
-- holds it; an expired lease is taken over.
CREATE FUNCTION acquire_lease(p_dataset_id uuid, p_run_id uuid, p_lease_seconds integer)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  d datasets;
BEGIN
  IF p_lease_seconds IS NULL OR p_lease_seconds < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = 'p_lease_seconds must be positive';
  END IF;
  SELECT * INTO d FROM datasets WHERE id = p_dataset_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown dataset %s', p_dataset_id);
  END IF;
  IF d.lease_owner IS NOT NULL AND d.lease_owner <> p_run_id AND d.lease_expires_at > now() THEN
    RETURN jsonb_build_object('acquired', false, 'dataset', _dataset_json(d));
  END IF;
  IF d.lease_owner IS NOT NULL AND d.lease_owner <> p_run_id THEN
    -- Taking over an expired lease: its run crashed or timed out. Marking it failed also lets
    -- the orphan sweep reclaim whatever it wrote.
    UPDATE compaction_runs SET status = 'failed', error = format('lease expired; taken over by run %s', p_run_id),
      finished_at = now(), updated_at = now()
    WHERE id = d.lease_owner AND status IN ('queued', 'running');
  END IF;
  UPDATE datasets
  SET lease_owner = p_run_id, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
      claimed_by = NULL, claim_expires_at = NULL
  WHERE id = p_dataset_id
  RETURNING * INTO d;
  RETURN jsonb_build_object('acquired', true, 'dataset', _dataset_json(d));
END
$$;

CREATE FUNCTION release_lease(p_dataset_id uuid, p_run_id uuid) RETURNS boolean
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
  UPDATE datasets SET lease_owner = NULL, lease_expires_at = NULL
  WHERE id = p_dataset_id AND lease_owner = p_run_id;
  RETURN FOUND;
END
$$;

CREATE FUNCTION list_live_files(p_dataset_id uuid, p_table text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
  v jsonb;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM datasets WHERE id = p_dataset_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown dataset %s', p_dataset_id);
  END IF;
  SELECT coalesce(jsonb_agg(_file_json(f) ORDER BY f.table_name, f.seq, f.object_key), '[]'::jsonb)
  INTO v
  FROM dataset_files f
  WHERE f.dataset_id = p_dataset_id AND f.removed_at IS NULL
    AND (p_table IS NULL OR f.table_name = p_table);
  RETURN v;
END
$$;

-- Record a status transition. Terminal states (succeeded, skipped, failed) never change again:
-- a late "failed" after a commit, or a replayed "running", is a no-op reported as changed=false.
-- Leaving the run in failed/skipped releases the lease if this run holds it.
CREATE FUNCTION record_run_status(p_run_id uuid, p_status text, p_details jsonb DEFAULT '{}'::jsonb)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  r compaction_runs;
  v_terminal constant text[] := ARRAY['succeeded', 'skipped', 'failed'];
BEGIN
  IF p_status NOT IN ('queued', 'running', 'succeeded', 'skipped', 'failed') THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = format('unknown status %L', p_status);
  END IF;
  IF p_status = 'succeeded' THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = 'a run succeeds only through commit_compaction';
  END IF;
  SELECT * INTO r FROM compaction_runs WHERE id = p_run_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown run %s', p_run_id);
  END IF;
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

-- The commit: one transaction that swaps the run's inputs for its outputs.
-- Preconditions (else nothing changes): the run holds an unexpired lease, every input is still
-- live, outputs sit under the run's own prefix, and rows out = rows in for every table.
-- Idempotent on the run id: a replay after a lost response reports already_committed.
CREATE FUNCTION commit_compaction(
  p_run_id uuid, p_dataset_id uuid, p_removed uuid[], p_outputs jsonb,
  p_metrics jsonb DEFAULT '{}'::jsonb, p_grace_seconds integer DEFAULT 86400
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  d datasets;
  r compaction_runs;
  v_removed uuid[] := ARRAY(SELECT DISTINCT unnest(coalesce(p_removed, '{}'::uuid[])));
  v_not_live jsonb;
  v_bad text;
  v_added integer;
  v_removed_count integer;
BEGIN
  SELECT * INTO d FROM datasets WHERE id = p_dataset_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown dataset %s', p_dataset_id);
  END IF;
  SELECT * INTO r FROM compaction_runs WHERE id = p_run_id FOR UPDATE;
  IF NOT FOUND OR r.dataset_id <> p_dataset_id THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown run %s for dataset %s', p_run_id, p_dataset_id);
  END IF;
  IF r.committed_at IS NOT NULL THEN
    RETURN jsonb_build_object('committed', true, 'already_committed', true,
      'compaction_needed', d.compaction_needed, 'run', _run_json(r));
  END IF;
  IF r.status <> 'running' THEN
    RAISE EXCEPTION USING ERRCODE = 'FC409', MESSAGE = format('run %s is %s, not running', p_run_id, r.status);
  END IF;
  IF d.lease_owner IS DISTINCT FROM p_run_id OR d.lease_expires_at <= now() THEN
    RAISE EXCEPTION USING ERRCODE = 'FC409',
      MESSAGE = format('run %s does not hold the lease on dataset %s', p_run_id, p_dataset_id);
  END IF;

  SELECT jsonb_agg(i) INTO v_not_live FROM unnest(v_removed) AS i
  WHERE NOT EXISTS (
    SELECT 1 FROM dataset_files f
    WHERE f.id = i AND f.dataset_id = p_dataset_id AND f.removed_at IS NULL);
  IF v_not_live IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'FC410',
      MESSAGE = format('inputs no longer live: %s', v_not_live), DETAIL = v_not_live::text;
  END IF;

  CREATE TEMP TABLE _outputs ON COMMIT DROP AS
  SELECT * FROM jsonb_to_recordset(coalesce(p_outputs, '[]'::jsonb)) AS o(
    table_name text, object_key text, size_bytes bigint, row_count bigint, sha256 text,
    schema_fingerprint text, input_ids uuid[]);

  SELECT o.object_key INTO v_bad FROM _outputs o
  WHERE o.table_name IS NULL OR o.object_key IS NULL OR o.row_count IS NULL OR o.size_bytes IS NULL
     OR left(o.object_key, length(format('datasets/%s/%s/compacted/%s/', p_dataset_id, o.table_name, p_run_id)))
        <> format('datasets/%s/%s/compacted/%s/', p_dataset_id, o.table_name, p_run_id)
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422',
      MESSAGE = format('output %L is incomplete or not under the run''s prefix', v_bad);
  END IF;

  -- The catalog's own check that nothing was lost or duplicated, table by table.
  SELECT t INTO v_bad FROM (
    SELECT coalesce(i.table_name, o.table_name) AS t, i.rows_ AS rows_in, o.rows_ AS rows_out
    FROM (SELECT table_name, sum(row_count) AS rows_ FROM dataset_files WHERE id = ANY (v_removed) GROUP BY 1) i
    FULL JOIN (SELECT table_name, sum(row_count) AS rows_ FROM _outputs GROUP BY 1) o USING (table_name)
  ) x WHERE x.rows_in IS DISTINCT FROM x.rows_out AND coalesce(x.rows_in, 0) + coalesce(x.rows_out, 0) > 0
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = format('rows in <> rows out for table %s', v_bad);
  END IF;

  UPDATE dataset_files
  SET removed_at = now(), removed_by_run = p_run_id,
      delete_after = now() + make_interval(secs => greatest(p_grace_seconds, 0))
  WHERE id = ANY (v_removed);
  GET DIAGNOSTICS v_removed_count = ROW_COUNT;

  -- A compacted file takes the upload position of its earliest input.
  INSERT INTO dataset_files (dataset_id, table_name, kind, object_key, size_bytes, row_count, sha256,
                             schema_fingerprint, seq, added_by_run)
  SELECT p_dataset_id, o.table_name, 'compacted', o.object_key, o.size_bytes, o.row_count, o.sha256,
         coalesce(o.schema_fingerprint, ''),
         coalesce(
           (SELECT min(f.seq) FROM dataset_files f WHERE f.id = ANY (o.input_ids)),
           (SELECT min(f.seq) FROM dataset_files f WHERE f.id = ANY (v_removed) AND f.table_name = o.table_name),
           nextval('dataset_files_seq')),
         p_run_id
  FROM _outputs o
  -- Re-running a step overwrites the same keys; a key already registered is this run's own.
  ON CONFLICT (object_key) DO NOTHING;
  GET DIAGNOSTICS v_added = ROW_COUNT;

  PERFORM _refresh_dataset_counters(p_dataset_id);
  UPDATE datasets SET lease_owner = NULL, lease_expires_at = NULL, last_compacted_at = now(),
                      compactions = compactions + 1
  WHERE id = p_dataset_id
  RETURNING * INTO d;

  UPDATE compaction_runs SET
    status = 'succeeded', committed_at = now(), finished_at = now(), updated_at = now(),
    step_timings = step_timings || coalesce(p_metrics -> 'step_timings', '{}'::jsonb),
    files_in  = v_removed_count,
    files_out = v_added,
    bytes_in  = coalesce((p_metrics ->> 'bytes_in')::bigint,
                         (SELECT sum(size_bytes) FROM dataset_files WHERE id = ANY (v_removed))),
    bytes_out = coalesce((SELECT sum(size_bytes) FROM _outputs), 0),
    rows_in   = coalesce((SELECT sum(row_count) FROM dataset_files WHERE id = ANY (v_removed)), 0),
    rows_out  = coalesce((SELECT sum(row_count) FROM _outputs), 0)
  WHERE id = p_run_id
  RETURNING * INTO r;

  RETURN jsonb_build_object('committed', true, 'already_committed', false,
    'compaction_needed', d.compaction_needed, 'run', _run_json(r));
EXCEPTION
  WHEN check_violation OR not_null_violation OR invalid_text_representation THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = SQLERRM;
END
$$;

-- A failure from the DLQ handler or the workflow's failure path. Recorded once per message;
-- a known run is marked failed (with the step that failed) and gives up its lease.
CREATE FUNCTION record_failure(
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

CREATE FUNCTION list_recent_failures(p_limit integer DEFAULT 20) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object(
    'id', f.id, 'source', f.source, 'message_id', f.message_id, 'dataset_id', f.dataset_id,
    'run_id', f.run_id, 'error_step', f.error_step, 'error', f.error, 'body', f.body, 'at', f.at)
    ORDER BY f.at DESC, f.id DESC), '[]'::jsonb)
  FROM (SELECT * FROM compaction_failures ORDER BY at DESC, id DESC LIMIT least(greatest(p_limit, 1), 500)) f
$$;

-- Leases whose run crashed or timed out: the run is failed and the dataset is free again.
CREATE FUNCTION sweep_expired_leases() RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v jsonb;
BEGIN
  WITH expired AS (
    SELECT id, lease_owner FROM datasets WHERE lease_expires_at < now() FOR UPDATE SKIP LOCKED
  ), runs AS (
    UPDATE compaction_runs r SET status = 'failed', error = 'lease expired: the run crashed or timed out',
      finished_at = now(), updated_at = now()
    FROM expired e WHERE r.id = e.lease_owner AND r.status IN ('queued', 'running')
    RETURNING r.id
  ), freed AS (
    UPDATE datasets d SET lease_owner = NULL, lease_expires_at = NULL
    FROM expired e WHERE d.id = e.id
    RETURNING e.id AS dataset_id, e.lease_owner AS run_id
  )
  SELECT coalesce(jsonb_agg(jsonb_build_object('dataset_id', dataset_id, 'run_id', run_id)), '[]'::jsonb)
  INTO v FROM freed;
  UPDATE datasets SET claimed_by = NULL, claim_expires_at = NULL WHERE claim_expires_at < now();
  RETURN v;
END
$$;

-- Replaced objects whose grace period is over.
CREATE FUNCTION list_garbage(p_limit integer DEFAULT 1000) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'object_key', object_key) ORDER BY delete_after), '[]'::jsonb)
  FROM (SELECT id, object_key, delete_after FROM dataset_files
        WHERE removed_at IS NOT NULL AND object_deleted_at IS NULL AND delete_after <= now()
        ORDER BY delete_after LIMIT least(greatest(p_limit, 1), 10000)) g
$$;

CREATE FUNCTION mark_objects_deleted(p_file_ids uuid[]) RETURNS integer
LANGUAGE sql SET search_path = public, pg_temp AS $$
  WITH marked AS (
    UPDATE dataset_files SET object_deleted_at = now()
    WHERE id = ANY (p_file_ids) AND removed_at IS NOT NULL AND object_deleted_at IS NULL
    RETURNING 1
  )
  SELECT count(*)::integer FROM marked
$$;

-- Of the given object keys (from a bucket listing), those that are safe to delete as orphans:
-- not in the catalog, and not the output of a run that may still commit.
CREATE FUNCTION find_orphans(p_keys text[]) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT coalesce(jsonb_agg(k ORDER BY k), '[]'::jsonb)
  FROM unnest(p_keys) AS k
  WHERE NOT EXISTS (SELECT 1 FROM dataset_files f WHERE f.object_key = k)
    AND NOT EXISTS (
      SELECT 1 FROM compaction_runs r
      WHERE r.status IN ('queued', 'running') AND strpos(k, '/compacted/' || r.id::text || '/') > 0)
$$;

-- Everything `status` shows, in one round trip.
CREATE FUNCTION dataset_status(p_dataset_id uuid, p_runs integer DEFAULT 10) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
  d datasets;
BEGIN
  SELECT * INTO d FROM datasets WHERE id = p_dataset_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown dataset %s', p_dataset_id);
  END IF;
  RETURN jsonb_build_object(
    'dataset', _dataset_json(d),
    'files', list_live_files(p_dataset_id),
    'runs', (SELECT coalesce(jsonb_agg(_run_json(r) ORDER BY r.created_at DESC, r.id), '[]'::jsonb)
             FROM (SELECT * FROM compaction_runs WHERE dataset_id = p_dataset_id
                   ORDER BY created_at DESC, id LIMIT least(greatest(p_runs, 1), 100)) r));
END
$$;

-- Only the service role may call these; PostgreSQL grants EXECUTE to PUBLIC by default.
DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'public' AND p.proname IN (
      '_dataset_json', '_file_json', '_run_json', '_refresh_dataset_counters',
      'register_fragment', 'get_dataset', 'claim_pending_datasets', 'release_claims', 'begin_run',
      'acquire_lease', 'release_lease', 'list_live_files', 'record_run_status', 'commit_compaction',
      'record_failure', 'list_recent_failures', 'sweep_expired_leases', 'list_garbage',
      'mark_objects_deleted', 'find_orphans', 'dataset_status')
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon, authenticated', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', f);
  END LOOP;
END
$$;
