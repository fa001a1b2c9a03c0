-- Sessions that can end (docs/protocol.md, "Auth"): each login or registration starts a
-- session (a family of refresh tokens); its access tokens name it (`sid`). A refresh
-- token is kept only as its SHA-256 (it is 256 random bits: a hash of it cannot be
-- guessed back), is used up by its first refresh, and its second use ends its session.
CREATE TABLE auth.sessions (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX sessions_user ON auth.sessions (user_id) WHERE revoked_at IS NULL;
-- The recently ended, read by every api process at start and every few seconds.
CREATE INDEX sessions_revoked ON auth.sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE auth.refresh_tokens (
    hash        bytea PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES auth.sessions (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session ON auth.refresh_tokens (session_id);
