#!/usr/bin/env python3
"""Unit tests of criterion_read.py against the small criterion tree in fixtures/criterion.

  python3 bench/lib/test_criterion_read.py      (also run by `make bench` before measuring)
"""
import io
import json
import os
import sys
import time
import unittest
from contextlib import redirect_stdout

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import criterion_read  # noqa: E402

FIX = os.path.join(HERE, "fixtures", "criterion")


def figs(ids, **kw):
    return {f["figure"]: f for f in criterion_read.figures(FIX, ids, **kw)}


class CriterionRead(unittest.TestCase):
    def test_top_level_benchmark_gives_median_ci_and_per_iteration_spread(self):
        f = figs(["peer_queue_req_ns"], targets={"peer_queue_req_ns": "<= 1000"})["peer_queue_req_ns"]
        self.assertEqual(f["kind"], "estimate")
        self.assertEqual(f["unit"], "ns")
        self.assertEqual(f["target"], "<= 1000")
        self.assertAlmostEqual(f["value"], 414.2)
        self.assertEqual(f["ci"], [409.1, 418.3])
        # sample.json: times / iters = 400, 430, 410, 410
        self.assertAlmostEqual(f["min"], 400.0)
        self.assertAlmostEqual(f["max"], 430.0)
        self.assertEqual(f["extra"]["samples"], 4)
        self.assertAlmostEqual(f["extra"]["mean"], 420.7)

    def test_benchmark_inside_a_group_is_found_by_its_id_and_reads_new_not_base(self):
        f = figs(["saintmode_check_ns_0"])["saintmode_check_ns_0"]
        self.assertEqual(f["kind"], "estimate")
        self.assertAlmostEqual(f["value"], 30.0)
        self.assertAlmostEqual(f["min"], 29.0)
        self.assertAlmostEqual(f["max"], 36.0)
        self.assertEqual(f["extra"]["sampling_mode"], "Flat")
        self.assertEqual(f["extra"]["source"], os.path.join("saintmode_check", "saintmode_check_ns_0"))

    def test_missing_benchmark_is_null_with_the_given_reason(self):
        f = figs(["saintmode_check_ns_100000"], missing="no bench target")["saintmode_check_ns_100000"]
        self.assertEqual(f["kind"], "null")
        self.assertEqual(f["reason"], "no bench target")
        f = figs(["saintmode_check_ns_100000"])["saintmode_check_ns_100000"]
        self.assertIn("no criterion benchmark with ID saintmode_check_ns_100000", f["reason"])

    def test_estimates_without_a_median_are_null_not_a_crash(self):
        f = figs(["broken_ns"])["broken_ns"]
        self.assertEqual(f["kind"], "null")
        self.assertIn("no median estimate", f["reason"])
        self.assertIsNone(f.get("value"))

    def test_result_older_than_this_run_is_stale(self):
        f = figs(["peer_queue_req_ns"], since=time.time() + 3600)["peer_queue_req_ns"]
        self.assertEqual(f["kind"], "null")
        self.assertIn("stale", f["reason"])

    def test_nonexistent_criterion_dir_gives_nulls(self):
        out = list(criterion_read.figures(os.path.join(FIX, "nope"), ["peer_queue_req_ns"]))
        self.assertEqual(out[0]["kind"], "null")

    def test_command_line_prints_one_json_line_per_id(self):
        buf = io.StringIO()
        with redirect_stdout(buf):
            criterion_read.main([FIX, "--target", "peer_queue_req_ns=<= 1000", "peer_queue_req_ns",
                                 "saintmode_check_ns_100000"])
        lines = [json.loads(line) for line in buf.getvalue().splitlines()]
        self.assertEqual([x["figure"] for x in lines], ["peer_queue_req_ns", "saintmode_check_ns_100000"])
        self.assertEqual(lines[0]["target"], "<= 1000")
        self.assertEqual(lines[1]["kind"], "null")


class BenchFigureLines(unittest.TestCase):
    LOG = [
        "     Running benches/check.rs (target/release/deps/check-0123)",
        "saintmode_check_ns_0                     median      8.0 ns  (p10 7.8, p90 8.2, 31 samples)",
        'bench-figure {"figure": "saintmode_check_ns_0", "unit": "ns", "value": 8.012, "min": 7.8, "max": 8.2, "spread": "p10..p90", "samples": 31}',
        'bench-figure {"figure": "saintmode_check_ns_100000_object_listed", "unit": "ns", "value": 21.7, "min": 20.0, "max": 40.0, "spread": "p10..p90", "samples": 31}',
        "bench-figure {not json",
    ]

    def test_named_figures_are_read_with_their_spread(self):
        got = {f["figure"]: f for f in criterion_read.figures_from_lines(
            self.LOG, ["saintmode_check_ns_0"], targets={"saintmode_check_ns_0": "-"})}
        f = got["saintmode_check_ns_0"]
        self.assertEqual((f["kind"], f["unit"], f["value"], f["min"], f["max"]), ("estimate", "ns", 8.012, 7.8, 8.2))
        self.assertIsNone(f["ci"])
        self.assertEqual(f["extra"], {"spread": "p10..p90", "samples": 31})

    def test_command_line_with_lines_takes_every_positional_argument_as_an_id(self):
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
            f.write("\n".join(self.LOG) + "\n")
        out = io.StringIO()
        with redirect_stdout(out):
            criterion_read.main(["--lines", f.name, "--target", "saintmode_check_ns_0=-",
                                 "saintmode_check_ns_0", "peer_queue_req_ns"])
        os.unlink(f.name)
        got = [json.loads(line)["figure"] for line in out.getvalue().splitlines()]
        self.assertEqual(got, ["saintmode_check_ns_0", "peer_queue_req_ns"])

    def test_a_variant_is_not_taken_for_the_figure_and_missing_ones_say_why(self):
        got = {f["figure"]: f for f in criterion_read.figures_from_lines(
            self.LOG, ["saintmode_check_ns_100000", "peer_queue_req_ns"], missing="cargo bench failed")}
        self.assertEqual(got["saintmode_check_ns_100000"]["kind"], "null")
        self.assertEqual(got["peer_queue_req_ns"]["reason"], "cargo bench failed")


if __name__ == "__main__":
    unittest.main()
