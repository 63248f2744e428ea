-- anon and authenticated keep no rights beyond what row-level security is designed around.
--
-- A Supabase project's default privileges grant ALL on every table, sequence and function
-- created in public to anon, authenticated and service_role. 0001–0004 revoke them on the
-- catalog's tables and functions, but not on the sequences (anon could nextval/setval them) nor
-- on the migration runner's schema_migrations (RLS does not cover TRUNCATE: anon could empty it,
-- and the next `migrate` would try to apply every migration again). This closes both, and stops the
-- migrating role's future objects in public from being born with those grants.
--
-- Only the catalog's own objects are touched, by name: the project's public schema may also hold
-- the FUSOU app's tables and functions, whose grants are not ours to change. Every statement is
-- a REVOKE or a GRANT, so applying it again changes nothing.

-- Tables: nothing for anon; authenticated reads its own datasets, files and runs (the policies of
-- 0001 filter the rows). Restated in full so the grants of the catalog are in one place.
REVOKE ALL ON datasets, dataset_files, compaction_runs, compaction_failures, arrow_schemas
  FROM PUBLIC, anon, authenticated;
GRANT SELECT ON datasets, dataset_files, compaction_runs TO authenticated;

-- Sequences: only the service role draws from them (its USAGE, SELECT is granted in 0001).
REVOKE ALL ON SEQUENCE dataset_files_seq, compaction_failures_id_seq FROM PUBLIC, anon, authenticated;

-- The runner (fusou_compaction.catalog.migrate) creates public.schema_migrations before it
-- applies any migration; `supabase db push` keeps its record in supabase_migrations instead, so
-- on a project migrated that way the table is absent. It has no sequence (the key is text).
DO $$
BEGIN
  IF to_regclass('public.schema_migrations') IS NOT NULL THEN
    REVOKE ALL ON public.schema_migrations FROM PUBLIC, anon, authenticated;
  END IF;
END
$$;

-- Functions: 0002–0004 revoke EXECUTE from PUBLIC, anon and authenticated on each one.

-- Future objects. Supabase's defaults are per schema (IN SCHEMA public), so revoking per schema
-- removes them. This changes the defaults of the role running the migrations (postgres on
-- Supabase); those of supabase_admin cannot be changed by postgres, and only cover objects
-- supabase_admin itself creates. PUBLIC's EXECUTE on new functions is PostgreSQL's built-in,
-- global default and cannot be revoked per schema: a migration adding a function must still
-- `REVOKE ALL ON FUNCTION … FROM PUBLIC, anon, authenticated` as 0002–0004 do (the tests check
-- every function in public).
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON FUNCTIONS FROM anon, authenticated;
