-- The notes API's only table. Created by `web-app migrate` as the schema owner; the
-- runtime login reaches it through the owner's default privileges (see README.md).
CREATE TABLE IF NOT EXISTS notes (
    id         bigserial   PRIMARY KEY,
    body       text        NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    created_at timestamptz NOT NULL DEFAULT now()
);
