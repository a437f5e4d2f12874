#!/usr/bin/env python3
"""Unit tests of report.py: ratios from the last attempt of a group, the A/A gate, CPU per request,
every issue key present, the README splice. Builds tiny run directories in a temp dir."""
import io
import json
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stdout

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import report  # noqa: E402


def run(group, rep, label, rps, attempt=1, cpu=20.0):
    return {"group": group, "rep": rep, "label": label, "rps": rps, "requests": int(rps),
            "attempt": attempt, "child_cpu_us_per_req": cpu, "clk_tck": 100,
            "threads": {"cache-worker": int(rps * cpu / 1e4)}}


def write_run_dir(d, runs, groups, figures):
    for name, rows in (("runs.jsonl", runs), ("groups.jsonl", groups), ("figures.jsonl", figures)):
        with open(os.path.join(d, name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"cpu_count": 2}, f)


PEER_FIGS = [
    {"figure": "noise_control_aa", "kind": "ratio", "group": "peer", "num": "nocall2", "den": "nocall",
     "target": "0.97 .. 1.03"},
    {"figure": "peer_overhead_down", "kind": "ratio", "group": "peer", "num": "down", "den": "nocall",
     "target": ">= 0.97"},
]


class Report(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_uses_the_last_attempt_and_passes_a_group_whose_aa_is_inside(self):
        runs = [run("peer", 1, "nocall", 100, 1), run("peer", 1, "nocall2", 50, 1), run("peer", 1, "down", 10, 1)]
        for rep in (1, 2, 3):
            runs += [run("peer", rep, "nocall", 1000, 2, cpu=20.0), run("peer", rep, "nocall2", 1010, 2),
                     run("peer", rep, "down", 980, 2, cpu=22.0)]
        groups = [{"group": "peer", "attempts": 2, "aa_label": "nocall2/nocall", "aa_medians": [0.5, 1.01],
                   "band": "0.97 1.03", "valid": True}]
        write_run_dir(self.d, runs, groups, PEER_FIGS)
        res = report.build(self.d)
        self.assertAlmostEqual(res["noise_control_aa"], 1.01)
        self.assertAlmostEqual(res["peer_overhead_down"], 0.98)
        f = res["details"]["figures"]["peer_overhead_down"]
        self.assertTrue(f["valid"])
        self.assertTrue(f["met"])
        self.assertEqual(f["aa"]["attempts"], 2)
        self.assertEqual(f["cpu_us_per_req"], {"a": 22.0, "b": 20.0, "ratio": 1.1})
        self.assertIn("cache-worker", f["a"]["cpu"]["threads_us_per_req"])

    def test_group_whose_aa_stays_outside_is_invalid_and_neither_meets_nor_misses(self):
        runs = []
        for rep in (1, 2):
            runs += [run("peer", rep, "nocall", 1000, 3), run("peer", rep, "nocall2", 1100, 3),
                     run("peer", rep, "down", 990, 3)]
        groups = [{"group": "peer", "attempts": 3, "aa_label": "nocall2/nocall", "aa_medians": [1.2, 0.9, 1.1],
                   "band": "0.97 1.03", "valid": False}]
        write_run_dir(self.d, runs, groups, PEER_FIGS)
        res = report.build(self.d)
        for name in ("noise_control_aa", "peer_overhead_down"):
            f = res["details"]["figures"][name]
            self.assertIs(f["valid"], False, name)
            self.assertIsNone(f["met"])
            self.assertIn("outside 0.97 1.03 after 3 attempt(s)", f["invalid_reason"])
        self.assertIs(res["details"]["valid"], False)

    def test_every_issue_key_is_present_in_order_null_when_not_measured(self):
        write_run_dir(self.d, [], [], [{"figure": "peer_queue_req_ns", "kind": "estimate", "unit": "ns",
                                         "value": 412.3, "ci": [400, 420], "min": 390, "max": 500,
                                         "target": "<= 1000"}])
        res = report.build(self.d)
        self.assertEqual([k for k in res if k != "details"], report.KEYS)
        self.assertEqual(res["peer_queue_req_ns"], 412.3)
        self.assertTrue(res["details"]["figures"]["peer_queue_req_ns"]["met"])
        self.assertIsNone(res["saintmode_lookup_0"])
        self.assertIn("not measured", res["details"]["figures"]["saintmode_lookup_0"]["reason"])

    def test_aa_verdict_of_one_attempt(self):
        runs = [run("sm_0", r, lab, v, 1) for r in (1, 2, 3)
                for lab, v in (("ours_plain", 1000), ("ours_plain_aa", 1000 + 10 * r))]
        path = os.path.join(self.d, "runs.jsonl")
        write_run_dir(self.d, runs, [], [])
        buf = io.StringIO()
        with redirect_stdout(buf):
            report.main(["--aa", path, "sm_0", "1", "ours_plain_aa", "ours_plain", "0.97", "1.03"])
        self.assertEqual(buf.getvalue().split(), ["1.0200", "true"])
        buf = io.StringIO()
        with redirect_stdout(buf):
            report.main(["--aa", path, "sm_0", "2", "ours_plain_aa", "ours_plain", "0.97", "1.03"])
        self.assertEqual(buf.getvalue().split(), ["null", "false"])

    def test_micro_benchmark_estimate_without_ci_is_tabled_with_its_spread(self):
        figs = [{"figure": "saintmode_check_ns_100000", "kind": "estimate", "unit": "ns", "value": 28.7,
                 "ci": None, "min": 24.1, "max": 39.8, "target": "<= 200",
                 "extra": {"spread": "p10..p90", "samples": 31}}]
        write_run_dir(self.d, [], [], figs)
        res = report.build(self.d)
        self.assertAlmostEqual(res["saintmode_check_ns_100000"], 28.7)
        header, rows, _ = report.table(res)
        row = next(r for r in rows if r[0] == "saintmode_check_ns_100000")
        self.assertIn("p10..p90 24.1..39.8", row[2])
        self.assertNotIn("CI", row[2])

    def test_readme_table_is_replaced_between_the_markers_only(self):
        write_run_dir(self.d, [], [], [])
        res = report.build(self.d)
        rj = os.path.join(self.d, "results.json")
        with open(rj, "w") as f:
            json.dump(res, f)
        readme = os.path.join(self.d, "README.md")
        with open(readme, "w") as f:
            f.write(f"intro\n{report.BEGIN}\nold table\n{report.END}\noutro\n")
        report.main(["--readme", readme, rj])
        with open(readme) as f:
            text = f.read()
        self.assertTrue(text.startswith("intro\n" + report.BEGIN + "\n| figure |"))
        self.assertTrue(text.endswith(report.END + "\noutro\n"))
        self.assertNotIn("old table", text)


if __name__ == "__main__":
    unittest.main()
