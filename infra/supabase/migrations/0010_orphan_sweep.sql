-- The orphan sweep scales with what changed, not with the bucket.
--
-- Before this, the scheduled run listed the whole datasets/ prefix every day and stopped after
-- 100,000 keys: at scale, orphans past the first 100,000 keys were never found, and the listing's
-- cost grew with the bucket. Now two sweeps share the work, and both keep their place here, so an
-- invocation that runs out of time, or crashes, is resumed by the next one:
--
-- 1. Daily, the touched sweep: only the prefixes of datasets whose catalog rows changed in a window
--    of time (runs started, failed or finished, files registered or committed, uploads rejected).
--    Every orphan the service itself makes sits under such a dataset's prefix, written close to the
--    time of such a change: a compaction run's outputs (the run row is updated when it fails, also
--    when its lease expires), a fragment written before its registration (the registration, or the
--    rejection recorded for a presigned upload). The window [watermark - lookback, now()) looks back
--    by the orphans' minimum age plus some slack, so an object too young to be deleted by one sweep
--    is still in the next one's window. The touched datasets of a window are listed once, into
--    orphan_sweep_datasets, and taken off as they are swept; the watermark moves when it is empty.
-- 2. Periodically, the inventory sweep: the whole bucket, from an S3 Inventory report (no listing),
--    for the orphans no catalog row points at (a registration that never happened at all, in a
--    dataset the catalog never heard of). Its place is the report and how far into it the sweep got.
--
-- One lease per sweep (owner + expiry, as datasets have): two scheduled invocations never sweep at
-- once; an invocation releases it when it stops, and a crashed one's runs out on its own.

