-- A join token may be issued for one existing host: the only way to join a
-- host ID that already joined (a reinstalled machine, a lost certificate).
-- Joining with it replaces that host's certificates. A token without a host
-- joins new hosts only, so a token holder cannot take over a host.

ALTER TABLE join_tokens ADD COLUMN host_id TEXT;
