-- Quarantine: a file that cannot be compacted for a reason of its own (corrupt, counts that
-- disagree with its data, a schema that cannot be cast or that no output should carry, a decode
-- over the engine's budget) is set aside, with the reason, the step and the run that found it.
--
-- Before this, such a fragment failed its dataset's run at every attempt, forever, and none of the
-- dataset's other fragments was ever compacted again. Now the Compact step quarantines it (under
-- the run's lease) and compacts the rest of its bin in the same run, which succeeds.
--
-- A quarantined file stays in dataset_files, so its object is kept (never an orphan, never
-- garbage) and its bytes still dedupe uploads, but it leaves every plan: list_live_files, the
-- dataset's counters and compaction_needed ignore it, and commit_compaction refuses it as an
-- input. An operator re-admits it (after a code fix: it is compacted by the next run) or deletes it
-- (its object goes after the given grace period, as a replaced file's does). Its rows are
-- accounted for: rows registered = rows of live files + rows of quarantined files.
-- Transient errors (S3, the catalog, throttling) never get here: the step only quarantines on the
-- engine's typed input errors.

ALTER TABLE dataset_files
  ADD COLUMN quarantined_at     timestamptz,
  ADD COLUMN quarantined_by_run uuid REFERENCES compaction_runs (id) ON DELETE SET NULL,
  ADD COLUMN quarantine_step    text,
  ADD COLUMN quarantine_reason  text,
  ADD CONSTRAINT quarantine_is_whole CHECK (
    (quarantined_at IS NULL) = (quarantine_step IS NULL)
    AND (quarantined_at IS NULL) = (quarantine_reason IS NULL));

CREATE INDEX dataset_files_quarantined_idx
  ON dataset_files (dataset_id, quarantined_at) WHERE quarantined_at IS NOT NULL AND removed_at IS NULL;

CREATE FUNCTION _quarantined_json(f dataset_files) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT _file_json(f) || jsonb_build_object(
    'quarantined_at', f.quarantined_at, 'quarantined_by_run', f.quarantined_by_run,
    'quarantine_step', f.quarantine_step, 'quarantine_reason', f.quarantine_reason)
$$;

-- Counters and compaction_needed count what can be compacted: live and not quarantined.
CREATE OR REPLACE FUNCTION _refresh_dataset_counters(p_dataset_id uuid) RETURNS void
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
    FROM dataset_files WHERE dataset_id = p_dataset_id AND removed_at IS NULL AND quarantined_at IS NULL
  ) s
  WHERE d.id = p_dataset_id
$$;

CREATE OR REPLACE FUNCTION list_live_files(p_dataset_id uuid, p_table text DEFAULT NULL) RETURNS jsonb
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
  WHERE f.dataset_id = p_dataset_id AND f.removed_at IS NULL AND f.quarantined_at IS NULL
    AND (p_table IS NULL OR f.table_name = p_table);
  RETURN v;
END
$$;

-- Quarantine one file of the dataset for the run that holds its lease.
-- Idempotent: a file already quarantined is reported (quarantined=false) with its first reason.
-- Errors: FC404 unknown dataset, run or file (of this dataset); FC409 the run is not running or
-- does not hold the lease; FC410 the file was already removed; FC422 no step or reason.
CREATE FUNCTION quarantine_file(
  p_run_id uuid, p_dataset_id uuid, p_file_id uuid, p_step text, p_reason text
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  d datasets;
  r compaction_runs;
  f dataset_files;
BEGIN
  IF coalesce(btrim(p_step), '') = '' OR coalesce(btrim(p_reason), '') = '' THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = 'a quarantine needs a step and a reason';
  END IF;
  -- The dataset's row lock: quarantines, commits and registrations of one dataset serialize here.
  SELECT * INTO d FROM datasets WHERE id = p_dataset_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown dataset %s', p_dataset_id);
  END IF;
  SELECT * INTO r FROM compaction_runs WHERE id = p_run_id;
  IF NOT FOUND OR r.dataset_id <> p_dataset_id THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown run %s for dataset %s', p_run_id, p_dataset_id);
  END IF;
  SELECT * INTO f FROM dataset_files WHERE id = p_file_id AND dataset_id = p_dataset_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown file %s in dataset %s', p_file_id, p_dataset_id);
  END IF;
  IF r.status <> 'running' THEN
    RAISE EXCEPTION USING ERRCODE = 'FC409', MESSAGE = format('run %s is %s, not running', p_run_id, r.status);
  END IF;
  IF d.lease_owner IS DISTINCT FROM p_run_id OR d.lease_expires_at <= now() THEN
    RAISE EXCEPTION USING ERRCODE = 'FC409',
      MESSAGE = format('run %s does not hold the lease on dataset %s', p_run_id, p_dataset_id);
  END IF;
  IF f.removed_at IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'FC410', MESSAGE = format('file %s is no longer live', p_file_id),
      DETAIL = jsonb_build_array(p_file_id)::text;
  END IF;
  IF f.quarantined_at IS NOT NULL THEN
    RETURN jsonb_build_object('quarantined', false, 'file', _quarantined_json(f));
  END IF;

  UPDATE dataset_files SET
    quarantined_at = now(), quarantined_by_run = p_run_id,
    quarantine_step = left(p_step, 100), quarantine_reason = left(p_reason, 4000)
  WHERE id = p_file_id
  RETURNING * INTO f;
  PERFORM _refresh_dataset_counters(p_dataset_id);
  RETURN jsonb_build_object('quarantined', true, 'file', _quarantined_json(f));
END
$$;

-- The dataset's quarantined files (still there, not deleted), oldest quarantine first.
CREATE FUNCTION list_quarantined(p_dataset_id uuid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT coalesce(jsonb_agg(_quarantined_json(f) ORDER BY f.quarantined_at, f.seq, f.id), '[]'::jsonb)
  FROM dataset_files f
  WHERE f.dataset_id = p_dataset_id AND f.quarantined_at IS NOT NULL AND f.removed_at IS NULL
$$;

-- Over every dataset: what dlq-status counts.
CREATE FUNCTION count_quarantined() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT jsonb_build_object(
    'files', count(*), 'datasets', count(DISTINCT dataset_id), 'rows', coalesce(sum(row_count), 0),
    'oldest_at', min(quarantined_at))
  FROM dataset_files WHERE quarantined_at IS NOT NULL AND removed_at IS NULL
$$;

-- Locks the file's dataset, then the file; FC404 if there is no such file.
CREATE FUNCTION _lock_file(p_file_id uuid) RETURNS dataset_files
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_dataset uuid;
  f dataset_files;
BEGIN
  SELECT dataset_id INTO v_dataset FROM dataset_files WHERE id = p_file_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FC404', MESSAGE = format('unknown file %s', p_file_id);
  END IF;
  PERFORM 1 FROM datasets WHERE id = v_dataset FOR UPDATE;
  SELECT * INTO f FROM dataset_files WHERE id = p_file_id FOR UPDATE;
  RETURN f;
END
$$;

-- An operator takes a quarantined file back (after a code fix): it is live again, its dataset
-- pending, and the next run compacts it (or quarantines it again, with the new reason).
-- Idempotent: a file that is live and not quarantined is reported with readmitted=false.
-- FC410 if the file was deleted or compacted.
CREATE FUNCTION readmit_quarantined(p_file_id uuid) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  f dataset_files := _lock_file(p_file_id);
BEGIN
  IF f.removed_at IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'FC410', MESSAGE = format('file %s is no longer live', p_file_id),
      DETAIL = jsonb_build_array(p_file_id)::text;
  END IF;
  IF f.quarantined_at IS NULL THEN
    RETURN jsonb_build_object('readmitted', false, 'file', _quarantined_json(f));
  END IF;
  UPDATE dataset_files SET
    quarantined_at = NULL, quarantined_by_run = NULL, quarantine_step = NULL, quarantine_reason = NULL
  WHERE id = p_file_id
  RETURNING * INTO f;
  PERFORM _refresh_dataset_counters(f.dataset_id);
  RETURN jsonb_build_object('readmitted', true, 'file', _quarantined_json(f));
END
$$;

-- An operator gives a quarantined file up: it is removed (its rows leave the dataset) and its
-- object becomes garbage after p_grace_seconds. The quarantine record stays with the row.
-- Idempotent: a file already removed is reported with deleted=false. FC422 if the file is live
-- and not quarantined (only quarantined files are deleted this way).
CREATE FUNCTION delete_quarantined(p_file_id uuid, p_grace_seconds integer DEFAULT 0) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  f dataset_files := _lock_file(p_file_id);
BEGIN
  IF f.removed_at IS NOT NULL THEN
    RETURN jsonb_build_object('deleted', false, 'file', _quarantined_json(f));
  END IF;
  IF f.quarantined_at IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = format('file %s is not quarantined', p_file_id);
  END IF;
  UPDATE dataset_files SET
    removed_at = now(), delete_after = now() + make_interval(secs => greatest(coalesce(p_grace_seconds, 0), 0))
  WHERE id = p_file_id
  RETURNING * INTO f;
  PERFORM _refresh_dataset_counters(f.dataset_id);
  RETURN jsonb_build_object('deleted', true, 'file', _quarantined_json(f));
END
$$;

-- The commit, as in 0002, except that a quarantined file is not a live input (FC410).
CREATE OR REPLACE FUNCTION commit_compaction(
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
    WHERE f.id = i AND f.dataset_id = p_dataset_id AND f.removed_at IS NULL AND f.quarantined_at IS NULL);
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

-- Everything `status` shows, in one round trip, now with the dataset's quarantined files.
CREATE OR REPLACE FUNCTION dataset_status(p_dataset_id uuid, p_runs integer DEFAULT 10) RETURNS jsonb
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
    'quarantined', list_quarantined(p_dataset_id),
    'runs', (SELECT coalesce(jsonb_agg(_run_json(r) ORDER BY r.created_at DESC, r.id), '[]'::jsonb)
             FROM (SELECT * FROM compaction_runs WHERE dataset_id = p_dataset_id
                   ORDER BY created_at DESC, id LIMIT least(greatest(p_runs, 1), 100)) r));
END
$$;

REVOKE ALL ON FUNCTION _quarantined_json(dataset_files), _refresh_dataset_counters(uuid),
  list_live_files(uuid, text), quarantine_file(uuid, uuid, uuid, text, text), list_quarantined(uuid),
  count_quarantined(), _lock_file(uuid), readmit_quarantined(uuid), delete_quarantined(uuid, integer),
  commit_compaction(uuid, uuid, uuid[], jsonb, jsonb, integer), dataset_status(uuid, integer)
  FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION _quarantined_json(dataset_files), _refresh_dataset_counters(uuid),
  list_live_files(uuid, text), quarantine_file(uuid, uuid, uuid, text, text), list_quarantined(uuid),
  count_quarantined(), _lock_file(uuid), readmit_quarantined(uuid), delete_quarantined(uuid, integer),
  commit_compaction(uuid, uuid, uuid[], jsonb, jsonb, integer), dataset_status(uuid, integer)
  TO service_role;
