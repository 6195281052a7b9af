-- Keep the latest failure of a path at a stage (re-running a stage does not pile up rows).
INSERT INTO failures (path, stage, error, recorded_at)
VALUES ($path, $stage, $error, current_timestamp)
ON CONFLICT (path, stage) DO UPDATE SET
    error = excluded.error,
    recorded_at = excluded.recorded_at;
