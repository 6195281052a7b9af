-- Keep the latest note of a file (re-importing it does not pile up rows).
INSERT INTO import_notes (path, note, recorded_at)
VALUES ($path, $note, current_timestamp)
ON CONFLICT (path) DO UPDATE SET
    note = excluded.note,
    recorded_at = excluded.recorded_at;
