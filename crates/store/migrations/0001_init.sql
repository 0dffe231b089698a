-- gpucloud schema, version 1. One file for SQLite and PostgreSQL: only
-- BIGINT, TEXT and DOUBLE PRECISION columns, `$n` placeholders, standard
-- constraints. Times are Unix milliseconds. Booleans are 0/1 BIGINTs.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    app_id          BIGINT PRIMARY KEY,
    uin             BIGINT NOT NULL UNIQUE,
    name            TEXT NOT NULL UNIQUE,
    instance_quota  BIGINT NOT NULL,
    -- Instances not yet terminated; kept in the transactions that create and
    -- terminate instances, so the quota check is one conditional UPDATE.
    instance_count  BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL
);

CREATE TABLE api_keys (
    secret_id          TEXT PRIMARY KEY,
    app_id             BIGINT NOT NULL REFERENCES tenants(app_id),
    secret_key_sealed  TEXT NOT NULL,
    status             TEXT NOT NULL,
    created_at         BIGINT NOT NULL
);
CREATE INDEX api_keys_app ON api_keys(app_id);

CREATE TABLE hosts (
    host_id              TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    zone                 TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    gpu_model            TEXT,
    cpu_total            BIGINT NOT NULL,
    mem_total_mib        BIGINT NOT NULL,
    cpu_used             BIGINT NOT NULL DEFAULT 0,
    mem_used_mib         BIGINT NOT NULL DEFAULT 0,
    runtimes             TEXT NOT NULL,
    rack                 TEXT NOT NULL,
    switch_name          TEXT NOT NULL,
    state                TEXT NOT NULL,
    state_reason         TEXT NOT NULL DEFAULT '',
    generation           BIGINT NOT NULL DEFAULT 1,
    observed_generation  BIGINT NOT NULL DEFAULT 0,
    inventory            TEXT NOT NULL,
    last_seen            BIGINT NOT NULL,
    created_at           BIGINT NOT NULL
);
CREATE INDEX hosts_zone ON hosts(zone);

CREATE TABLE gpus (
    gpu_id         TEXT PRIMARY KEY,
    host_id        TEXT NOT NULL REFERENCES hosts(host_id),
    idx            BIGINT NOT NULL,
    model          TEXT NOT NULL,
    pci_address    TEXT NOT NULL,
    numa_node      BIGINT NOT NULL,
    nvlink_domain  BIGINT,
    memory_mib     BIGINT NOT NULL,
    health         TEXT NOT NULL,
    health_reason  TEXT NOT NULL DEFAULT '',
    UNIQUE (host_id, idx)
);

CREATE TABLE images (
    image_id     TEXT PRIMARY KEY,
    app_id       BIGINT,
    name         TEXT NOT NULL,
    os_name      TEXT NOT NULL,
    platform     TEXT NOT NULL,
    description  TEXT NOT NULL,
    size_gib     BIGINT NOT NULL,
    architecture TEXT NOT NULL,
    image_type   TEXT NOT NULL,
    source       TEXT NOT NULL,
    state        TEXT NOT NULL,
    runtime      TEXT NOT NULL,
    location     TEXT NOT NULL DEFAULT '',
    gpu_driver   BIGINT NOT NULL DEFAULT 0,
    tags         TEXT NOT NULL DEFAULT '[]',
    created_at   BIGINT NOT NULL
);

