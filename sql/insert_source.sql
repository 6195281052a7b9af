-- Insert a source, or replace what is known about it (the file or its record changed).
INSERT INTO sources
    (source_id, path, content_hash, record_hash, kind, duration, fps, width, height, codec, imported_at)
VALUES
    ($source_id, $path, $content_hash, $record_hash, $kind, $duration, $fps, $width, $height, $codec,
     current_timestamp)
ON CONFLICT (source_id) DO UPDATE SET
    path = excluded.path,
    content_hash = excluded.content_hash,
    record_hash = excluded.record_hash,
    kind = excluded.kind,
    duration = excluded.duration,
    fps = excluded.fps,
    width = excluded.width,
    height = excluded.height,
    codec = excluded.codec,
    imported_at = excluded.imported_at;
