-- Redrive from the record. The DLQ Lambda records and acknowledges every message (so the DLQ
-- never loops), which leaves the DLQ itself empty: the failures table, which keeps each original
-- body, is what an operator redrives from once the cause is fixed.

ALTER TABLE compaction_failures ADD COLUMN redriven_at timestamptz;
CREATE INDEX compaction_failures_redrivable_idx ON compaction_failures (at)
  WHERE redriven_at IS NULL AND body IS NOT NULL AND dataset_id IS NOT NULL;

-- Failures not yet redriven, oldest first. Only those that name a dataset: a body that never
-- parsed (no dataset) can never succeed, and sending it again would only fill the DLQ again. The caller sends each body, then marks it: a crash
-- in between sends it again later (a duplicate run is skipped by the lease), never loses it.
CREATE FUNCTION list_redrivable_failures(p_limit integer DEFAULT 10) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('id', f.id, 'dataset_id', f.dataset_id, 'body', f.body)
                            ORDER BY f.at, f.id), '[]'::jsonb)
  FROM (SELECT * FROM compaction_failures
        WHERE redriven_at IS NULL AND body IS NOT NULL AND dataset_id IS NOT NULL
        ORDER BY at, id LIMIT least(greatest(p_limit, 1), 100)) f
$$;

CREATE FUNCTION mark_failures_redriven(p_ids bigint[]) RETURNS integer
LANGUAGE sql SET search_path = public, pg_temp AS $$
  WITH marked AS (
    UPDATE compaction_failures SET redriven_at = now()
    WHERE id = ANY (p_ids) AND redriven_at IS NULL
    RETURNING 1
  )
  SELECT count(*)::integer FROM marked
$$;

REVOKE ALL ON FUNCTION list_redrivable_failures(integer), mark_failures_redriven(bigint[])
  FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION list_redrivable_failures(integer), mark_failures_redriven(bigint[]) TO service_role;
