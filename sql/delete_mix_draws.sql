DELETE FROM mix_draws WHERE run_id = $run_id;
