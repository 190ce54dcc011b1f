//! libFuzzer target: one YAML factory file through load and every check.

#![no_main]

use fabrik::spec::source::Syntax;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fabrik_fuzz::load_and_check(Syntax::Yaml, data);
});
