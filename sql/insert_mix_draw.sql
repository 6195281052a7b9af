INSERT INTO mix_draws (run_id, mix_name, seed, draw_idx, component, source_id, task, idx)
VALUES ($run_id, $mix_name, $seed, $draw_idx, $component, $source_id, $task, $idx);
