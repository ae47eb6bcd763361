-- compare_run_overhead: the recorder's own cost in each run, one row per run.
-- parameters: none
-- columns: tag, scenario, run (folder names), samples (one a second),
--   overhead_pct (mean of the samples: recorder CPU + BPF run time over wall x CPUs, %)
SELECT
    CAST(tag AS VARCHAR) AS tag,
    CAST(scenario AS VARCHAR) AS scenario,
    CAST(run AS VARCHAR) AS run,
    count(*) AS samples,
    avg(overhead_pct) AS overhead_pct
FROM resources
GROUP BY ALL
ORDER BY ALL
