-- The operator console (docs/operations.md, "The console"): who may use /v1/admin/
-- (granted by `outpost operator grant`, never over HTTP), and accounts an operator
-- disabled (their tokens stop working and their logins are refused).
ALTER TABLE auth.users
    ADD COLUMN operator    boolean NOT NULL DEFAULT false,
    ADD COLUMN disabled_at timestamptz;

-- The disabled few, read by every api process at start and every few seconds.
CREATE INDEX users_disabled ON auth.users (id) WHERE disabled_at IS NOT NULL;