CREATE TABLE vpcs (
    vpc_id      TEXT PRIMARY KEY,
    app_id      BIGINT NOT NULL,
    name        TEXT NOT NULL,
    cidr        TEXT NOT NULL,
    is_default  BIGINT NOT NULL,
    default_key TEXT UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE subnets (
    subnet_id    TEXT PRIMARY KEY,
    vpc_id       TEXT NOT NULL REFERENCES vpcs(vpc_id),
    app_id       BIGINT NOT NULL,
    zone         TEXT NOT NULL,
    name         TEXT NOT NULL,
    cidr         TEXT NOT NULL,
    is_default   BIGINT NOT NULL,
    default_key  TEXT UNIQUE,
    next_offset  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE ip_allocations (
    subnet_id    TEXT NOT NULL,
    ip           TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    PRIMARY KEY (subnet_id, ip)
);
CREATE INDEX ip_allocations_instance ON ip_allocations(instance_id);

CREATE TABLE placement_groups (
    group_id         TEXT PRIMARY KEY,
    app_id           BIGINT NOT NULL,
    name             TEXT NOT NULL,
    group_type       TEXT NOT NULL,
    quota            BIGINT NOT NULL,
    affinity         BIGINT NOT NULL,
    strategy         TEXT NOT NULL,
    partition_count  BIGINT NOT NULL,
    tags             TEXT NOT NULL DEFAULT '[]',
    lock_version     BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL
);
CREATE INDEX placement_groups_app ON placement_groups(app_id);

CREATE TABLE key_pairs (
    key_id       TEXT PRIMARY KEY,
    app_id       BIGINT NOT NULL,
    name         TEXT NOT NULL,
    project_id   BIGINT NOT NULL,
    description  TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    tags         TEXT NOT NULL DEFAULT '[]',
    created_at   BIGINT NOT NULL,
    UNIQUE (app_id, name),
    UNIQUE (app_id, fingerprint)
);

CREATE TABLE instances (
    instance_id                  TEXT PRIMARY KEY,
    app_id                       BIGINT NOT NULL,
    uuid                         TEXT NOT NULL,
    name                         TEXT NOT NULL,
    host_name                    TEXT NOT NULL,
    zone                         TEXT NOT NULL,
    project_id                   BIGINT NOT NULL,
    instance_type                TEXT NOT NULL,
    cpu                          BIGINT NOT NULL,
    memory_gib                   BIGINT NOT NULL,
    gpu_count                    BIGINT NOT NULL,
    image_id                     TEXT NOT NULL,
    runtime                      TEXT NOT NULL,
    charge_type                  TEXT NOT NULL,
    prepaid_period               BIGINT,
    renew_flag                   TEXT,
    expired_at                   BIGINT,
    state                        TEXT NOT NULL,
    latest_operation             TEXT,
    latest_operation_state       TEXT,
    latest_operation_request_id  TEXT,
    latest_operation_error       TEXT,
    host_id                      TEXT,
    resources_held               BIGINT NOT NULL,
    prev_host_id                 TEXT,
    prev_cpu                     BIGINT NOT NULL DEFAULT 0,
    prev_mem_mib                 BIGINT NOT NULL DEFAULT 0,
    spec_generation              BIGINT NOT NULL,
    observed_generation          BIGINT NOT NULL DEFAULT 0,
    reboot_seq                   BIGINT NOT NULL DEFAULT 0,
    stop_type                    TEXT,
    stopped_mode                 TEXT,
    disable_api_termination      BIGINT NOT NULL,
    user_data                    TEXT,
    password_sealed              TEXT,
    system_disk                  TEXT NOT NULL,
    data_disks                   TEXT NOT NULL,
    internet                     TEXT NOT NULL,
    vpc_id                       TEXT,
    subnet_id                    TEXT,
    private_ip                   TEXT,
    security_group_ids           TEXT NOT NULL,
    placement_group_id           TEXT,
    tags                         TEXT NOT NULL,
    client_token                 TEXT,
    created_at                   BIGINT NOT NULL,
    updated_at                   BIGINT NOT NULL,
    terminated_at                BIGINT
);
CREATE INDEX instances_app_state ON instances(app_id, state);
CREATE INDEX instances_host ON instances(host_id);
CREATE INDEX instances_prev_host ON instances(prev_host_id);
CREATE INDEX instances_group ON instances(placement_group_id);

CREATE TABLE instance_key_pairs (
    instance_id  TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    PRIMARY KEY (instance_id, key_id)
);
CREATE INDEX instance_key_pairs_key ON instance_key_pairs(key_id);

-- One row per GPU an instance holds. The primary key is what makes double
-- allocation impossible: a second claim of the same GPU fails to insert.
-- `released` = 1 means the instance no longer wants the GPU but its host has
-- not yet confirmed letting go; the row keeps the GPU taken until it does.
CREATE TABLE gpu_claims (
    gpu_id       TEXT PRIMARY KEY REFERENCES gpus(gpu_id),
    instance_id  TEXT NOT NULL,
    host_id      TEXT NOT NULL,
    released     BIGINT NOT NULL DEFAULT 0,
    claimed_at   BIGINT NOT NULL
);
CREATE INDEX gpu_claims_instance ON gpu_claims(instance_id);
CREATE INDEX gpu_claims_host ON gpu_claims(host_id);

CREATE TABLE client_tokens (
    app_id      BIGINT NOT NULL,
    action      TEXT NOT NULL,
    token       TEXT NOT NULL,
    result      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, action, token)
);
