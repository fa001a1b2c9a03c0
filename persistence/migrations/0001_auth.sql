-- The auth service's accounts. Keys are normalised in Python (username_key is
-- the lower-cased username, email is stored lower-cased) so uniqueness does not
-- depend on the database's collation.
CREATE SCHEMA auth;

CREATE TABLE auth.users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL,
    username_key  text NOT NULL UNIQUE,
    email         text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
