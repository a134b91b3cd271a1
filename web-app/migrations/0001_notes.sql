-- The notes API's only table. Owned by whichever login first ran it; with the
-- alternating-users strategy the clone role is a member of the original, so both reach it.
CREATE TABLE IF NOT EXISTS notes (
    id         bigserial   PRIMARY KEY,
    body       text        NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    created_at timestamptz NOT NULL DEFAULT now()
);
