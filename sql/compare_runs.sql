-- compare_runs: every opened run, with what groups it in a release comparison.
-- parameters: none
-- columns: run_id, tag, scenario (from the manifest), seed, profile (smoke | full | null),
--   complete (the recorder finished as planned), path (the run directory; its folder
--   names tag=/scenario=/run= are the keys of the other compare_* queries)
SELECT run_id, CAST(tag AS VARCHAR) AS tag, scenario, seed, profile, complete, path
FROM runs
ORDER BY path
