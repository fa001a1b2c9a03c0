-- The character service's characters. name_key is the case-folded name: names
-- are unique per user regardless of case. ordinal orders a user's list oldest
-- first even when two characters share a created_at.
CREATE SCHEMA characters;

CREATE TABLE characters.characters (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    name       text NOT NULL,
    name_key   text NOT NULL,
    class      text NOT NULL CHECK (class IN ('recruit', 'scout', 'engineer', 'medic', 'heavy')),
    zone_id    text NOT NULL,
    x          double precision NOT NULL DEFAULT 0,
    y          double precision NOT NULL DEFAULT 0,
    active     boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ordinal    bigint GENERATED ALWAYS AS IDENTITY,
    UNIQUE (user_id, name_key)
);

CREATE INDEX characters_by_user ON characters.characters (user_id, ordinal);
-- One active character per user, enforced by the database.
CREATE UNIQUE INDEX characters_one_active ON characters.characters (user_id) WHERE active;
