-- Serial consoles across servers (PostgreSQL clusters). The tenant's
-- WebSocket is on one server, the host agent's relay exchanges may reach
-- another: the bytes go through the database. A redeemed session is live
-- while the WebSocket's server keeps `ws_seen_at` fresh and nobody has set
-- `ended_at`; `end_reason` is why the host agent could not serve it (shown
-- to the tenant), NULL unless the agent failed it. `console_relay` holds the
-- bytes not yet taken: 'in' (tenant → VM) and 'out' (VM → tenant), base64,
-- in `seq` order.
-- One server (SQLite) relays in memory and leaves these empty.

ALTER TABLE console_sessions ADD COLUMN ws_seen_at BIGINT;
ALTER TABLE console_sessions ADD COLUMN agent_seen_at BIGINT;
ALTER TABLE console_sessions ADD COLUMN ended_at BIGINT;
ALTER TABLE console_sessions ADD COLUMN end_reason TEXT;
CREATE INDEX console_sessions_session ON console_sessions(session_id);
CREATE INDEX console_sessions_host ON console_sessions(host_id);

CREATE TABLE console_relay (
    session_id  TEXT NOT NULL,
    direction   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (session_id, direction, seq)
);
