-- Why the host cannot bring an instance to its desired state right now (a
-- running instance whose VM would not start again, a removal that fails).
-- The agent keeps trying; the API shows it in LatestOperationErrorMsg. NULL
-- when the host reports the instance as it should be. Errors that end an
-- operation go to latest_operation_error instead.

ALTER TABLE instances ADD COLUMN host_error TEXT;
