-- Events that must not be lost, written in the same transaction as the facts
-- they announce and deleted by the relay once JetStream has acknowledged them.
CREATE SCHEMA outbox;

CREATE TABLE outbox.events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject    text NOT NULL,
    msg_id     text NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
