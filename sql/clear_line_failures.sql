-- Forget the import failures of malformed lines of one annotations file (path "<file>:<line>")
-- before it is read again: line numbers do not identify anything across edits.
DELETE FROM failures WHERE stage = $stage AND starts_with(path, $prefix);
