"""Tests of scripts/arch_figures.py's line counting (python3 -m unittest discover -s scripts/tests)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from arch_figures import ENTRY, code_lines, strip_cfg_test  # noqa: E402

SRC = '''//! Module doc.
use std::fmt;

#[cfg(test)]
use std::cell::Cell;

pub fn f() -> u32 {
    // a comment
    let s = "{ not a brace";
    1
}

impl X {
    #[cfg(test)]
    fn only_in_tests(&self) {
        let _ = '}';
    }

    fn kept(&self) {}
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn t() {
        let _ = "}";
    }
}
'''


class StripTest(unittest.TestCase):
    def test_cfg_test_items_go_and_the_rest_stays(self):
        kept = strip_cfg_test(SRC)
        text = "\n".join(kept)
        self.assertNotIn("Cell", text)
        self.assertNotIn("only_in_tests", text)
        self.assertNotIn("mod tests", text)
        self.assertIn("fn kept", text)
        self.assertIn('"{ not a brace"', text)
        nonblank = [ln for ln in kept if ln.strip()]
        self.assertEqual(nonblank[-1], "}")  # impl X's closing brace
        self.assertEqual(code_lines(kept), 8)

    def test_code_lines_skip_blanks_and_comments(self):
        self.assertEqual(code_lines(["//! doc", "", "  // c", "/// d", "fn a() {}", "  x // y"]), 2)

    def test_entry_points_are_definitions_not_pointer_types(self):
        self.assertTrue(ENTRY.search('pub unsafe extern "C" fn vmod_f(ctx: *const vrt_ctx) {'))
        self.assertFalse(ENTRY.search('type F = unsafe extern "C" fn(*mut vsb) -> c_int;'))


if __name__ == "__main__":
    unittest.main()
