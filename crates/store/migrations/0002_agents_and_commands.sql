-- Remote agents join with short-lived tokens; commands run inside instances
-- (Tencent TAT). Same portability rules as 0001.

CREATE TABLE join_tokens (
    token_id     TEXT PRIMARY KEY,
    secret_hash  TEXT NOT NULL,
    description  TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    uses_left    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE commands (
    command_id         TEXT PRIMARY KEY,
    app_id             BIGINT NOT NULL,
    name               TEXT NOT NULL,
    description        TEXT NOT NULL,
    content            TEXT NOT NULL,
    command_type       TEXT NOT NULL,
    working_directory  TEXT NOT NULL,
    timeout_s          BIGINT NOT NULL,
    username           TEXT NOT NULL,
    saved              BIGINT NOT NULL,
    created_at         BIGINT NOT NULL
);
CREATE INDEX commands_app ON commands(app_id);

CREATE TABLE invocations (
    invocation_id  TEXT PRIMARY KEY,
    app_id         BIGINT NOT NULL,
    command_id     TEXT NOT NULL,
    description    TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX invocations_app ON invocations(app_id, created_at);

CREATE TABLE invocation_tasks (
    task_id        TEXT PRIMARY KEY,
    invocation_id  TEXT NOT NULL,
    app_id         BIGINT NOT NULL,
    instance_id    TEXT NOT NULL,
    host_id        TEXT NOT NULL,
    status         TEXT NOT NULL,
    exit_code      BIGINT,
    output         TEXT NOT NULL DEFAULT '',
    dropped        BIGINT NOT NULL DEFAULT 0,
    error_info     TEXT NOT NULL DEFAULT '',
    exec_start     BIGINT,
    exec_end       BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX invocation_tasks_invocation ON invocation_tasks(invocation_id);
CREATE INDEX invocation_tasks_host ON invocation_tasks(host_id, status);
CREATE INDEX invocation_tasks_app ON invocation_tasks(app_id, created_at);

-- Certificates issued to host agents at join: the SHA-256 of the DER is the
-- agent's identity on the mutual-TLS channel. Deleting a row revokes it.
CREATE TABLE agent_certs (
    fingerprint  TEXT PRIMARY KEY,
    host_id      TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX agent_certs_host ON agent_certs(host_id);

-- Operator state (ACTIVE, CORDONED, DRAINING), apart from the agent state in
-- hosts.state so that a cordoned host that drops off and returns stays cordoned.
ALTER TABLE hosts ADD COLUMN admin_state TEXT NOT NULL DEFAULT 'ACTIVE';
