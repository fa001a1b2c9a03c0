-- The player service's players, provisioned from `user.registered`.
CREATE SCHEMA players;

CREATE TABLE players.players (
    user_id    uuid PRIMARY KEY,
    username   text NOT NULL,
    created_at timestamptz NOT NULL
);
