-- Serial-console sessions (DescribeInstanceVncUrl): a single-use URL token,
-- stored only as its SHA-256, valid for a few seconds. Redeeming it is one
-- conditional UPDATE (used = 0 AND expires_at > now), so any server of a
-- cluster can check a token and none can redeem it twice.

CREATE TABLE console_sessions (
    token_hash   TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL,
    app_id       BIGINT NOT NULL,
    instance_id  TEXT NOT NULL,
    host_id      TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used         BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);
