-- The fragment of (dataset, table) with these bytes, live or already compacted, or null.
--
-- Uploads look it up before writing the object: bytes the catalog already knows are a duplicate
-- and are never written again. Before this, re-uploading bytes that had been compacted (and
-- their object deleted after the grace period) stored the object again, then register_fragment
-- answered "duplicate": an object the catalog named as removed, so no sweep would delete it.
-- register_fragment still decides atomically; this is only the cheap question asked first.
CREATE FUNCTION find_fragment(p_dataset_id uuid, p_table text, p_sha256 text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
  SELECT _file_json(f) FROM dataset_files f
  WHERE f.dataset_id = p_dataset_id AND f.table_name = p_table AND f.kind = 'fragment' AND f.sha256 = p_sha256
  LIMIT 1
$$;

REVOKE ALL ON FUNCTION find_fragment(uuid, text, text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION find_fragment(uuid, text, text) TO service_role;
