-- The building service's base buildings: one row per user and kind.
CREATE SCHEMA buildings;

CREATE TABLE buildings.buildings (
    user_id    uuid NOT NULL,
    kind       text NOT NULL,
    level      integer NOT NULL CHECK (level >= 1),
    ordinal    smallint NOT NULL,
    PRIMARY KEY (user_id, kind)
);
