-- Whether an image runs a command agent TAT can reach (the QEMU guest agent
-- in VM images; container images are always reachable through the runtime).
-- RunCommand on an instance whose image has none is refused up front with
-- ResourceUnavailable.AgentNotInstalled instead of failing on the host.

ALTER TABLE images ADD COLUMN guest_agent BIGINT NOT NULL DEFAULT 1;
