INSERT INTO annotations
    (source_id, task, idx, text, question, answer, label, start_s, end_s, attributes)
VALUES
    ($source_id, $task, $idx, $text, $question, $answer, $label, $start_s, $end_s, $attributes);
