-- The progression service's meta progression, one row per user.
CREATE SCHEMA progression;

CREATE TABLE progression.progressions (
    user_id uuid PRIMARY KEY,
    level   integer NOT NULL CHECK (level >= 1),
    xp      bigint NOT NULL CHECK (xp >= 0),
    weapons text[] NOT NULL,
    skills  text[] NOT NULL
);
