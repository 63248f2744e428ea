-- Arrow schemas by fingerprint. Every file in dataset_files names its schema's fingerprint; with
-- the schemas themselves at hand, the Compact step unifies a bin's schemas without first reading
-- every input's footer, so each input is read once (one GET instead of two; ~8% less time in
-- bench/RESULTS.md). A cache, not a source of truth: the engine checks each input against the
-- schema it is given and falls back to reading footers first, so a missing or wrong row here only
-- costs time. Rows are tiny (a few KB) and few (one per client version and table), never deleted.
CREATE TABLE arrow_schemas (
  fingerprint text PRIMARY KEY CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
  ipc_base64 text NOT NULL CHECK (length(ipc_base64) BETWEEN 1 AND 1048576),  -- Arrow IPC schema
  added_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE arrow_schemas ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON arrow_schemas FROM anon, authenticated;
GRANT ALL ON arrow_schemas TO service_role;

-- p_schemas: {"<fingerprint>": "<base64 Arrow IPC schema>", ...}. Idempotent: the first schema
-- recorded for a fingerprint stays (schemas with one fingerprint unify alike). Returns how many
-- were new.
CREATE FUNCTION register_schemas(p_schemas jsonb) RETURNS integer
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_added integer;
BEGIN
  IF p_schemas IS NULL OR jsonb_typeof(p_schemas) <> 'object'
     OR EXISTS (SELECT 1 FROM jsonb_each(p_schemas) s WHERE jsonb_typeof(s.value) <> 'string') THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = 'schemas must be an object of fingerprint: base64 string';
  END IF;
  WITH added AS (
    INSERT INTO arrow_schemas (fingerprint, ipc_base64)
    SELECT s.key, s.value #>> '{}' FROM jsonb_each(p_schemas) s
    ORDER BY s.key  -- one lock order for concurrent callers
    ON CONFLICT (fingerprint) DO NOTHING
    RETURNING 1
  )
  SELECT count(*)::integer INTO v_added FROM added;
  RETURN v_added;
EXCEPTION
  WHEN check_violation THEN
    RAISE EXCEPTION USING ERRCODE = 'FC422', MESSAGE = SQLERRM;
END
$$;

-- The known ones among p_fingerprints, as {"<fingerprint>": "<base64>"}; unknown ones are absent.
CREATE FUNCTION get_schemas(p_fingerprints text[]) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT coalesce(jsonb_object_agg(fingerprint, ipc_base64), '{}'::jsonb)
  FROM arrow_schemas WHERE fingerprint = ANY (p_fingerprints)
$$;

REVOKE ALL ON FUNCTION register_schemas(jsonb), get_schemas(text[]) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION register_schemas(jsonb), get_schemas(text[]) TO service_role;