CREATE TABLE orphan_sweeps (
  sweep                  text PRIMARY KEY CHECK (sweep IN ('touched', 'inventory')),
  lease_owner            text,
  lease_expires_at       timestamptz,
  -- touched: the changes before `watermark` are covered by finished windows; the window in progress.
  watermark              timestamptz,
  window_from            timestamptz,
  window_until           timestamptz,
  -- inventory: the report in progress (its manifest's key) and how far into it; the last one finished.
  report                 text,
  report_created_at      timestamptz,
  report_file            integer NOT NULL DEFAULT 0 CHECK (report_file >= 0),
  report_rows            bigint NOT NULL DEFAULT 0 CHECK (report_rows >= 0),
  last_report            text,
  last_report_created_at timestamptz,
  last_finished_at       timestamptz,
  updated_at             timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT orphan_sweep_lease_is_whole CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
  CONSTRAINT orphan_sweep_window_is_whole CHECK ((window_from IS NULL) = (window_until IS NULL)),
  CONSTRAINT orphan_sweep_report_is_whole CHECK ((report IS NULL) = (report_created_at IS NULL))
);
-- What was there before this migration is the inventory sweep's (and the first window looks back).
INSERT INTO orphan_sweeps (sweep, watermark) VALUES ('touched', now()), ('inventory', NULL);

-- The touched datasets of the window in progress that are not swept yet. `start_after`: the last
-- key of the dataset's prefix already examined, when an invocation ran out of time in the middle.
CREATE TABLE orphan_sweep_datasets (
  dataset_id  uuid PRIMARY KEY,
  start_after text
);

-- "What changed in the window", by index ranges rather than by scanning.
CREATE INDEX compaction_runs_updated_idx ON compaction_runs (updated_at);
CREATE INDEX dataset_files_added_idx ON dataset_files (added_at);
-- compaction_failures (at) is indexed since 0001.

ALTER TABLE orphan_sweeps ENABLE ROW LEVEL SECURITY;
ALTER TABLE orphan_sweep_datasets ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON orphan_sweeps, orphan_sweep_datasets FROM PUBLIC, anon, authenticated;
GRANT ALL ON orphan_sweeps, orphan_sweep_datasets TO service_role;

-- The sweep's row, locked, if p_owner holds (or may take) its lease; NULL if another holds it.
CREATE FUNCTION _take_orphan_sweep(p_sweep text, p_owner text, p_lease_seconds integer) RETURNS orphan_sweeps
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  s orphan_sweeps;
BEGIN
  IF p_owner IS NULL OR p_owner = '' OR p_lease_seconds IS NULL OR p_lease_seconds < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = 'an orphan sweep needs an owner and a lease of >= 1 s';
  END IF;
  SELECT * INTO s FROM orphan_sweeps WHERE sweep = p_sweep FOR UPDATE;
  IF s.lease_owner IS DISTINCT FROM p_owner AND s.lease_expires_at > now() THEN
    RETURN NULL;
  END IF;
  UPDATE orphan_sweeps SET lease_owner = p_owner,
    lease_expires_at = now() + make_interval(secs => p_lease_seconds), updated_at = now()
  WHERE sweep = p_sweep RETURNING * INTO s;
  RETURN s;
END
$$;

-- The sweep's row, locked, if p_owner holds its lease; LeaseNotHeld (FC409) otherwise.
CREATE FUNCTION _hold_orphan_sweep(p_sweep text, p_owner text) RETURNS orphan_sweeps
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  s orphan_sweeps;
BEGIN
  SELECT * INTO s FROM orphan_sweeps WHERE sweep = p_sweep FOR UPDATE;
  IF s.lease_owner IS DISTINCT FROM p_owner OR s.lease_expires_at <= now() THEN
    RAISE EXCEPTION USING ERRCODE = 'FC409',
      MESSAGE = format('the %s orphan sweep''s lease is not held by %s', p_sweep, p_owner);
  END IF;
  RETURN s;
END
$$;

-- Take the touched sweep's lease and its window: the one in progress (resumed), or a new one,
-- [watermark - p_lookback_seconds, now()), whose touched datasets are listed now.
-- Returns {acquired, resumed, window_from, window_until, pending}.
CREATE FUNCTION begin_orphan_sweep(p_owner text, p_lease_seconds integer, p_lookback_seconds integer)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  s orphan_sweeps;
  v_resumed boolean;
BEGIN
  IF p_lookback_seconds IS NULL OR p_lookback_seconds < 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = 'the lookback must be >= 0 s';
  END IF;
  s := _take_orphan_sweep('touched', p_owner, p_lease_seconds);
  IF s IS NULL THEN
    RETURN jsonb_build_object('acquired', false, 'resumed', false, 'window_from', NULL, 'window_until', NULL,
                              'pending', 0);
  END IF;
  v_resumed := s.window_until IS NOT NULL;
  IF NOT v_resumed THEN
    s.window_from := coalesce(s.watermark, '-infinity') - make_interval(secs => p_lookback_seconds);
    s.window_until := now();
    -- A transaction that began before now() and commits after this statement has a timestamp in
    -- this window but is seen only by the next one, whose window starts p_lookback_seconds earlier.
    INSERT INTO orphan_sweep_datasets (dataset_id)
    SELECT dataset_id FROM compaction_runs WHERE updated_at >= s.window_from AND updated_at < s.window_until
    UNION
    SELECT dataset_id FROM dataset_files WHERE added_at >= s.window_from AND added_at < s.window_until
    UNION
    SELECT dataset_id FROM compaction_failures
    WHERE at >= s.window_from AND at < s.window_until AND dataset_id IS NOT NULL
    ON CONFLICT DO NOTHING;
    UPDATE orphan_sweeps SET window_from = s.window_from, window_until = s.window_until, updated_at = now()
    WHERE sweep = 'touched';
  END IF;
  RETURN jsonb_build_object('acquired', true, 'resumed', v_resumed, 'window_from', s.window_from,
    'window_until', s.window_until, 'pending', (SELECT count(*) FROM orphan_sweep_datasets));
END
$$;

-- The next touched datasets to sweep, in dataset order: [{dataset_id, start_after}].
CREATE FUNCTION next_orphan_sweep_datasets(p_owner text, p_limit integer DEFAULT 100) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
  PERFORM _hold_orphan_sweep('touched', p_owner);
  RETURN (
    SELECT coalesce(jsonb_agg(jsonb_build_object('dataset_id', dataset_id, 'start_after', start_after)
                              ORDER BY dataset_id), '[]'::jsonb)
    FROM (SELECT dataset_id, start_after FROM orphan_sweep_datasets
          ORDER BY dataset_id LIMIT least(greatest(p_limit, 1), 1000)) n);
END
$$;

-- Datasets swept to the end of their prefix (p_done), and how far into others the sweep got
-- (p_partial: [{dataset_id, start_after}]). When none is left, the window is finished: the
-- watermark moves to its end. Returns {pending, finished, watermark}.
CREATE FUNCTION record_orphan_sweep_progress(p_owner text, p_done uuid[], p_partial jsonb DEFAULT '[]')
RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  s orphan_sweeps;
  v_pending bigint;
BEGIN
  s := _hold_orphan_sweep('touched', p_owner);
  DELETE FROM orphan_sweep_datasets WHERE dataset_id = ANY (coalesce(p_done, '{}'));
  UPDATE orphan_sweep_datasets d SET start_after = p.start_after
  FROM jsonb_to_recordset(coalesce(p_partial, '[]')) AS p (dataset_id uuid, start_after text)
  WHERE d.dataset_id = p.dataset_id;
  SELECT count(*) INTO v_pending FROM orphan_sweep_datasets;
  IF v_pending = 0 AND s.window_until IS NOT NULL THEN
    UPDATE orphan_sweeps SET watermark = window_until, window_from = NULL, window_until = NULL, updated_at = now()
    WHERE sweep = 'touched' RETURNING * INTO s;
    RETURN jsonb_build_object('pending', 0, 'finished', true, 'watermark', s.watermark);
  END IF;
  UPDATE orphan_sweeps SET updated_at = now() WHERE sweep = 'touched';
  RETURN jsonb_build_object('pending', v_pending, 'finished', v_pending = 0, 'watermark', s.watermark);
END
$$;

-- Take the inventory sweep's lease and its report: the one in progress (resumed, from where it got
-- to), or p_report if it is due (no report finished yet, or p_report was created at least
-- p_every_seconds after the last one finished). Returns {acquired, report, report_created_at,
-- file, rows, resumed}; report is NULL when there is nothing to do.
CREATE FUNCTION begin_inventory_sweep(
  p_owner text, p_lease_seconds integer, p_every_seconds integer, p_report text DEFAULT NULL,
  p_report_created_at timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  s orphan_sweeps;
  v_resumed boolean;
BEGIN
  IF p_every_seconds IS NULL OR p_every_seconds < 0 OR (p_report IS NULL) <> (p_report_created_at IS NULL) THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422',
      MESSAGE = 'begin_inventory_sweep needs every_seconds >= 0, and a report with its creation time (or neither)';
  END IF;
  s := _take_orphan_sweep('inventory', p_owner, p_lease_seconds);
  IF s IS NULL THEN
    RETURN jsonb_build_object('acquired', false, 'report', NULL, 'report_created_at', NULL, 'file', 0, 'rows', 0,
                              'resumed', false);
  END IF;
  v_resumed := s.report IS NOT NULL;
  IF NOT v_resumed AND p_report IS NOT NULL AND p_report IS DISTINCT FROM s.last_report
     AND (s.last_report_created_at IS NULL
          OR p_report_created_at >= s.last_report_created_at + make_interval(secs => p_every_seconds)) THEN
    UPDATE orphan_sweeps SET report = p_report, report_created_at = p_report_created_at, report_file = 0,
      report_rows = 0, updated_at = now()
    WHERE sweep = 'inventory' RETURNING * INTO s;
  END IF;
  RETURN jsonb_build_object('acquired', true, 'report', s.report, 'report_created_at', s.report_created_at,
    'file', s.report_file, 'rows', s.report_rows, 'resumed', v_resumed);
END
$$;

-- How far into the report in progress the sweep got: every row before row p_rows of data file p_file.
CREATE FUNCTION record_inventory_progress(p_owner text, p_report text, p_file integer, p_rows bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  s orphan_sweeps;
BEGIN
  s := _hold_orphan_sweep('inventory', p_owner);
  IF s.report IS DISTINCT FROM p_report OR p_file IS NULL OR p_file < 0 OR p_rows IS NULL OR p_rows < 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422',
      MESSAGE = format('no progress of %s to record: the report in progress is %s', p_report, s.report);
  END IF;
  UPDATE orphan_sweeps SET report_file = p_file, report_rows = p_rows, updated_at = now() WHERE sweep = 'inventory';
END
$$;

-- The report in progress is done with: finished (it becomes the last report), or abandoned (its
-- files are gone): either way the next sweep takes the newest report.
CREATE FUNCTION finish_inventory_sweep(p_owner text, p_report text, p_completed boolean) RETURNS boolean
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  s orphan_sweeps;
BEGIN
  s := _hold_orphan_sweep('inventory', p_owner);
  IF s.report IS DISTINCT FROM p_report THEN
    RETURN false;
  END IF;
  UPDATE orphan_sweeps SET
    last_report = CASE WHEN p_completed THEN s.report ELSE last_report END,
    last_report_created_at = CASE WHEN p_completed THEN s.report_created_at ELSE last_report_created_at END,
    last_finished_at = CASE WHEN p_completed THEN now() ELSE last_finished_at END,
    report = NULL, report_created_at = NULL, report_file = 0, report_rows = 0, updated_at = now()
  WHERE sweep = 'inventory';
  RETURN true;
END
$$;

-- An invocation is done with the sweep (finished, or out of time with its place recorded): the next
-- one, whoever it is, may take it at once rather than when the lease runs out.
CREATE FUNCTION release_orphan_sweep(p_sweep text, p_owner text) RETURNS boolean
LANGUAGE sql SET search_path = public, pg_temp AS $$
  WITH released AS (
    UPDATE orphan_sweeps SET lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE sweep = p_sweep AND lease_owner = p_owner
    RETURNING 1
  )
  SELECT count(*) > 0 FROM released
$$;

-- Where both sweeps stand (operators, the scheduled run's report).
CREATE FUNCTION orphan_sweep_status() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT jsonb_build_object(
    'touched', (SELECT jsonb_build_object('watermark', watermark, 'window_from', window_from,
                  'window_until', window_until, 'pending', (SELECT count(*) FROM orphan_sweep_datasets),
                  'lease_owner', lease_owner, 'lease_expires_at', lease_expires_at)
                FROM orphan_sweeps WHERE sweep = 'touched'),
    'inventory', (SELECT jsonb_build_object('report', report, 'report_created_at', report_created_at,
                    'file', report_file, 'rows', report_rows, 'last_report', last_report,
                    'last_report_created_at', last_report_created_at, 'last_finished_at', last_finished_at,
                    'lease_owner', lease_owner, 'lease_expires_at', lease_expires_at)
                  FROM orphan_sweeps WHERE sweep = 'inventory'))
$$;

-- Same answer as 0002's, found by index: the run id is read out of the key (keys.compacted_key)
-- and looked up by primary key. 0002's compared every key with every queued or running run by
-- substring, which scans compaction_runs (one row per run ever) once per call.
CREATE OR REPLACE FUNCTION find_orphans(p_keys text[]) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT coalesce(jsonb_agg(k ORDER BY k), '[]'::jsonb)
  FROM unnest(p_keys) AS k
  WHERE NOT EXISTS (SELECT 1 FROM dataset_files f WHERE f.object_key = k)
    AND NOT EXISTS (
      SELECT 1 FROM compaction_runs r
      WHERE r.id = substring(k FROM '/compacted/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/')::uuid
        AND r.status IN ('queued', 'running'))
$$;

REVOKE ALL ON FUNCTION _take_orphan_sweep(text, text, integer), _hold_orphan_sweep(text, text),
  begin_orphan_sweep(text, integer, integer), next_orphan_sweep_datasets(text, integer),
  record_orphan_sweep_progress(text, uuid[], jsonb),
  begin_inventory_sweep(text, integer, integer, text, timestamptz),
  record_inventory_progress(text, text, integer, bigint), finish_inventory_sweep(text, text, boolean),
  release_orphan_sweep(text, text), orphan_sweep_status(), find_orphans(text[])
  FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION _take_orphan_sweep(text, text, integer), _hold_orphan_sweep(text, text),
  begin_orphan_sweep(text, integer, integer), next_orphan_sweep_datasets(text, integer),
  record_orphan_sweep_progress(text, uuid[], jsonb),
  begin_inventory_sweep(text, integer, integer, text, timestamptz),
  record_inventory_progress(text, text, integer, bigint), finish_inventory_sweep(text, text, boolean),
  release_orphan_sweep(text, text), orphan_sweep_status(), find_orphans(text[])
  TO service_role;
