"""The allocation query in DuckDB, for the performance harness (benches/perf.rs).

Usage: duckdb_allocation.py EXPORT_ROOT SQL_FILE RUNS PARAM...

Runs the SQL the local engine runs (DataFusion dialect: `$1`, `$2`, … parameters, `element_at`
returning a list, the quoted `BILLING_PERIOD` partition column, all of which DuckDB reads the
same way) over a view of the export's Parquet files, once to warm up and RUNS times measured.
Each run is timed by DuckDB's own profiler (the query's total time: planning and execution, without the
Python conversion of the result). Prints one JSON object on standard output.
"""

import json
import os
import sys
import tempfile
import time

import duckdb


def peak_rss_bytes():
    """This process's own peak resident size (VmHWM), or None where /proc has none."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main() -> None:
    root, sql_file, runs = sys.argv[1:4]
    params = sys.argv[4:]
    runs = int(runs)
    with open(sql_file, encoding="utf-8") as f:
        sql = f.read()
    con = duckdb.connect()
    files = os.path.join(root, "data", "*", "*.parquet").replace("'", "''")
    con.execute(
        f"CREATE VIEW cur AS SELECT * FROM read_parquet('{files}', hive_partitioning = true)"
    )
    profile = os.path.join(tempfile.mkdtemp(prefix="kiro-duckdb-"), "profile.json")
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute(f"PRAGMA profiling_output = '{profile}'")

    times, walls, rows, total = [], [], 0, None
    for i in range(runs + 1):
        started = time.perf_counter()
        result = con.execute(sql, params).fetchall()
        wall = time.perf_counter() - started
        with open(profile, encoding="utf-8") as f:
            prof = json.load(f)
        # DuckDB 1.x: top-level "latency"; 2.x: "query" -> "total_time".
        latency = prof.get("latency", prof.get("query", {}).get("total_time"))
        if i == 0:
            columns = [d[0] for d in con.description] if con.description else []
            rows = len(result)
            cost = columns.index("all_cost_usd")
            total = sum((r[cost] for r in result if r[cost] is not None), 0)
            continue
        walls.append(wall)
        times.append(latency if latency is not None else wall)

    print(
        json.dumps(
            {
                "version": duckdb.__version__,
                "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
                "seconds": times,
                "wall_seconds": walls,
                "rows": rows,
                "all_cost_usd": str(total),
                "peak_rss_bytes": peak_rss_bytes(),
            }
        )
    )


if __name__ == "__main__":
    main()
