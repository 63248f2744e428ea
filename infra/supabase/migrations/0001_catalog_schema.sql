-- FUSOU compaction catalog: tables, indexes, row-level security.
-- Applied by `fusou-compaction db migrate` (local, tests, Supabase's pooler) or `supabase db push`.

-- Supabase provides these roles and auth.uid(); a plain PostgreSQL (local stack, tests) gets
-- stand-ins with the same names and semantics, so the same policies are tested here.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE service_role NOLOGIN BYPASSRLS;
  END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

DO $$
BEGIN
  IF NOT EXISTS (
    SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'auth' AND p.proname = 'uid'
  ) THEN
    -- Same definition as Supabase's: the `sub` claim of the request's JWT.
    EXECUTE $f$
      CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $body$
        SELECT coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
      $body$
    $f$;
  END IF;
END
$$;

CREATE TABLE datasets (
  id                uuid PRIMARY KEY,
  owner_id          uuid NOT NULL,
  name              text,
  compaction_needed boolean NOT NULL DEFAULT false,
  -- A lease, not an "in progress" flag: a crashed run's lease expires on its own.
  lease_owner       uuid,
  lease_expires_at  timestamptz,
  -- Set when the scheduler enqueues the dataset, so overlapping triggers never enqueue it twice.
  claimed_by        text,
  claim_expires_at  timestamptz,
  last_compacted_at timestamptz,
  live_fragments    integer NOT NULL DEFAULT 0 CHECK (live_fragments >= 0),
  live_compacted    integer NOT NULL DEFAULT 0 CHECK (live_compacted >= 0),
  live_bytes        bigint  NOT NULL DEFAULT 0 CHECK (live_bytes >= 0),
  live_rows         bigint  NOT NULL DEFAULT 0 CHECK (live_rows >= 0),
  compactions       integer NOT NULL DEFAULT 0,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT lease_is_whole CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
  CONSTRAINT claim_is_whole CHECK ((claimed_by IS NULL) = (claim_expires_at IS NULL))
);
CREATE INDEX datasets_owner_idx ON datasets (owner_id);
CREATE INDEX datasets_pending_idx ON datasets (updated_at) WHERE compaction_needed;

CREATE TABLE compaction_runs (
  id              uuid PRIMARY KEY,
  dataset_id      uuid NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
  trigger         text NOT NULL CHECK (trigger IN ('manual', 'scheduled', 'realtime')),
  execution_id    text,
  status          text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'skipped', 'failed')),
  status_reason   text,
  message         jsonb,
  step_timings    jsonb NOT NULL DEFAULT '{}'::jsonb,
  files_in        integer,
  files_out       integer,
  bytes_in        bigint,
  bytes_out       bigint,
  rows_in         bigint,
  rows_out        bigint,
  error_step      text,
  error           text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  started_at      timestamptz,
  finished_at     timestamptz,
  committed_at    timestamptz,
  updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX compaction_runs_dataset_idx ON compaction_runs (dataset_id, created_at DESC);

CREATE TABLE dataset_files (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  dataset_id         uuid NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
  table_name         text NOT NULL CHECK (table_name ~ '^[a-z][a-z0-9_]{0,62}$'),
  kind               text NOT NULL CHECK (kind IN ('fragment', 'compacted')),
  object_key         text NOT NULL UNIQUE,
  size_bytes         bigint NOT NULL CHECK (size_bytes >= 0),
  row_count          bigint NOT NULL CHECK (row_count >= 0),
  sha256             text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  schema_fingerprint text NOT NULL,
  -- Upload order. A compacted file takes the position of its earliest input, so a fragment
  -- uploaded during the run still sorts after the rows that were compacted.
  seq                bigint NOT NULL,
  added_at           timestamptz NOT NULL DEFAULT now(),
  added_by_run       uuid REFERENCES compaction_runs (id) ON DELETE SET NULL,
  removed_at         timestamptz,
  removed_by_run     uuid REFERENCES compaction_runs (id) ON DELETE SET NULL,
  -- Replaced objects stay readable for a grace period (readers that listed them keep working).
  delete_after       timestamptz,
  object_deleted_at  timestamptz,
  CONSTRAINT fragment_has_sha CHECK (kind <> 'fragment' OR sha256 IS NOT NULL),
  CONSTRAINT removal_is_whole CHECK ((removed_at IS NULL) = (delete_after IS NULL))
);
CREATE SEQUENCE dataset_files_seq OWNED BY dataset_files.seq;
ALTER TABLE dataset_files ALTER COLUMN seq SET DEFAULT nextval('dataset_files_seq');
-- Dedupe by content, across the fragment's whole history: re-uploading bytes that were
-- already compacted must not add their rows twice.
CREATE UNIQUE INDEX dataset_files_fragment_sha_idx
  ON dataset_files (dataset_id, table_name, sha256) WHERE kind = 'fragment';
CREATE INDEX dataset_files_live_idx
  ON dataset_files (dataset_id, table_name, seq) WHERE removed_at IS NULL;
CREATE INDEX dataset_files_garbage_idx
  ON dataset_files (delete_after) WHERE removed_at IS NOT NULL AND object_deleted_at IS NULL;

-- Failures that reached the DLQ (or the workflow's failure path). The dataset may be unknown
-- (a message for a dataset that does not exist), so there is no foreign key.
CREATE TABLE compaction_failures (
  id          bigserial PRIMARY KEY,
  source      text NOT NULL CHECK (source IN ('dlq', 'workflow')),
  message_id  text,
  dataset_id  uuid,
  run_id      uuid,
  error_step  text,
  error       text NOT NULL,
  body        text,
  at          timestamptz NOT NULL DEFAULT now()
);
-- A redelivered DLQ message is recorded once.
CREATE UNIQUE INDEX compaction_failures_message_idx ON compaction_failures (source, message_id)
  WHERE message_id IS NOT NULL;
CREATE INDEX compaction_failures_at_idx ON compaction_failures (at DESC);

-- Row-level security: only the service role (BYPASSRLS) writes; a signed-in user reads only
-- their own datasets and what hangs off them. No INSERT/UPDATE/DELETE policies exist.
ALTER TABLE datasets ENABLE ROW LEVEL SECURITY;
ALTER TABLE dataset_files ENABLE ROW LEVEL SECURITY;
ALTER TABLE compaction_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE compaction_failures ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON datasets, dataset_files, compaction_runs, compaction_failures FROM anon, authenticated;
GRANT SELECT ON datasets, dataset_files, compaction_runs TO authenticated;
GRANT ALL ON datasets, dataset_files, compaction_runs, compaction_failures TO service_role;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO service_role;

CREATE POLICY datasets_owner_read ON datasets FOR SELECT TO authenticated
  USING (owner_id = auth.uid());
CREATE POLICY dataset_files_owner_read ON dataset_files FOR SELECT TO authenticated
  USING (EXISTS (SELECT 1 FROM datasets d WHERE d.id = dataset_id AND d.owner_id = auth.uid()));
CREATE POLICY compaction_runs_owner_read ON compaction_runs FOR SELECT TO authenticated
  USING (EXISTS (SELECT 1 FROM datasets d WHERE d.id = dataset_id AND d.owner_id = auth.uid()));
