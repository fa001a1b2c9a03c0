-- What the player and progression services make of `combat.killed`, each exactly once per
-- event however often it is delivered: the events each has counted, and the counts.
ALTER TABLE players.players
    ADD COLUMN kills  integer NOT NULL DEFAULT 0 CHECK (kills >= 0),
    ADD COLUMN deaths integer NOT NULL DEFAULT 0 CHECK (deaths >= 0);

CREATE TABLE players.kills_counted (
    event_id uuid PRIMARY KEY
);

CREATE TABLE progression.kills_awarded (
    event_id uuid PRIMARY KEY
);
