-- A presigned upload that register_staged_upload rejected (no valid ticket, a size that is not the
-- declared one, bytes that are no Parquet fragment) is recorded as a failure with its dataset and a
-- body (the ticket, or the key), so the owner and the operator see why. It was also redrivable:
-- dlq-redrive then sent that body to the compaction queue, where a key is no compaction message
-- (back to the DLQ) and a ticket parses as a manual run of the rejected upload's dataset. The
-- rejected object is already deleted, so nothing could ever be redriven: a rejection is permanent.
-- Its error_step is 'RegisterUpload' (logic/presigned.py's REGISTER_STEP).

CREATE OR REPLACE FUNCTION list_redrivable_failures(p_limit integer DEFAULT 10) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('id', f.id, 'dataset_id', f.dataset_id, 'body', f.body)
                            ORDER BY f.at, f.id), '[]'::jsonb)
  FROM (SELECT * FROM compaction_failures
        WHERE redriven_at IS NULL AND body IS NOT NULL AND dataset_id IS NOT NULL
          AND error_step IS DISTINCT FROM 'RegisterUpload'
        ORDER BY at, id LIMIT least(greatest(p_limit, 1), 100)) f
$$;
